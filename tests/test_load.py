"""The load script end to end on tiny checkpoints: concurrent sessions, no failures, no cross-talk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_load_script_holds_with_no_cross_talk(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    for family, folder in tiny_checkpoints.items():
        shutil.copytree(folder, tmp_path / family)
    res = subprocess.run(
        [sys.executable, "bench/load_test.py", "--checkpoints", str(tmp_path), "--requests", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+\d+$", res.stdout, re.M)
    assert [int(r[0]) for r in rows] == [1, 4, 16], res.stdout
    assert all(int(r[2]) == 0 and int(r[3]) == 0 for r in rows), res.stdout  # no failure, no cross-talk
    assert "20 sequential requests" in res.stdout and ", 0 failed" in res.stdout
    assert "next request ok" in res.stdout and res.stdout.rstrip().endswith("PASS")
