"""The library (tables, arena, ops, backends) imports without the SCALL application or its plotting and
progress-bar dependencies."""
import json
import subprocess
import sys
import tempfile

_PROBE = """
import json, sys
import torch  # (torch itself imports tqdm, through torch.hub)
before = set(sys.modules)
import pyscall
print(json.dumps({"new": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
"""

APPLICATION = ("pyscall.app", "pyscall.app.train", "pyscall.app.cli", "pyscall.app.report", "pyscall.app.metrics",
               "pyscall.app.scall", "pyscall.app.data", "pyscall.app.models")


def test_import_pyscall_loads_no_application_module_nor_matplotlib_nor_a_progress_bar():
    # A fresh process (this one has imported everything already), outside the checkout, whose pyscall/ has
    # no built _C.
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                            cwd=tempfile.gettempdir())
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    assert not [m for m in modules["all"] if m.split(".")[0] == "matplotlib"]
    assert not [m for m in modules["new"] if m.split(".")[0] == "tqdm"]
    loaded = [m for m in modules["new"] if m.startswith(APPLICATION)]
    assert not loaded, f"import pyscall loaded application modules: {loaded}"
