"""Large transients and long-lived objects, kept out of the cyclic garbage collector's way.

A worker holds the state packed (``tracked.py``: a few objects, whatever the number of
files), but a cold start, a whole read of the state and a full listing build a few
objects per file for a moment, and CPython's full collection (generation 2) visits every
one with the GIL held (about 45 ms at 50,000 entries as objects), so every request thread
of the worker waits that long. So:

- while such a build is under way, collections are paused (each would visit the partly
  built one again: a third of a cold start's parse at 50,000 files);
- after one, everything alive is moved to the permanent generation (``gc.freeze``),
  which later collections skip. Reference counting still frees those objects when they
  are replaced (the entries form no cycles), so nothing piles up. Cyclic garbage alive
  at a freeze would be kept for good, so the young generations are collected first and
  no freeze happens while any build is under way; and freezes are rare (a cold start, a
  full listing, a whole read of the state, an index rebuild).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import threading
from typing import Iterator

# Below this many files a full collection is short enough to leave alone.
LARGE = 5_000

_pause_lock = threading.Lock()
_pauses = 0  # builds under way, in any thread
_paused_here = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while the block builds long-lived objects (reference counting
    goes on). Nested and concurrent blocks are counted: the collector resumes after the
    last, and only if it was on before the first."""
    global _pauses, _paused_here
    with _pause_lock:
        if _pauses == 0:
            _paused_here = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _paused_here:
                gc.enable()


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere): after a large transient, such as a full listing's objects, a process
    that keeps nothing of it would otherwise keep its peak size."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own default, kept from moving


def return_large_blocks_promptly() -> None:
    """Have the C allocator map every block of 128 KiB or more on its own, and so give it
    back to the system when freed (glibc's ``mallopt``; a no-op elsewhere).

    By default glibc raises that threshold to the largest block freed so far (up to 32
    MiB): after a cold start's 35 MB snapshot text and its many parse buffers, made in
    a worker's background thread, about 30 MB of freed blocks stayed in that thread's
    arena for good (measured: ``malloc_trim`` did not give them back either). The cost:
    a response body of 128 KiB or more is mapped and unmapped each time (some
    microseconds; the pages of a project page under that size are kept as before)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def keep_long_lived(objects_built: int) -> None:
    """After building ``objects_built`` long-lived entries (state or index): move every
    object alive now out of the collector's scans, if that is many.

    Not while any build has the collector paused: the young objects then include what
    that build has not freed yet, cyclic garbage among them (a GCS listing's blobs and
    their ACLs form cycles), which a freeze would keep for good. And the young
    generations are collected first, for the same reason: that collection is one a
    build's garbage costs anyway, sooner or later."""
    if objects_built < LARGE:
        return
    with _pause_lock:
        if _pauses:
            return
    gc.collect(1)
    gc.freeze()
