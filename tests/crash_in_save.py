"""Test helper, run as a script: the n-th checkpoint save of the process writes half of its temporary file and
kills the process (exit status 17), a crash in the middle of a save. pyscall.app.checkpoint itself has no hook;
this patches the torch.save it calls.

    python crash_in_save.py N -m MODULE ARGS...   # runs MODULE as __main__
    python crash_in_save.py N -c CODE ARGS...     # runs CODE as __main__
"""
import io
import os
import runpy
import sys

import torch

_real_save = torch.save


def _is_temporary(f) -> bool:
    try:  # checkpoint.save writes through os.fdopen, whose file has no path for a name
        return os.readlink(f"/proc/self/fd/{f.fileno()}").endswith(".tmp")
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False


def main() -> None:
    crash_at, kind, target, *args = sys.argv[1:]
    crash_at, saves = int(crash_at), 0

    def save(obj, f, *a, **kw):
        nonlocal saves
        if not _is_temporary(f):  # only checkpoint.save's temporary files count
            return _real_save(obj, f, *a, **kw)
        saves += 1
        if saves != crash_at:
            return _real_save(obj, f, *a, **kw)
        buffer = io.BytesIO()
        _real_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os._exit(17)

    torch.save = save
    if kind == "-m":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif kind == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<crash_in_save>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"usage: {sys.argv[0]} N -m MODULE ARGS... | N -c CODE ARGS...")


if __name__ == "__main__":
    main()
