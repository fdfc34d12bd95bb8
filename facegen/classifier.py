"""A small CNN that tells the dataset's groups apart: the judge of demographic fidelity and the feature
space of the diversity metric. Trained on the same folder as the generators, with a held-out part.

    python -m facegen.classifier --data ../shared/data/utkface64 --out checkpoints/classifier
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from facegen.checkpoints import CheckpointError, atomic_write, load_into, read_weights, save_weights
from facegen.config import DataConfig
from facegen.data import augment, batch_indices, load_faces, split, to_model_range
from facegen.runtime import autocast, derive_seed, generator, set_cpu_threads

log = logging.getLogger(__name__)
KIND = "group-classifier"


class ClassifierConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str = KIND
    groups: tuple[str, ...]
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)


class GroupClassifier(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, K) logits; `features` gives the (B, C) pooled embedding."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.groups = cfg.groups
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(c_in, len(cfg.groups))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> tuple[GroupClassifier, ClassifierConfig]:
    folder = Path(folder)
    try:
        body = json.loads((folder / "config.json").read_text())
        cfg = ClassifierConfig.model_validate(body)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder} is not a group-classifier checkpoint: {err}") from None
    tensors, _ = read_weights(folder)
    net = GroupClassifier(cfg)
    load_into(net, tensors, folder)
    return net.to(device).eval().requires_grad_(False), cfg


def is_classifier(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


@torch.inference_mode()
def predict(net: GroupClassifier, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) predicted groups and (N, C) features for (N, 3, H, W) images in [-1, 1] or uint8."""
    preds, feats = [], []
    device = next(net.parameters()).device
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch]
        x = to_model_range(x) if x.dtype == torch.uint8 else x.float()
        f = net.features(x.to(device))
        preds.append(net.head(f).argmax(1).cpu())
        feats.append(f.float().cpu())
    return torch.cat(preds), torch.cat(feats)


def per_group_accuracy(pred: torch.Tensor, labels: torch.Tensor, k: int) -> list[float]:
    return [float((pred[labels == g] == g).float().mean()) if (labels == g).any() else float("nan") for g in range(k)]


def train_classifier(
    data: DataConfig, out: Path, steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0, precision: str = "auto"
) -> dict[str, object]:
    set_cpu_threads()
    faces = load_faces(data, 64)
    cfg = ClassifierConfig(groups=faces.groups)
    # the training runs' file-name hash split: generator test faces (2%) sit inside this validation part
    train_set, val_set = split(faces, cfg.val_fraction)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "classifier-init"))
        net = GroupClassifier(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="classifier", unit="step"):
        gen = generator(seed, "classifier", step)
        idx = batch_indices(train_set.labels, batch, step, seed, balanced=True)
        x = augment(to_model_range(train_set.images[idx]), gen, hflip=True, jitter=True)
        with autocast(device, precision):  # type: ignore[arg-type]
            loss = F.cross_entropy(net(x).float(), train_set.labels[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    pred, _ = predict(net, val_set.images)
    acc = per_group_accuracy(pred, val_set.labels, len(cfg.groups))
    report = {
        "steps": steps,
        "batch": batch,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "train_images": len(train_set),
        "val_images": len(val_set),
        "val_accuracy": float((pred == val_set.labels).float().mean()),
        "val_accuracy_per_group": dict(zip(cfg.groups, acc, strict=True)),
        "val_counts": dict(
            zip(cfg.groups, np.bincount(val_set.labels.numpy(), minlength=len(cfg.groups)).tolist(), strict=True)
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda p: p.write_text(cfg.model_dump_json(indent=2) + "\n"))
    save_weights(out, net.state_dict(), report)
    atomic_write(out / "README.md", lambda p: p.write_text(model_card(cfg, report)))
    log.info("classifier: %s", json.dumps(report))
    return report


def model_card(cfg: ClassifierConfig, report: dict[str, object]) -> str:
    per_group = report["val_accuracy_per_group"]
    counts = report["val_counts"]
    rows = "\n".join(f"| {g} | {per_group[g]:.3f} | {counts[g]} |" for g in cfg.groups)  # type: ignore[index]
    widths = "-".join(map(str, cfg.channels))
    return (
        f"# facegen group classifier\n\nA {widths} channel, {2 * len(cfg.channels)}-conv CNN that tells {', '.join(cfg.groups)} "
        f"apart at {cfg.image_size} px: the judge of demographic fidelity and the feature space of diversity in "
        f"`python -m facegen.evaluate`. Trained {report['steps']} steps of batch {report['batch']} "
        f"(class-balanced, flips and jitter) on {report['train_images']} faces in {report['wall_time_s']} s on "
        f"the CPU; {report['val_images']} faces held out by file-name hash.\n\n"
        f"Validation accuracy **{report['val_accuracy']:.3f}**.\n\n| group | accuracy | faces |\n|---|---|---|\n{rows}\n\n"
        "Trained on UTKFace labels, which are algorithm-estimated and noisy; for research use only (non-commercial), "
        "as the data. It measures agreement with UTKFace's labelling, not anyone's identity.\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--labels", default="utkface", choices=["utkface", "folders", "celeba"])
    p.add_argument("--out", type=Path, default=Path("checkpoints/classifier"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default="runs/cache")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = train_classifier(
        DataConfig(path=a.data, labels=a.labels, cache_dir=a.cache_dir), a.out, a.steps, a.batch_size
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
