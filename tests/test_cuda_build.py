"""The CUDA part of pyscall._C: present when nvcc is, optional at build time, clear errors without a GPU."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyscall import _C, cuda_move

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: the CUDA part is not built")
def test_with_cuda_when_nvcc_present():
    assert _C.with_cuda is True
    assert callable(_C.cuda_move_rows)


@pytest.mark.skipif(not _C.with_cuda, reason="built without CUDA")
def test_cuda_entry_point_errors_are_python_exceptions():
    with pytest.raises(ValueError, match="elem_size must be 2, 4 or 8"):
        _C.cuda_move_rows(1, 1, 3, 8, 8, 1, 1, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="null device pointer"):
        _C.cuda_move_rows(0, 0, 4, 8, 8, 0, 0, 0, 0, 1, 0)
    assert _C.cuda_move_rows(0, 0, 4, 8, 8, 0, 0, 0, 0, 0, 0) is None  # nothing to move: no CUDA call at all
    if not _C.cuda_device_available():
        # Without a driver every CUDA call fails; the code must become a RuntimeError naming the CUDA error
        # (only safe to try here: on a real GPU these fake pointers would fault).
        with pytest.raises(RuntimeError, match="pyscall CUDA move_rows: kernel launch: .*(driver|device)"):
            _C.cuda_move_rows(16, 16, 4, 8, 8, 16, 16, 16, 16, 1, 0)


def test_move_rows_wrapper_checks():
    ok = torch.zeros(4, dtype=torch.int64)
    if not _C.with_cuda:
        with pytest.raises(RuntimeError, match="without CUDA"):
            cuda_move.move_rows(torch.zeros(4), torch.zeros(4), ok, ok, ok, ok)
        return
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        cuda_move.move_rows(torch.zeros(4), torch.zeros(4), ok, ok, ok, ok)


def test_move_rows_without_cuda_build_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_C, "with_cuda", False)
    ok = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        cuda_move.move_rows(torch.zeros(4), torch.zeros(4), ok, ok, ok, ok)


def test_portable_build_without_cuda(tmp_path):
    """Configure and build the project with -DPYSCALL_CUDA=OFF -DPYSCALL_NATIVE=OFF: the module must import
    with with_cuda False, and its portable loops (no AVX-512: the row mover) must give the same
    bits as the installed build (tests/portable_probe.py). About 40 s on 2 cores; mark it slow if the C++ core grows past 60 s."""
    cmake = shutil.which("cmake", path=str(VENV_BIN)) or shutil.which("cmake")
    pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], check=True,
                                  capture_output=True, text=True).stdout.strip()
    build = tmp_path / "build"
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # the venv's cmake/ninja
    generator = ["-G", "Ninja"] if shutil.which("ninja", path=env["PATH"]) else []
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(build), *generator, "-DPYSCALL_CUDA=OFF", "-DPYSCALL_NATIVE=OFF",
                    "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11_dir}"], check=True, capture_output=True, text=True, env=env)
    subprocess.run([cmake, "--build", str(build), "--parallel", "2"], check=True, capture_output=True, text=True,
                   env=env)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import _C; "
             "print(_C.with_cuda, hasattr(_C, 'cuda_move_rows'))")
    out = subprocess.run([sys.executable, "-c", probe, str(build)], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]
    probe = str(ROOT / "tests" / "portable_probe.py")
    portable = subprocess.run([sys.executable, probe, str(build)], check=True, capture_output=True, text=True)
    installed = subprocess.run([sys.executable, probe], check=True, capture_output=True, text=True)
    assert portable.stdout == installed.stdout
