"""The GPU device check must keep running: its --cpu-dry-run (tiny sizes, Triton interpreted) passes here."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "device_check.py"


def test_device_check_dry_run_passes():
    env = {k: v for k, v in os.environ.items() if k != "PYSCALL_BACKEND"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--skip-timing"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 failure(s)" in done.stdout
