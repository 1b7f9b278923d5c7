"""Which worker process holds a running attempt, and whether that process is still there.

A claim records its process as ``host/pid/start``: the machine's name, the process id, and
the process's start time in clock ticks since boot (``/proc/<pid>/stat``), which tells a
process from a later one that got the same pid. On the same host, a claim whose pid is not
running, or runs a process that started at another time, belongs to a process that is gone
(killed with ``kill -9``, the machine's OOM killer): its attempt can be taken back at once
instead of when its lease runs out. A claim made on another host is never judged from here;
its lease is the backstop (as it is for a container whose restart changes its hostname).
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot (field 22 of ``/proc/<pid>/stat``); None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None  # a zombie (killed, not yet reaped) runs nothing any more
    return fields[19]


def host_name() -> str:
    return socket.gethostname()[:100]


@cache
def _identity(pid: int) -> str:
    return f"{host_name()}/{pid}/{_start_ticks(pid) or '0'}"


def process_identity() -> str:
    """This process, as a claim records it (computed once per process: a fork gets its own)."""
    return _identity(os.getpid())


def process_is_gone(claimed_by: str) -> bool:
    """Whether ``claimed_by`` names a process of this host that no longer runs; False when unsure."""
    parts = claimed_by.split("/")
    if len(parts) != 3:
        return False
    host, pid_text, start = parts
    if host != host_name() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return _identity(pid) != claimed_by
    running_start = _start_ticks(pid)
    if running_start is None:
        return Path("/proc/self/stat").exists() or not _pid_exists(pid)
    return start != "0" and running_start != start


def _pid_exists(pid: int) -> bool:
    """Without /proc: ask the kernel whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
