"""A table's readers-writer lock (csrc/arena/layout_lock.h) and the decorators that make a RaggedArena method hold
it: layout changes exclusively, reads of the layout shared."""
from __future__ import annotations

import contextlib
import itertools
import weakref

from . import _C

class LayoutLock(_C.LayoutLock):
    """A readers-writer lock for one table (csrc/arena/layout_lock.h): layout changes hold it exclusively,
    lookups, updates and reads of the layout hold it shared; writers are preferred, so a stream of lookups
    cannot starve a layout change. Not reentrant: a thread holding it must not take it again.
    acquire_shared/release_shared and acquire_exclusive/release_exclusive come from C++: a lookup takes it twice,
    and a lock made of threading.Locks costs several times more from Python."""

    _keys = itertools.count(1)
    _by_key = weakref.WeakValueDictionary()

    def __init__(self):
        super().__init__()
        self.key = next(LayoutLock._keys)  # how a compiled op, which takes ints, names the lock
        self.arena = None                  # weak reference to the table's current arena
        LayoutLock._by_key[self.key] = self

    @classmethod
    def find(cls, key: int) -> "LayoutLock | None":
        """The lock of that key, if its table is still alive."""
        return cls._by_key.get(key)

    @contextlib.contextmanager
    def shared(self):
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self):
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()


def _holding(mode: str):
    """A decorator: the method runs holding the arena's lock in `mode` ("exclusive" for layout changes,
    "shared" for reads of the layout)."""
    acquire, release = f"acquire_{mode}", f"release_{mode}"

    def decorate(method):
        def locked(self, *args, **kwargs):
            lock = self.lock
            getattr(lock, acquire)()
            try:
                return method(self, *args, **kwargs)
            finally:
                getattr(lock, release)()
        locked.__name__, locked.__qualname__, locked.__doc__ = method.__name__, method.__qualname__, method.__doc__
        locked.unlocked = method
        return locked
    return decorate


exclusive, shared = _holding("exclusive"), _holding("shared")
