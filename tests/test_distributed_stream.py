"""`pyscall stream --nproc 2` (tables sharded over 2 gloo processes) gives the 1-process run's per-segment
metrics with the same seed, with MF and (with the slow tests) LightGCN."""
import json
import subprocess
import sys
import tempfile

import pytest

TINY = ["stream", "--data", "synthetic:150,100,3000", "--segmentation", "count", "--n-segments", "3",
        "--d-max", "8", "--mean-size", "3", "--batch-size", "128", "--max-batches", "10",
        "--eval-every", "5", "--seed", "7", "--no-progress", "--threads", "1", "--policy", "freq-rule"]


def _segments(out):
    rows = json.loads((out / "results.json").read_text())["segments"]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # times differ


def _run(args):
    # cwd: not the checkout, whose pyscall/ has no built _C; the installed package must run
    done = subprocess.run([sys.executable, "-m", "pyscall.app.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("model", ["mf", pytest.param("lightgcn", marks=pytest.mark.slow)])
def test_stream_on_2_processes_gives_the_1_process_metrics(tmp_path, model):
    _run(TINY + ["--model", model, "--out", str(tmp_path / "one")])
    _run(TINY + ["--model", model, "--nproc", "2", "--out", str(tmp_path / "two")])
    one, two = _segments(tmp_path / "one"), _segments(tmp_path / "two")
    assert len(one) == 3 and one == two
