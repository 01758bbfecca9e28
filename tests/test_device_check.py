"""The GPU scripts must keep running: their --cpu-dry-run (tiny sizes, Triton interpreted) passes here."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
BENCH = Path(__file__).resolve().parents[1] / "bench"


def dry_run(script, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYSCALL_BACKEND"}
    done = subprocess.run([sys.executable, str(BENCH / script), "--cpu-dry-run", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_device_check_dry_run_passes():
    assert "0 failure(s)" in dry_run("device_check.py", "--skip-timing")


def test_gpu_tile_sweep_dry_run_passes():
    out = dry_run("gpu_tile_sweep.py")
    assert "0 mismatch(es)" in out
    assert out.count(" ok\n") == 2 * (5 + 5 + 3 * 6 + 5)  # every tile of every op, both width cases
