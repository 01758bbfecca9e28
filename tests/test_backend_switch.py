"""PYSCALL_BACKEND=triton sends CPU tensors through the Triton kernels (interpreted): the modules must
give the same results as the C++ path. Runs in a subprocess because both variables must be set
before pyscall.backends.triton is imported."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, torch, pyscall
torch.manual_seed(0)
widths = torch.randint(0, 12, (30,), dtype=torch.int32)
emb = pyscall.Embedding(30, 11, widths=widths, optimizer="adam", lr=0.1, dtype=torch.float64)
bag = pyscall.EmbeddingBag(30, 11, mode="max", widths=widths, dtype=torch.float64)
ids = torch.tensor([1, 2, 2, 29, 0, 5])
outs = []
for _ in range(2):
    out = emb(ids)
    out.pow(2).sum().backward()
    pooled = bag(ids, torch.tensor([0, 2, 2, 5]))
    pooled.sum().backward()
    outs += [out.flatten().tolist(), pooled.flatten().tolist()]
results = outs + [emb.to_dense().flatten().tolist(), bag.weight.grad.tolist()]
print(json.dumps(results + [pyscall.backends.for_tensor(emb.weight).__name__]))
"""


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYSCALL_BACKEND", "TRITON_INTERPRET")}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())  # not the checkout: import the installed package
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_triton_switch_matches_cpu_path():
    cpu = _run({})
    triton = _run({"PYSCALL_BACKEND": "triton", "TRITON_INTERPRET": "1"})
    assert cpu[-1] == "pyscall.backends.cpu" and triton[-1] == "pyscall.backends.triton"
    import torch
    for a, b in zip(cpu[:-1], triton[:-1]):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-10, atol=1e-12)


def test_triton_switch_without_interpreter_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYSCALL_BACKEND"] = "triton"
    done = subprocess.run([sys.executable, "-c", "import torch, pyscall; pyscall.Embedding(3, 2)(torch.tensor([0]))"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    assert done.returncode != 0 and "TRITON_INTERPRET=1" in done.stderr
