"""Running a heavy step (decoding an upload, a local-engine run) in a child process with bounds of its own.

A decoder fed a crafted file can take minutes or gigabytes; run in the web or worker
process, that ends in a killed process (gunicorn's timeout, the kernel's OOM killer)
and memory that is never given back. Here the step runs in a child forked from a
clean server process (multiprocessing's ``forkserver``: no threads, no open sockets or
database connections copied), with an address-space limit (``RLIMIT_AS``) and a wall
clock deadline. Whatever it allocated goes back to the system when it exits, and
passing a bound is an ordinary exception the caller turns into a 400 or a failed run.

The function must be a module-level function taking and returning picklable values;
large data goes through files, not the pipe. It must not read Django settings: the
child does not see settings changed at run time (the tests', say), so the caller
passes every value it needs.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")

# Modules the children need, imported once by the fork server instead of by each child (an import that
# fails there is only left to the child).
_PRELOAD = ["PIL.Image", "PIL.ImageCms", "PIL.ImageOps", "numpy", "rekindle.images"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(_PRELOAD)

# Time for the child to start and to send its answer, on top of the step's own allowance.
_START_SECONDS = 5.0


class BoundExceeded(Exception):
    """The step ran out of its time or memory (or its process died); ``bound`` says which."""

    def __init__(self, bound: str, detail: str = "") -> None:
        super().__init__(f"{bound}: {detail}" if detail else bound)
        self.bound = bound  # "time", "memory" or "crashed"
        self.detail = detail


def _address_space() -> int:
    """The bytes of address space this process maps now (its VmSize)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _child(conn: Connection, func: Callable[..., Any], args: tuple[Any, ...], memory_bytes: int) -> None:
    try:
        # Counted on top of what the process maps already (the interpreter, Pillow, numpy).
        limit = _address_space() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):  # no /proc, or a hard limit already lower: run with what there is
        pass
    try:
        result = func(*args)
    except MemoryError:
        conn.send(("memory", None, _peak_resident()))
    except BaseException as exc:  # the parent re-raises it; nothing may be lost here
        conn.send(("error", exc, _peak_resident()))
    else:
        conn.send(("ok", result, _peak_resident()))
    finally:
        conn.close()


def _peak_resident() -> int:
    """The child's peak resident memory in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_last = threading.local()


def last_peak_resident_bytes() -> int | None:
    """The peak resident memory of this thread's last bounded step (for benchmarks and logs), if it reported one."""
    peak: int | None = getattr(_last, "peak", None)
    return peak


def run_bounded(func: Callable[..., T], *args: Any, seconds: float, memory_bytes: int) -> T:
    """``func(*args)`` in a child process; its result, or its exception, or :class:`BoundExceeded`.

    ``seconds`` is wall-clock time for the step; ``memory_bytes`` is how much address
    space it may add to what a fresh child maps.
    """
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(target=_child, args=(sender, func, args, memory_bytes), daemon=True)
    process.start()
    sender.close()
    try:
        deadline = time.monotonic() + seconds + _START_SECONDS
        while not receiver.poll(0.05):
            if not process.is_alive():
                break
            if time.monotonic() >= deadline:
                raise BoundExceeded("time", f"over {seconds:g} s")
        try:
            kind, value, _last.peak = receiver.recv()
        except EOFError:
            process.join(timeout=5)
            # Killed by the kernel (out of memory) or crashed in native code.
            raise BoundExceeded("crashed", f"exit code {process.exitcode}") from None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
        if process.exitcode is not None:
            process.close()  # its sentinel pipe, now rather than whenever the collector runs
    if kind == "memory":
        raise BoundExceeded("memory", f"over {memory_bytes // (1024 * 1024)} MB")
    if kind == "error":
        raise value
    return value  # type: ignore[no-any-return]


_libc: Any = None


def give_back_freed_memory() -> None:
    """Hand the memory a finished step freed back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    A worker thread allocates from a malloc arena of its own, and glibc returns freed
    space in a thread's arena to the system only when asked: after one 50 MP restore a
    worker kept about 600 MB it no longer used, for good. Cheap (milliseconds); called
    after each attempt's run.
    """
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
