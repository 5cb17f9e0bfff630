"""Entering a network namespace from Python, per thread.

``setns(CLONE_NEWNET)`` changes the namespace of the calling thread only, and a netlink socket stays
bound to the namespace it was created in. So the writer creates its sockets inside
:func:`netns` and everything else keeps running in the original namespace. Unlike
``ip netns exec``, this does not remount ``/sys`` (bpffs and ``/sys/class/net`` stay the host's).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """``os.setns`` arrived in Python 3.12; we support 3.11, so call libc directly."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> str:
    return name if name.startswith("/") else f"/run/netns/{name}"


@contextmanager
def netns(name: str | None) -> Iterator[None]:
    if not name:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        setns(target, CLONE_NEWNET)
        try:
            yield
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)
