"""The benchmark's read floor (bench/touch_floor.cpp) reads every cache line of the selected rows, each
once per occurrence, in every buffer: counted against lines computed here from the addresses."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from touch_floor import Touch  # noqa: E402


def lines_spanned(address: int, width: int) -> int:
    return 0 if width == 0 else (address + 4 * width - 1) // 64 - address // 64 + 1


@pytest.mark.parametrize("uniform", [0, 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_touch_reads_every_line_of_every_row(uniform, threads):
    g = torch.Generator().manual_seed(uniform + threads)
    rows, d_max, n = 300, 40, 257
    widths = torch.full((rows,), uniform, dtype=torch.int32) if uniform else \
        torch.randint(0, d_max + 1, (rows,), generator=g, dtype=torch.int32)
    sizes = widths.long()
    offsets = torch.cumsum(sizes, 0) - sizes + 3  # rows start anywhere in a line
    weight, state = torch.randn(int(sizes.sum()) + 3), torch.randn(int(sizes.sum()) + 3)
    grad = torch.randn(n, d_max)
    ids = torch.randint(0, rows, (n,), generator=g)  # with repeats
    touch = Touch(offsets, widths, uniform, d_max, [weight, state], [grad], threads=threads, distance=4)
    expected = 0
    for k, i in enumerate(ids.tolist()):
        w = int(widths[i])
        o = i * uniform if uniform else int(offsets[i])
        expected += sum(lines_spanned(b.data_ptr() + 4 * o, w) for b in (weight, state))
        expected += lines_spanned(grad.data_ptr() + 4 * k * d_max, w)
    assert touch(ids) == expected > 0


def test_touch_refuses_what_it_cannot_read():
    widths, offsets = torch.ones(4, dtype=torch.int32), torch.arange(4)
    with pytest.raises(ValueError, match="float32"):
        Touch(offsets, widths, 0, 1, [torch.zeros(4, dtype=torch.float64)])
    touch = Touch(offsets, widths, 0, 1, [torch.zeros(4)])
    with pytest.raises(ValueError, match="int64"):
        touch(torch.zeros(2, dtype=torch.int32))
