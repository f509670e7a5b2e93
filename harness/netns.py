"""Enter another process's network namespace from one thread (Python 3.11 has no ``os.setns``).

A socket belongs to the namespace it was created in, so one process can serve many emulated hosts:
each worker thread moves itself into its host's namespace (only that thread moves) and then opens
its sockets. Threads it starts afterwards inherit the namespace. Used by the device fleet and the
in-namespace capture.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000  # from <sched.h>: the network-namespace flag for setns(2)

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(pid: int) -> None:
    """Move the calling thread into the network namespace of process ``pid``."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network namespace of pid {pid}: {os.strerror(err)}")
    finally:
        os.close(fd)
