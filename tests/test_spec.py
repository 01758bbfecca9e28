"""pyscall.spec is the one description of optimizers, pooling modes and dtypes: the C++ enums, both backends and
the modules follow it."""
import re
from pathlib import Path

import pytest
import torch

import pyscall
from pyscall import spec
from pyscall.backends import cpu

CSRC = Path(__file__).resolve().parents[1] / "csrc" / "cpu"


def _enum(name: str, file: str = "kernels.h") -> dict:
    """{enumerator: value} of the enum `name` in csrc/cpu/<file>."""
    text = (CSRC / file).read_text()
    body = re.search(r"enum (?:class )?" + name + r"\s*\{([^}]*)\}", text).group(1)
    return {k.strip(): int(v) for k, v in (item.split("=") for item in body.split(",") if item.strip())}


def _camel(name: str) -> str:
    return "k" + "".join(part.capitalize() for part in name.split("_"))


def test_the_cpp_enums_match_the_spec():
    assert _enum("Optimizer") == {_camel(n): o.code for n, o in spec.OPTIMIZERS.items()}
    assert _enum("PoolMode") == {_camel(n): code for n, code in spec.POOL_MODES.items()}
    assert _enum("DtypeCode", "bind_cpu.cpp") == {"kFloat" + str(d).removeprefix("torch.float"): code
                                                  for d, code in spec.DTYPE_CODES.items()}


def test_the_contract_doc_names_every_optimizer_and_mode():
    doc = (Path(spec.__file__).parent / "backends" / "CONTRACT.md").read_text()
    for name in [*spec.OPTIMIZERS, *spec.POOL_MODES]:
        assert f'"{name}"' in doc


@pytest.mark.parametrize("optimizer", [*spec.OPTIMIZERS, None])
def test_modules_take_state_counts_and_defaults_from_the_spec(optimizer):
    table = pyscall.Embedding(5, 4, optimizer=optimizer)
    o = spec.OPTIMIZERS.get(optimizer)
    assert len(table._arena.state) == (o.state_per_element if o else 0)
    assert len(table._arena.row_state) == (o.state_per_row if o else 0)
    if o:
        assert table.lr == o.lr and float(table._hparams[spec.HPARAMS.index("eps")]) == o.eps


def test_a_table_the_cpu_kernels_cannot_read_is_refused_when_built():
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match="float32 or torch.float64"):
            pyscall.Embedding(4, 3, dtype=dtype)
        with pytest.raises(TypeError, match="fused optimizer"):
            pyscall.Embedding(4, 3, dtype=dtype, device="meta", optimizer="sgd")
    for dtype in spec.VALUE_DTYPES:  # and what they read works end to end
        table = pyscall.Embedding(4, 3, dtype=dtype, optimizer="adam")
        table(torch.tensor([0, 3])).sum().backward()
        assert table.step == 1
    with pytest.raises(TypeError):
        cpu.lookup(torch.zeros(4, dtype=torch.float16), torch.zeros(1, dtype=torch.int64),
                   torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int64), 2)
