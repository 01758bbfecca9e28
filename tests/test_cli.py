"""`pyscall stream` end to end on a tiny synthetic stream: output files, budget, kill-and-resume."""
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pyscall.app import checkpoint
from pyscall.app.cli import main

CRASH_IN_SAVE = Path(__file__).with_name("crash_in_save.py")
EXIT_AFTER = str(Path(__file__).with_name("cli_exit_after.py"))

TINY = ["stream", "--data", "synthetic:150,100,3000", "--segmentation", "count", "--n-segments", "3",
        "--model", "mf", "--d-max", "8", "--mean-size", "3", "--batch-size", "128", "--max-batches", "10",
        "--eval-every", "5", "--seed", "7", "--no-progress"]


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def _numbers(out):
    return [{k: v for k, v in r.items() if not k.endswith("_s")}  # times differ
            for r in json.loads((out / "results.json").read_text())["segments"]]


def _run(args, env_extra=None, exit_after=None, crash_in_save=None):
    """`pyscall` in a new process; `exit_after=k`: the process ends right after segment k's checkpoint;
    `crash_in_save=n`: the n-th checkpoint save dies half-way (tests/crash_in_save.py)."""
    env = {**os.environ, **(env_extra or {})}
    runner = [] if crash_in_save is None else [str(CRASH_IN_SAVE), str(crash_in_save)]
    command = ["-m", "pyscall.app.cli"] if exit_after is None else [EXIT_AFTER, str(exit_after)]
    # cwd: not the checkout, whose pyscall/ has no built _C; the installed package must run
    return subprocess.run([sys.executable, *runner, *command, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tempfile.gettempdir())


def test_compare_writes_every_output_and_holds_the_budget(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--compare", "uniform,freq-rule,full", "--out", str(out)]) == 0
    for name in ("results.csv", "results.json", "quality.png", "sizes.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out)
    assert [(r["policy"], int(r["segment"])) for r in rows] == \
        [(p, s) for p in ("uniform", "freq-rule", "full") for s in range(3)]
    for r in rows:
        assert int(r["eval_users"]) > 0
        for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "wall_s"):
            assert float(r[key]) >= 0
        if r["policy"] != "full":
            assert int(r["bytes"]) <= int(r["budget_bytes"])
            assert int(r["params"]) == int(r["budget_params"])
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["summary"]) == {"uniform", "freq-rule", "full"}
    assert payload["summary"]["uniform"]["segments_scored"] == 2
    printed = capsys.readouterr().out
    assert "R@20" in printed and "mean over segments" in printed


def test_budget_mb_and_policy_options(tmp_path):
    out = tmp_path / "mb"
    at = TINY.index("--mean-size")
    args = TINY[:at] + TINY[at + 2:]
    assert main(args + ["--budget-mb", "0.003", "--policy", "fixed-alpha", "--alpha", "0.3", "--out", str(out)]) == 0
    for r in _rows(out):
        assert int(r["budget_params"]) == 750 and int(r["params"]) <= 750
        assert int(r["bytes"]) <= int(r["budget_bytes"])


def test_killed_after_a_segment_resumes_to_the_same_numbers(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(TINY + ["--compare", "uniform,random", "--out", str(straight)]) == 0
    args = TINY + ["--compare", "uniform,random", "--out", str(broken)]
    killed = _run(args, exit_after=1)
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert checkpoint.load(broken / "checkpoints" / "uniform.pt")["next_segment"] == 2
    assert not (broken / "results.csv").exists()
    resumed = _run(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "(from checkpoint)" in resumed.stdout
    assert f"--resume: uniform resumed from {broken / 'checkpoints' / 'uniform.pt'}: segments 0-1 of 3 done, " \
        "continuing at segment 2" in resumed.stdout
    assert "--resume: no checkpoint for random" in resumed.stdout  # killed before random's first segment
    assert _numbers(broken) == _numbers(straight)


def test_crash_in_the_middle_of_a_save_resumes_from_the_previous_checkpoint(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(TINY + ["--policy", "freq-rule", "--out", str(straight)]) == 0
    args = TINY + ["--policy", "freq-rule", "--out", str(broken)]
    crashed = _run(args, crash_in_save=2)  # dies half-way through segment 1's save
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    assert checkpoint.load(broken / "checkpoints" / "freq-rule.pt")["next_segment"] == 1
    resumed = _run(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _numbers(broken) == _numbers(straight)


def test_paper_preset_sets_the_paper_setting_and_explicit_options_win():
    from pyscall.app.cli import DEFAULT_COMPARE, PRESETS, parse_args
    args = parse_args(["stream", "--preset", "paper", "--max-batches", "7", "--policy", "uniform"])
    for key, value in PRESETS["paper"].items():
        if key != "max_batches":
            assert getattr(args, key) == value, key
    assert args.max_batches == 7 and args.policy == "uniform"  # --policy: one policy, over the preset's
    assert parse_args(["stream", "--preset", "paper", "--compare", "uniform,full"]).compare == "uniform,full"
    plain = parse_args(["stream"])
    assert (plain.policy, plain.compare, plain.protocol, plain.dedup, plain.d_max) == \
        (None, DEFAULT_COMPARE, "split", "none", 256)
