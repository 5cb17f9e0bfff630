"""Local repair (bfd/repair.py) as pure logic: plan framing, the worker's matching of the kernel's
answers (injected bytes), the BFD process's trigger rule, the daemon's plans and their pusher.

The kernel round trip (a plan moving real routes, a stale plan refused) is in
tests/integration/test_fib_kernel.py::test_local_repair_plan_sent_by_the_bfd_side_moves_traffic_and_stays_consistent.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import struct
import threading
from pathlib import Path

import orjson
import pytest

from bfd.packet import Diag, State
from bfd.process import BfdProcess
from bfd.repair import NLM_F_ACK, LocalRepair, PlanError, RepairResult, check_map_writes, prepare
from bfd.session import SessionKey, StateChanged
from common.model import FibEntry
from fib import netlink as nl
from fib.dataplane import RepairPlan
from fib.ops import Results
from routing.bfd_link import BfdController
from routing.config import parse_config
from tests.unit.factories import CONFIG
from tests.unit.test_fib_plan import Writer

A = ipaddress.ip_address
N = ipaddress.ip_network
HDR = struct.Struct("=IHHII")


def _group(seq: int, gid: int, members: list[int]) -> bytes:
    msg = nl.encode_group(seq, gid, members, protocol=200, replace=True)
    (flags,) = struct.unpack_from("=H", msg, 6)
    return msg[:6] + struct.pack("=H", flags & ~0x400) + msg[8:]  # a replace never creates


def _answer(seq: int, err: int) -> bytes:
    body = struct.pack("=i", -err) + HDR.pack(16, 104, 0, seq, 0)
    return HDR.pack(16 + len(body), nl.NLMSG_ERROR, 0, seq, 0) + body


# --- framing -----------------------------------------------------------------------------------------
def test_prepare_sets_ack_on_every_message_and_returns_the_sequence_numbers() -> None:
    data, seqs = prepare(_group(7, 100, [1, 2]) + _group(8, 101, [3]))
    assert seqs == [7, 8]
    off = 0
    while off < len(data):
        length, mtype, flags, _seq, _pid = HDR.unpack_from(data, off)
        assert mtype == nl.RTM_NEWNEXTHOP and flags & NLM_F_ACK
        off += length


@pytest.mark.parametrize("bad, why", [
    (b"\x01\x02", "truncated"),
    (HDR.pack(400, 104, 1, 0, 0), "bad length"),
    (nl.encode_del_nexthop(0, 5), "not RTM_NEWNEXTHOP"),
    (nl.encode_group(0, 100, [1], protocol=200, replace=True), "NLM_F_CREATE"),
])
def test_prepare_refuses_anything_but_group_rewrites(bad: bytes, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        prepare(bad)


# --- the worker --------------------------------------------------------------------------------------
class _Sock:
    """A netlink socket stand-in: records what was sent and answers with the given errnos."""

    def __init__(self, errnos: dict[int, int], fail: OSError | None = None) -> None:
        self.errnos, self.fail, self.sent, self.closed = errnos, fail, b"", False
        self._answers = b""

    def settimeout(self, _t: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent += data
        seqs, off = [], 0
        while off < len(data):
            length, _t, flags, seq, _pid = HDR.unpack_from(data, off)
            assert flags & NLM_F_ACK  # every message asks for its answer
            seqs.append(seq)
            off += length
        self._answers = b"".join(_answer(s, self.errnos.get(s, 0)) for s in seqs)

    def recv(self, _n: int) -> bytes:
        out, self._answers = self._answers, b""
        return out

    def close(self) -> None:
        self.closed = True


def test_results_are_matched_by_sequence_number_and_a_plan_is_used_once() -> None:
    results: list[RepairResult] = []
    done = threading.Event()
    socks = [_Sock({11: errno.ENOENT})]
    lr = LocalRepair(lambda r: (results.append(r), done.set()), open_socket=socks.pop, clock=lambda: 5.0)
    lr.set_plans({"10.0.0.2": _group(10, 100, [1]) + _group(11, 101, [2]), "10.0.0.3": b""}, version=3)
    assert set(lr.plans) == {"10.0.0.2"}
    assert lr.trigger("10.0.0.2", 4.99) == 2
    assert lr.trigger("10.0.0.2", 4.99) == 0 and lr.trigger("10.9.9.9", 4.99) == 0
    assert done.wait(5)
    (r,) = results
    assert (r.peer, r.version, r.messages, r.errors, r.done_at) == ("10.0.0.2", 3, 2, {11: errno.ENOENT}, 5.0)
    lr.close()


def test_a_broken_socket_fails_the_whole_plan_and_is_reopened() -> None:
    broken = _Sock({}, fail=OSError(errno.EPIPE, "broken"))
    good = _Sock({})
    socks = [good, broken]
    lr = LocalRepair(lambda r: None, open_socket=socks.pop)
    data, seqs = prepare(_group(1, 100, [1]))
    assert lr.send(data, seqs) == {1: errno.EPIPE} and broken.closed
    assert lr.send(data, seqs) == {} and good.sent == data


@pytest.mark.parametrize("write, why", [
    (("relative/groups", b"\0" * 4, b"\0" * 36), "not a pinned XDP groups map"),
    (("/sys/fs/bpf/pop/lpm4", b"\0" * 4, b"\0" * 36), "not a pinned XDP groups map"),
    (("/sys/fs/bpf/../etc/groups", b"\0" * 4, b"\0" * 36), "not a pinned XDP groups map"),
    (("/sys/fs/bpf/pop/groups", b"\0" * 8, b"\0" * 36), "group entry"),
])
def test_map_writes_are_only_group_rewrites(write: tuple, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        check_map_writes([write])
    assert check_map_writes([("/sys/fs/bpf/pop/groups", b"\0" * 4, b"\0" * 36)])


def test_a_malformed_plan_is_dropped_and_counted_the_others_kept() -> None:
    lr = LocalRepair(lambda r: None)
    lr.set_plans({"10.0.0.2": _group(1, 100, [1])}, version=1)
    lr.set_plans({"10.0.0.2": b"\x00" * 3, "10.0.0.3": _group(1, 101, [2])}, version=2)
    assert set(lr.plans) == {"10.0.0.3"} and lr.rejected == 1


# --- the BFD process: only Up -> Down triggers, and first ---------------------------------------------
class _Lines:
    def __init__(self) -> None:
        self.lines: list[dict] = []

    def write(self, data: bytes) -> None:
        self.lines += [orjson.loads(x) for x in data.splitlines() if x]


async def test_only_a_down_from_up_triggers_the_plan_and_the_event_says_so() -> None:
    w = _Lines()
    proc = BfdProcess(w, open_socket=lambda: _Sock({}))  # type: ignore[arg-type]
    sent: list[tuple[str, float]] = []
    proc.repair.trigger = lambda peer, at: sent.append((peer, at)) or 1  # type: ignore[method-assign]
    try:
        key = SessionKey("10.0.0.2", "10.0.0.1", "", False)
        proc._on_state(key, None, StateChanged(State.INIT, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 1.0))  # type: ignore[arg-type]
        assert sent == [] and "local_repair" not in w.lines[-1]
        proc._on_state(key, None, StateChanged(State.UP, State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, 2.0))  # type: ignore[arg-type]
        assert sent == []
        proc._on_state(key, None, StateChanged(State.UP, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3.0))  # type: ignore[arg-type]
        assert sent == [("10.0.0.2", 3.0)] and w.lines[-1]["local_repair"] == 1
        proc._repair_done(RepairResult("10.0.0.2", 4, 3.0, 3.002, 1, {}))
        rep = w.lines[-1]
        assert rep["event"] == "repair" and rep["errors"] == 0 and rep["done_at"] - rep["at"] == pytest.approx(0.002)
    finally:
        proc.sampler.close()
        proc.transport.close()


# --- the daemon's plans ------------------------------------------------------------------------------
def _installed(w: Writer, *entries: FibEntry) -> None:
    w.complete(w.plan([(e.prefix, e) for e in entries]))


def test_plans_move_groups_off_the_gateway_and_touch_nothing() -> None:
    w = Writer(mpls_encap=False)
    gw1, gw2 = A("10.0.0.2"), A("10.0.1.2")
    _installed(w, FibEntry(N("192.0.2.0/24"), (gw1,), (), (gw2,), ()),
               FibEntry(N("198.51.100.0/24"), (gw1, gw2), (), (), ()),
               FibEntry(N("203.0.113.0/24"), (gw2,), (), (), ()))
    before = copy.deepcopy((w.table.group_by_id, w.table.nh_refs, w.table.nexthops))
    plans = w.planner.repair_plans([gw1, gw2])
    assert copy.deepcopy((w.table.group_by_id, w.table.nh_refs, w.table.nexthops)) == before
    to = {op.gid: [w.table.nh_key[m][0] for m in op.members] for op in plans[gw1]}
    assert sorted(to.values()) == [[gw2], [gw2]]  # the backup group, and the ECMP group's other member
    # gw2: the ECMP group falls back to gw1; the backup group (gw2 is its backup) and gw2's own group
    # (nothing else to go to) need no rewrite.
    assert [[w.table.nh_key[m][0] for m in op.members] for op in plans[gw2]] == [[gw1]]
    assert all(op.failover and op.old_members == w.table.group_by_id[op.gid].members for op in plans[gw1])
    # Dead gateways have nothing to plan; others' plans see them as dead already.
    w.table.dead.add(gw2)
    assert w.planner.repair_plans([gw1, gw2])[gw2] == []


def test_unconfirmed_groups_are_left_to_the_failover_lane() -> None:
    w = Writer(mpls_encap=False)
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (), (A("10.0.1.2"),), ())
    ops = w.plan([(e.prefix, e)])  # planned, the kernel has not answered yet
    assert w.planner.repair_plans([A("10.0.0.2")]) == {A("10.0.0.2"): []}
    w.dp.apply_results(ops, Results(ops))
    assert len(w.planner.repair_plans([A("10.0.0.2")])[A("10.0.0.2")]) == 1


# --- the pusher --------------------------------------------------------------------------------------
class _Source:
    def __init__(self) -> None:
        self.fp = (1,)
        self.plans = {A("10.0.1.2"): RepairPlan(b"P1", (("/sys/fs/bpf/x/groups", b"k", b"v"),)),
                      A("10.0.2.2"): RepairPlan(b"")}
        self.computed = 0

    def repair_fingerprint(self) -> tuple[int, ...]:
        return self.fp

    def repair_plans(self, gws):  # type: ignore[no-untyped-def]
        self.computed += 1
        return {gw: self.plans.get(gw, RepairPlan(b"")) for gw in gws}


def test_pusher_sends_changes_only_and_resends_what_a_down_used(tmp_path: Path) -> None:
    cfg = copy.deepcopy(CONFIG)
    cfg["customers"][0]["bfd"] = {"tx_interval_ms": 10, "rx_interval_ms": 10, "multiplier": 3}
    ctl = BfdController(parse_config(cfg), tmp_path, lambda ev: None)
    w = _Lines()
    ctl.channel.writer = w  # type: ignore[assignment]
    src = _Source()
    assert ctl.push_repairs_once(src) == 3  # every BFD peer of acme, empty plans included
    (msg,) = w.lines
    assert msg["op"] == "repair" and msg["plans"]["10.0.2.2"] == {"netlink": "", "maps": []}
    assert msg["plans"]["10.0.1.2"] == {"netlink": b"P1".hex(),
                                        "maps": [["/sys/fs/bpf/x/groups", b"k".hex(), b"v".hex()]]}
    assert ctl.push_repairs_once(src) == 0 and src.computed == 1  # nothing moved: not even recomputed
    src.fp = (2,)
    assert ctl.push_repairs_once(src) == 0 and len(w.lines) == 1  # recomputed, identical: not sent
    # The BFD process used 10.0.1.2's plan on a Down: the next push sends it again, though nothing moved.
    import asyncio

    asyncio.run(ctl._on_line(orjson.dumps({"event": "state", "peer": "10.0.1.2", "local": "10.0.1.1",
                                            "multihop": False, "old": "up", "new": "down", "diag": "x",
                                            "at": 1.0})))
    assert ctl.push_repairs_once(src) == 1 and list(w.lines[-1]["plans"]) == ["10.0.1.2"]
    assert w.lines[-1]["version"] > msg["version"]
    ctl.channel.writer = None
    assert ctl.push_repairs_once(src) == 0  # no BFD process connected
