"""The FIB monitor's own-route filter (issue 12): what ``_filter_own`` reports must match what is
attached, or the dataplane counts notifications that never arrive (or misses ones that do)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from fib.monitor import FibMonitor
from fib.netlink import OwnRouteFilter


class FakeSocket:
    def __init__(self, fail_attach: bool = False, fail_detach: bool = False) -> None:
        self.fail_attach, self.fail_detach = fail_attach, fail_detach
        self.attached = False

    def setsockopt(self, level: int, opt: int, value: object) -> None:
        assert level == socket.SOL_SOCKET
        if opt == 26:  # SO_ATTACH_FILTER
            if self.fail_attach:
                raise OSError(1, "refused")
            self.attached = True
        elif opt == 27:  # SO_DETACH_FILTER
            if self.fail_detach:
                raise OSError(12, "no memory")
            self.attached = False


def monitor(sock: FakeSocket) -> FibMonitor:
    m = FibMonitor(SimpleNamespace(), SimpleNamespace(protocol=200), SimpleNamespace(netns=None),
                   route_table=254, metric=20)
    m._sock = sock  # type: ignore[assignment]
    m._own_filter = OwnRouteFilter(200)
    return m


def test_attach_and_detach_report_the_state() -> None:
    sock = FakeSocket()
    m = monitor(sock)
    assert m._filter_own(True) is True and sock.attached
    assert m._filter_own(False) is False and not sock.attached


def test_a_refused_attach_falls_back_to_counting_for_good() -> None:
    sock = FakeSocket(fail_attach=True)
    m = monitor(sock)
    assert m._filter_own(True) is False and not sock.attached
    sock.fail_attach = False
    assert m._filter_own(True) is False and not sock.attached  # not tried again


def test_a_failed_detach_says_the_filter_is_still_there() -> None:
    sock = FakeSocket(fail_detach=True)
    m = monitor(sock)
    assert m._filter_own(True) is True
    assert m._filter_own(False) is True and sock.attached  # still filtering: the dataplane must not count
    sock.fail_detach = False
    assert m._filter_own(False) is False and not sock.attached
