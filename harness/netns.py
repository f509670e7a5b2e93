"""Enter another network namespace from one thread (Python 3.11 has no ``os.setns``).

A socket belongs to the namespace it was created in, so one process can serve many emulated hosts:
a worker thread moves itself into a host's namespace (only that thread moves) and then opens its
sockets. Threads it starts afterwards inherit the namespace. Used by the device fleet and the
in-namespace helpers of the tests.
"""

from __future__ import annotations

import ctypes
import os
import threading

CLONE_NEWNET = 0x40000000  # from <sched.h>: the network-namespace flag for setns(2)

_libc = ctypes.CDLL(None, use_errno=True)
_current = threading.local()


def namespace_path(pid: int) -> str:
    """The namespace file of the network namespace process ``pid`` is in."""
    return f"/proc/{pid}/ns/net"


def enter_namespace(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (nothing if it is already there)."""
    if getattr(_current, "path", None) == path:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
    _current.path = path


def enter_netns(pid: int) -> None:
    """Move the calling thread into the network namespace of process ``pid``."""
    enter_namespace(namespace_path(pid))
