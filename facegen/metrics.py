"""Measures of generated faces: detection rate, diversity, demographic fidelity, Fréchet distances.

Images are (N, 3, H, W) uint8 throughout. Nothing here downloads: Inception weights come from a local
file (`inception(path)`), and without them the Fréchet distance is computed in the group classifier's
feature space (labelled `fd_classifier`, not FID).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegen.classifier import GroupClassifier
from facegen.data import to_model_range


def face_detection_rate(images: torch.Tensor, upscale: int = 128) -> float:
    """Share of images in which OpenCV's frontal-face Haar cascade finds at least one face."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's Haar cascade file is missing from this opencv install")
    big = F.interpolate(images.float(), size=(upscale, upscale), mode="bicubic", align_corners=False)
    grey = (0.299 * big[:, 0] + 0.587 * big[:, 1] + 0.114 * big[:, 2]).clamp(0, 255).to(torch.uint8).numpy()
    hits = [
        len(cascade.detectMultiScale(g, scaleFactor=1.1, minNeighbors=3, minSize=(upscale // 3,) * 2)) > 0 for g in grey
    ]
    return float(np.mean(hits))


def mean_pairwise_distance(features: torch.Tensor, max_items: int = 1000) -> float:
    """Mean L2 distance between distinct pairs of feature vectors (diversity; falls under mode collapse).
    Above max_items an evenly spaced subset is used, so features stacked mix by mix all stay represented."""
    keep = torch.linspace(0, features.shape[0] - 1, max_items).round().long() if features.shape[0] > max_items else None
    f = (features if keep is None else features[keep]).double()
    if f.shape[0] < 2:
        return float("nan")
    d = torch.cdist(f, f)
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two (N, D) feature sets."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^1/2) = sum of sqrt of the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric PSD)
    evals, evecs = torch.linalg.eigh(s_a)
    root_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    middle = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * middle)


def group_histogram(pred: torch.Tensor, k: int) -> np.ndarray:
    """Counts per group, zeros included (np.bincount with minlength=K)."""
    return np.bincount(pred.numpy(), minlength=k)


def mix_fidelity(pred: torch.Tensor, requested: Sequence[float], groups: Sequence[str]) -> dict[str, object]:
    """Achieved vs requested group distribution for one mix: L1, KL(requested || achieved), empty groups."""
    k = len(groups)
    counts = group_histogram(pred, k)
    achieved = counts / max(1, counts.sum())
    req = np.asarray(requested, dtype=float)
    smoothed = (counts + 0.5) / (counts.sum() + 0.5 * k)  # keeps KL finite when a group got no face
    kl = float(sum(r * math.log(r / s) for r, s in zip(req, smoothed, strict=True) if r > 0))
    return {
        "requested": dict(zip(groups, req.round(4).tolist(), strict=True)),
        "achieved": dict(zip(groups, achieved.round(4).tolist(), strict=True)),
        "counts": dict(zip(groups, counts.tolist(), strict=True)),
        "l1": float(np.abs(achieved - req).sum()),
        "kl": kl,
        "requested_groups_with_zero_faces": [
            g for g, r, c in zip(groups, req, counts, strict=True) if r > 0 and c == 0
        ],
    }


class ClassifierFeatures(nn.Module):
    """uint8 images -> the group classifier's pooled features: the small feature net for Fréchet distances."""

    def __init__(self, classifier: GroupClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(to_model_range(x) if x.dtype == torch.uint8 else x)


def inception(weights: Path, features: str = "2048") -> nn.Module:
    """torch-fidelity's Inception-v3 (FID's network) from a local weights file: nothing is downloaded."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    if not weights.is_file():
        raise FileNotFoundError(f"--inception-weights {weights} is not a file")
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=[features], feature_extractor_weights_path=str(weights)
    )


def fid_kid(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module) -> dict[str, float]:
    """FID and KID (mean, std) through torchmetrics with the given feature network (uint8 inputs)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=feature, input_img_size=tuple(real.shape[1:]))
    subset = min(100, real.shape[0], fake.shape[0])
    kid = KernelInceptionDistance(feature=feature, subset_size=subset, subsets=20)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def inception_score(fake: torch.Tensor, weights: Path) -> float:
    from torchmetrics.image.inception import InceptionScore

    metric = InceptionScore(feature=inception(weights, "logits_unbiased"), splits=1)
    metric.update(fake)
    return float(metric.compute()[0])


def two_sample_accuracy(
    fake: torch.Tensor,
    fake_groups: torch.Tensor,
    real: torch.Tensor,
    real_groups: torch.Tensor,
    folds: int = 5,
    l2: float = 1e-2,
    seed: int = 0,
) -> float:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): the cross-validated accuracy of an L2-regularised
    logistic regression telling (N, D) generated features from real ones; 0.5 means indistinguishable.

    Each group contributes as many generated as real faces (the smaller count of the two), so the test
    compares faces of the same groups and cannot be passed or failed on the group mix alone.
    """
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for group in torch.unique(torch.cat([fake_groups, real_groups])):
        f, r = fake[fake_groups == group], real[real_groups == group]
        m = min(len(f), len(r))
        if m == 0:
            continue
        xs += [f[torch.randperm(len(f), generator=g)[:m]], r[torch.randperm(len(r), generator=g)[:m]]]
        ys += [torch.ones(m), torch.zeros(m)]
    if not xs:
        raise ValueError("no group has both generated and real faces: nothing to compare")
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    fold_of = torch.arange(len(y)) % folds
    correct = 0
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        w = _fit_logistic((x[train] - mean) / std, y[train], l2)
        logits = torch.cat([(x[test] - mean) / std, torch.ones(int(test.sum()), 1, dtype=x.dtype)], 1) @ w
        correct += int(((logits > 0).double() == y[test]).sum())
    return correct / len(y)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Weights (D + 1,) with the bias last, minimising the mean log-loss + l2/2 ||w||^2 (bias unpenalised)."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.zeros(xb.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xb @ w, y) + 0.5 * l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()
