"""What a new user meets first: CSV columns with a detected format, one-line errors with non-zero exit codes,
the byte budget held exactly, the resume notice, progress bars only on a terminal, the help and the summary."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from pyscall.app.cli import _parser, main
from pyscall.app.data import DataFormatError
from pyscall.app.report import paired_differences, quality_title, summarize
from pyscall.app.train import Budget, BudgetError

TINY = ["stream", "--data", "synthetic:150,100,3000", "--segmentation", "count", "--n-segments", "3",
        "--model", "mf", "--d-max", "8", "--batch-size", "128", "--max-batches", "10", "--eval-every", "5",
        "--seed", "7", "--policy", "uniform"]
BYTES_PER_PARAM = 12  # a float32 weight and Adam's two float32 moments
METADATA_PER_ROW = 16


def _run(args, **env):
    # cwd: not the checkout, whose pyscall/ has no built _C; the installed package must run
    return subprocess.run([sys.executable, "-m", "pyscall.app.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())


def _results(out):
    return json.loads((out / "results.json").read_text())


def _csv_log(path, sep=","):
    """A log with the columns in an order no loader guesses, and a column the run does not use."""
    rng = np.random.default_rng(0)
    lines = [sep.join(["ts", "who", "basket", "what"])]
    for k in range(3000):
        lines.append(sep.join([str(1_000_000 + 60 * k), f"u{rng.integers(150)}", "x", f"i{rng.integers(100)}"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyscall stream: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name,sep", [("log.csv", ","), ("log.tsv", "\t")])
def test_csv_format_detected_from_the_path_takes_the_column_options(tmp_path, name, sep):
    data = _csv_log(tmp_path / name, sep)
    out = tmp_path / "run"
    args = TINY[:1] + ["--data", str(data), "--user-col", "who", "--item-col", "what", "--time-col", "ts"] + \
        TINY[3:] + ["--mean-size", "3", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    results = _results(out)
    assert results["source"] == str(data) and results["n_users"] <= 150 and results["n_items"] <= 100
    assert len(results["segments"]) == 3


def test_csv_without_its_columns_names_the_missing_options_and_the_header(tmp_path, capsys):
    data = _csv_log(tmp_path / "log.csv")
    code = main(["stream", "--data", str(data), "--user-col", "who", "--out", str(tmp_path / "o")])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"--data {data} is read as csv: name its columns with --item-col, --time-col" in line
    assert "'ts,who,basket,what'" in line


def test_column_options_on_a_file_that_is_not_csv_are_refused(tmp_path, capsys):
    data = tmp_path / "ratings.dat"
    data.write_text("1::2::5::100\n")
    assert main(["stream", "--data", str(data), "--user-col", "u", "--out", str(tmp_path / "o")]) == 2
    assert "--user-col: for csv files only, and --data" in _one_error_line(capsys.readouterr().err)


def test_errors_print_one_line_and_exit_non_zero(tmp_path):
    missing = _run(["stream", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert missing.returncode == 2
    assert f"--data {tmp_path / 'nope.csv'}: no such file" in _one_error_line(missing.stderr)

    bad = tmp_path / "log.csv"
    bad.write_text("ts,who,what\n100,u1,i1\nyesterday,u2,i2\n")
    malformed = _run(["stream", "--data", str(bad), "--user-col", "who", "--item-col", "what", "--time-col", "ts",
                      "--out", str(tmp_path / "o")])
    assert malformed.returncode == 1
    line = _one_error_line(malformed.stderr)
    assert f"{bad}:3: expected a unix time in seconds in column 'ts', got 'yesterday,u2,i2'" in line

    traced = _run(["stream", "--data", str(bad), "--user-col", "who", "--item-col", "what", "--time-col", "ts",
                   "--out", str(tmp_path / "o")], PYSCALL_DEBUG="1")
    assert traced.returncode == 1 and "Traceback" in traced.stderr and "DataFormatError" in traced.stderr


@pytest.mark.parametrize("budget,expected", [
    # segment 0 holds 56 users + 42 items: 98 rows at d_min 1 at least, 98 x 16 = 1568 bytes of metadata
    (["--budget-mb", "0.0001"], "segment 0: policy 'uniform' asks for 98 parameters, over the budget of 25 "
                                "(56 users + 42 items at d_min=1)"),
    (["--memory-mb", "0.001"], "a memory budget of 0.001 MB (1000 bytes) is less than the metadata of 56 users "
                               "+ 42 items alone (16 bytes a row: 1568 bytes)"),
    (["--memory-mb", "0.002"], "asks for 98 parameters, over the budget of 36, what 2000 bytes hold"),
])
def test_a_budget_too_small_says_the_budget_and_what_was_asked(tmp_path, capsys, budget, expected):
    assert main(TINY + budget + ["--no-progress", "--out", str(tmp_path / "o")]) == 1
    assert expected in _one_error_line(capsys.readouterr().err)


def test_debug_shows_the_exception_itself(tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("ts,who,what\nyesterday,u2,i2\n")
    with pytest.raises(DataFormatError, match="log.csv:2"):
        main(["stream", "--data", str(bad), "--user-col", "who", "--item-col", "what", "--time-col", "ts",
              "--out", str(tmp_path / "o"), "--debug"])


def test_bad_options_exit_2_with_one_line(tmp_path, capsys):
    assert main(TINY[:-2] + ["--compare", "uniform,bogus", "--out", str(tmp_path)]) == 2
    assert "unknown policy 'bogus'" in _one_error_line(capsys.readouterr().err)
    assert main(TINY + ["--d-max", "0", "--out", str(tmp_path)]) == 2
    assert "d_max >= 1" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_:  # argparse's own: usage and one error line
        main(TINY + ["--budget-mb", "1", "--memory-mb", "1", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("megabytes", [0.0071, 0.01, 0.0123])  # the last segment needs 6440
def test_memory_mb_is_held_exactly(tmp_path, capsys, megabytes):
    out = tmp_path / "mem"
    assert main(TINY[:-2] + ["--compare", "uniform,freq-rule,fixed-alpha", "--memory-mb", str(megabytes),
                             "--no-progress", "--out", str(out)]) == 0
    budget = round(megabytes * 1_000_000)
    for r in _results(out)["segments"]:
        rows = r["n_users"] + r["n_items"]
        assert r["budget_bytes"] == budget
        assert r["budget_params"] == (budget - METADATA_PER_ROW * rows) // BYTES_PER_PARAM
        assert r["bytes"] == r["params"] * BYTES_PER_PARAM + METADATA_PER_ROW * rows  # what the tables hold
        assert r["bytes"] <= budget
        if r["budget_params"] < 8 * rows:  # not capped by d_max 8: every budgeted policy spends it all
            assert r["params"] == r["budget_params"]
            assert budget - r["bytes"] < BYTES_PER_PARAM  # less than one parameter's bytes left over
    printed = capsys.readouterr().out
    assert f"budget {megabytes:g} MB of memory ({budget} bytes" in printed
    assert "max_params" in printed and "max_bytes" in printed


def test_memory_budget_arithmetic():
    budget = Budget(memory_mb=0.01)  # 10,000 bytes
    assert budget.memory_bytes == 10_000 and budget.is_set
    assert budget.params(50, 30, bytes_per_param=12) == (10_000 - 80 * 16) // 12
    with pytest.raises(ValueError, match="bytes_per_param"):
        budget.params(50, 30)
    with pytest.raises(BudgetError, match=r"metadata of 400 users \+ 300 items alone"):
        budget.params(400, 300, bytes_per_param=12)
    with pytest.raises(ValueError, match="one unit"):
        Budget(memory_mb=1, megabytes=1)
    assert not Budget().is_set


def test_budget_mb_counts_parameters_and_the_summary_states_the_bytes_too(tmp_path, capsys):
    out = tmp_path / "mb"
    assert main(TINY + ["--budget-mb", "0.003", "--no-progress", "--out", str(out)]) == 0
    for r in _results(out)["segments"]:
        assert r["params"] == 750  # 0.003 MB of float32 parameters
        assert r["bytes"] == 750 * BYTES_PER_PARAM + METADATA_PER_ROW * (r["n_users"] + r["n_items"]) > 3000
    printed = capsys.readouterr().out
    assert "budget 0.003 MB of float32 parameters (750 parameters)" in printed
    lines = printed.splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["policy", "R@20"])
    columns, values = lines[header].split(), lines[header + 1].split()
    assert values[0] == "uniform" and values[columns.index("max_params")] == "750"
    assert values[columns.index("max_bytes")] == str(_results(out)["summary"]["uniform"]["max_bytes"])


def test_resume_says_when_there_is_no_checkpoint_and_what_it_resumed(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TINY + ["--mean-size", "3", "--no-progress", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"--resume: no checkpoint for uniform at {out / 'checkpoints' / 'uniform.pt'}; uniform starts at " \
        "segment 0" in printed
    assert main(TINY + ["--mean-size", "3", "--no-progress", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "--resume: uniform resumed from" in printed and "segments 0-2 of 3 done, nothing left to run" in printed
    assert printed.count("(from checkpoint)") == 3


def test_progress_bars_only_on_a_terminal_unless_asked(tmp_path):
    args = TINY + ["--mean-size", "3", "--out", str(tmp_path / "p")]
    quiet = _run(args)  # stderr is a pipe here
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "segment/s" not in quiet.stderr and "batch/s" not in quiet.stderr and "%|" not in quiet.stdout
    asked = _run(args + ["--progress"])
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert "segment/s" in asked.stderr and "batch/s" in asked.stderr


def test_every_option_has_help_and_states_its_default_at_most_once():
    parser = _parser()
    stream = parser._subparsers._group_actions[0].choices["stream"]
    formatter = stream._get_formatter()
    for action in stream._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action)
        assert action.help and len(action.help) > 10, action.option_strings
        assert text.count("default") <= 1 and "(default: None)" not in text, (action.option_strings, text)
    assert "(default: None)" not in stream.format_help()


def test_summary_means_and_seconds_are_over_the_scored_segments():
    rows = [{"policy": p, "segment": t, "eval_users": 10 + t, "params": 100, "bytes": 1216, "wall_s": w,
             **{m: v + t / 100 for m in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20")}}
            for p, v in (("uniform", 0.1), ("freq-rule", 0.12)) for t, w in ((0, 50.0), (1, 2.0), (2, 4.0))]
    rows[-1]["recall@20"] = 0.0  # freq-rule lower than uniform at segment 2
    s = summarize(rows)["uniform"]
    assert s["segment_s"] == 3.0 and s["total_s"] == 56.0  # mean of t >= 1; all segments
    assert s["recall@20"] == pytest.approx(0.115) and (s["eval_users_min"], s["eval_users_max"]) == (11, 12)
    assert (s["max_params"], s["max_bytes"], s["segments_scored"]) == (100, 1216, 2)
    d = paired_differences(rows)["freq-rule"]
    assert d["reference"] == "uniform" and (d["higher"], d["segments"]) == (1, 2)
    assert d["mean_difference"] == pytest.approx(((0.13 - 0.11) + (0.0 - 0.12)) / 2)


def test_quality_plot_title_states_data_model_and_budget(tmp_path):
    out = tmp_path / "t"
    assert main(TINY[:-2] + ["--compare", "freq-rule,uniform", "--mean-size", "3", "--no-progress",
                             "--out", str(out)]) == 0
    results = _results(out)
    title = quality_title(results)
    assert title == f"{results['source']}: mf, d_max 8, budget mean size 3"
    assert (out / "quality.png").stat().st_size > 0
