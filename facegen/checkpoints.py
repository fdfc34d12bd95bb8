"""Checkpoints: `config.json` + `model.safetensors`, written atomically and verified on load.

* A checkpoint folder alone rebuilds its model: `config.json` holds the full run config, the
  safetensors header holds the training card (step, wall time, hardware) and a SHA-256 over every
  tensor and every other header field, so a bit flip anywhere in the file (weights or card) or a
  truncated file is caught before any weight is used.
* Each file is written to a temporary name, fsynced, then renamed over the old one: a run killed at any
  moment leaves the previous file or the new one, never half of either.
* Weights load through safetensors only; the resumable training state (`state.pt`, optimizer moments
  and all) is read with `torch.load(weights_only=True)`, which cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from facegen.config import FORMAT_VERSION, Family, RunConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file and what is wrong."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) then rename tmp over path; on any failure the old file is left untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def content_digest(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str]) -> str:
    """SHA-256 over the header fields (the card, the format) and the names, dtypes, shapes and bytes of
    every tensor, each in name order: nothing in the file can change without changing the digest."""
    h = hashlib.sha256()
    for key in sorted(header):
        h.update(f"{key}={header[key]}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_config(folder: Path, run: RunConfig) -> None:
    body = {"format_version": FORMAT_VERSION, **run.model_dump(mode="json")}
    atomic_write(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(body, indent=2) + "\n"))


def save_weights(
    folder: Path, tensors: Mapping[str, torch.Tensor], card: Mapping[str, Any], dtype: torch.dtype | None = None
) -> None:
    """Write model.safetensors with the card and the digest in its header (optionally cast, e.g. fp16)."""
    out = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in tensors.items()
    }
    header = {"card": json.dumps(dict(card)), "format_version": str(FORMAT_VERSION)}
    meta = {**header, "sha256": content_digest(out, header)}
    atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(out, str(p), metadata=meta))


def read_config(folder: Path) -> RunConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint is a folder with {CONFIG_NAME} + {WEIGHTS_NAME}")
    try:
        body = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(body, dict) or body.pop("format_version", None) != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a facegen format-{FORMAT_VERSION} config")
    try:
        return RunConfig.model_validate(body)
    except ValidationError as err:
        raise CheckpointError(f"{path} does not describe a valid model: {err}") from None


def read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the card, after checking the file parses and its digest matches."""
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    if "sha256" not in meta:
        raise CheckpointError(f"{path} has no integrity digest; it was not written by facegen")
    digest = meta.pop("sha256")
    if content_digest(tensors, meta) != digest:
        raise CheckpointError(f"{path} fails its SHA-256 check: the weights or their card were modified or corrupted")
    try:
        card = json.loads(meta.get("card", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has a malformed card in its header") from None
    return tensors, card


def load_checkpoint(
    folder: str | Path, family: Family | None = None
) -> tuple[RunConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, tensors, card) of a checkpoint folder; `family` demands a given model family."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    run = read_config(folder)
    if family is not None and run.model.family != family:
        raise CheckpointError(f"{folder} holds a {run.model.family} model, not a {family} model")
    tensors, card = read_weights(folder)
    return run, tensors, card


def load_into(net: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Strict load that turns shape/key mismatches into a CheckpointError naming the first problems."""
    own = net.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{where} does not fit the network its config describes ({detail})")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def save_state(folder: Path, state: Mapping[str, Any]) -> None:
    atomic_write(folder / STATE_NAME, lambda p: torch.save(dict(state), p))


def load_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}; cannot resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path} cannot be loaded safely ({type(err).__name__}: {err})") from None
