"""The module benchmark runs end to end at a tiny size and writes every row it promises (it is what
the README's table comes from, so it must not rot between full runs)."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_embedding.py"


def test_bench_embedding_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as running the script puts bench/ on the path
    spec = importlib.util.spec_from_file_location("bench_embedding", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "embedding.md"
    bench.main(["--rows", "2000", "--batch", "64", "--repeat", "1", "--block", "1", "--threads", "1",
                "--batches", "2", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("Command: python bench/bench_embedding.py --rows 2000 --batch 64")
    assert bench.cpu_model() in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    whats = [line.split(" | ")[0][2:] for line in rows]
    for what in ("memory copy", "train step adam, all widths 64", "train step sgd, power law mean 16, d_max 256",
                 "train step sgd, all widths 64, batch 64", "padded lookup, all widths 256",
                 "train step, drop-in sparse=True + torch SparseAdam, all widths 64",
                 "train step adam, all widths 64, ragged layout (rows found through their offsets and widths)",
                 "train step adam, all widths 64: uniform layout against the ragged one",
                 "pooled lookup (sum, bags of 8), power law mean 16, d_max 256",
                 "index_select alone on a dense table of width 16 (not pyscall; for scale), power law mean 16, "
                 "d_max 256",
                 "train step adam, power law mean 16, d_max 256: read floor (one pass reading only every cache line "
                 "the step reads: offsets, widths, weight, m, v, gradient rows; prefetch distance",
                 "train step sgd, all widths 64: read floor (one pass reading only every cache line the step reads: "
                 "weight, gradient rows; prefetch distance",
                 "pooled lookup read floor (one pass reading only every cache line of the rows and their offsets and "
                 "widths; prefetch distance"):
        assert any(w.startswith(what) for w in whats), what  # a floor's row goes on with its distance
    for line in rows[1:]:
        cells = line.split(" | ")
        assert float(cells[3]) > 0 and float(cells[4]) > 0, line  # both sides timed
        float(cells[5].rstrip("x")), float(cells[6].rstrip("x"))  # ratios are numbers
