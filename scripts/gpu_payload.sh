#!/usr/bin/env bash
# Pack into .gpu/ (kept out of git by .git/info/exclude) what scripts/train_gpu.sh needs on the device
# machine beside the code: the faces as one tar, the group classifier, and wheels of the packages that
# machine lacks (diffusers, pydantic and theirs; PyTorch, numpy, Pillow, OpenCV and the rest are there).
# The device tool carries at most 64 MiB with the working tree: the faces' JPEGs are 58 MB as they are (71 MB
# as a tar), so they travel re-encoded at JPEG quality 90 (~44 MB, names and labels unchanged), and
# checkpoints/ and docs/ must not travel (README "Training on one GPU"). Whatever trains on them is
# evaluated on the original faces before it ships.
source "$(dirname "$0")/common.sh"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
rm -rf .gpu.tmp && mkdir -p .gpu.tmp/wheels
OMP_NUM_THREADS=1 "$PY" - "$DATA" .gpu.tmp/faces.zip <<'PY'
import io, sys, zipfile
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
    for f in sorted(src.glob("*.jpg")):
        buf = io.BytesIO()
        Image.open(f).convert("RGB").save(buf, "JPEG", quality=90)
        z.writestr(f"{src.name}/{f.name}", buf.getvalue())
PY
cp -r checkpoints/classifier .gpu.tmp/classifier
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu.tmp/wheels diffusers==0.42.1 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.7.0 \
  typing-inspection==0.4.4 importlib-metadata==8.7.0
rm -rf .gpu && mv .gpu.tmp .gpu
du -sh .gpu .gpu/*
