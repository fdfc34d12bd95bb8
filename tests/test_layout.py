"""The dependency direction of ../shared/STYLE.md, checked with ast: imports point down only, gradio is
imported by facegen/ui.py alone, diffusers only where its U-Net and schedulers are wrapped."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LEVEL = {
    "config": 0,
    "runtime": 1,
    "conditioning": 1.5,
    "nets.unet": 2,
    "nets.dcgan": 2,
    "nets.vae": 2.5,
    "diffusion.ddpm": 2,
    "diffusion.sde": 2,
    "diffusion.edm": 2,
    "plots": 2,
    "data": 3,
    "checkpoints": 3,
    "diffusion.samplers": 3,
    "nets": 3,
    "sampling": 4,
    "pipeline": 5,
    "objectives": 4,
    "training": 5,
    "classifier": 5,
    "metrics": 6,
    "studio": 6,
    "export": 6,
    "evaluate": 7,
    "generate": 7,
    "ui": 7,
}
DIFFUSERS_ALLOWED = {"nets.unet", "diffusion.ddpm", "diffusion.samplers"}


def modules() -> dict[str, Path]:
    root = REPO / "facegen"
    out = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts:
            out[".".join(parts)] = path
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_every_module_has_a_level() -> None:
    assert set(modules()) - {"diffusion"} <= set(LEVEL), set(modules()) - set(LEVEL)


def test_imports_point_down() -> None:
    for name, path in modules().items():
        if name not in LEVEL:
            continue
        for imported in imports(path):
            if imported.startswith("facegen."):
                target = imported.removeprefix("facegen.")
                while target and target not in LEVEL:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    assert LEVEL[target] < LEVEL[name], (
                        f"{name} (level {LEVEL[name]}) imports {target} ({LEVEL[target]})"
                    )


def test_gradio_and_diffusers_stay_in_their_modules() -> None:
    for name, path in modules().items():
        names = imports(path)
        if any(n == "gradio" or n.startswith("gradio.") for n in names):
            assert name == "ui", f"{name} imports gradio"
        if any(n == "diffusers" or n.startswith("diffusers.") for n in names):
            assert name in DIFFUSERS_ALLOWED, f"{name} imports diffusers"
    app = imports(REPO / "app.py")
    assert not any(n.startswith("gradio") for n in app)
