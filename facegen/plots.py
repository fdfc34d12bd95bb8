"""Pictures people would rather look at than read: image grids and loss curves (matplotlib, no GUI)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding to nearest."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(a) for a in to_uint8(x)]


def grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str] | None = None, pad: int = 2) -> Image.Image:
    """Tile rows of equal-sized images, with an optional text label to the left of each row."""
    w, h = rows[0][0].size
    label_w = 70 if labels else 0
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (label_w + cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        if labels:
            draw.text((4, y + h // 2 - 5), labels[r][:11], fill="black")
        for c, im in enumerate(row):
            out.paste(im, (label_w + pad + c * (w + pad), y))
    return out


def loss_curves(log_path: Path, out_path: Path) -> None:
    """Plot train and test loss (and GAN D/G losses) from a training jsonl log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key in ("train_loss", "test_loss", "d_loss", "g_loss"):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=key.replace("_", " "), marker="o" if key == "test_loss" else None, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_path)
