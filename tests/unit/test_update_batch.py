"""UPDATE batches (issue 12): the ExaBGP speaker groups consecutive UPDATEs of one peer from one read,
and the inbox bounds them by UPDATEs, not events. The lines are ExaBGP 5.0's compact JSON (the
fixture's shape, ``tests/unit/fixtures/exabgp_compact.jsonl``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from routing.exabgp import messages as msg
from routing.exabgp.speaker import ExabgpSpeaker
from routing.inbox import Inbox
from tests.unit.factories import config

A, B = "10.0.1.2", "10.0.2.2"


def update(peer: str, prefixes: list[str], med: int = 0, withdraw: list[str] = ()) -> bytes:  # type: ignore[assignment]
    doc = {"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": "10.0.1.1", "peer": peer}, "asn": {"local": 65000, "peer": 64512},
        "direction": "in", "message": {"update": {
            "attribute": {"origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": [64512]}},
                          "med": med},
            "announce": {"ipv4 unicast": {peer: prefixes}} if prefixes else {},
            "withdraw": {"ipv4 unicast": list(withdraw)} if withdraw else {}}}}}
    return json.dumps(doc).encode()


def state(peer: str, st: str) -> bytes:
    return json.dumps({"exabgp": "5.0.0", "type": "state", "neighbor": {
        "address": {"local": "10.0.1.1", "peer": peer}, "asn": {"local": 65000, "peer": 64512},
        "state": st}}).encode()


def events(lines: list[bytes], tmp_path: Path) -> tuple[list[object], ExabgpSpeaker]:
    async def run() -> tuple[list[object], ExabgpSpeaker]:
        inbox = Inbox(maxsize=10_000)
        sp = ExabgpSpeaker(config(), tmp_path, inbox)
        await sp._on_lines(lines)
        out = []
        while (ev := inbox.get_nowait()) is not None:
            out.append(ev)
        return out, sp
    return asyncio.run(run())


def shape(evs: list[object]) -> list[tuple[str, str, int]]:
    return [(type(e).__name__, str(getattr(e, "peer", "")), len(e.updates) if isinstance(e, msg.UpdateBatch) else 1)
            for e in evs]


def test_runs_of_one_peers_updates_become_batches_in_order(tmp_path: Path) -> None:
    big = [f"20.{i // 256}.{i % 256}.0/24" for i in range(msg.UpdateBatch.MAX_PREFIXES + 1)]
    lines = [update(A, [f"20.0.{i}.0/24"], med=i) for i in range(3)]
    lines += [update(B, ["20.1.0.0/24"]), update(B, ["20.1.1.0/24"])]
    lines += [state(A, "down"), update(A, ["20.2.0.0/24"])]
    lines += [b"{not json", update(A, ["20.2.1.0/24"]), update(A, big), update(A, ["20.3.0.0/24"])]
    lines += [update(A, [f"20.4.{i}.0/24"]) for i in range(msg.UpdateBatch.MAX_UPDATES + 1)]
    evs, sp = events(lines, tmp_path)
    assert shape(evs) == [
        ("UpdateBatch", A, 3), ("UpdateBatch", B, 2),  # a new peer ends a run
        ("StateEvent", A, 1),  # any other event ends one, and goes on its own, in order
        ("UpdateBatch", A, 2),  # a malformed line is dropped (and counted), the run goes on
        ("UpdateEvent", A, 1),  # an UPDATE the core slices never joins a batch
        ("UpdateBatch", A, msg.UpdateBatch.MAX_UPDATES), ("UpdateBatch", A, 2),  # at most MAX_UPDATES
    ]
    assert sp.malformed == 1
    first = evs[0]
    assert isinstance(first, msg.UpdateBatch)
    assert [u.attrs.med for u in first.updates] == [0, 1, 2]  # in arrival order
    flat = [str(p) for e in evs if isinstance(e, msg.UpdateBatch | msg.UpdateEvent)
            for u in (e.updates if isinstance(e, msg.UpdateBatch) else (e,)) for p, _nh, _l in u.announce]
    assert flat == [str(p) for p in ["20.0.0.0/24", "20.0.1.0/24", "20.0.2.0/24", "20.1.0.0/24", "20.1.1.0/24",
                                     "20.2.0.0/24", "20.2.1.0/24", *big, "20.3.0.0/24",
                                     *[f"20.4.{i}.0/24" for i in range(msg.UpdateBatch.MAX_UPDATES + 1)]]]


def test_updates_of_a_session_another_process_holds_are_dropped(tmp_path: Path) -> None:
    async def run() -> tuple[list[object], int]:
        inbox = Inbox()
        sp = ExabgpSpeaker(config(), tmp_path, inbox)
        sp.foreign = frozenset({msg.parse_line(state(B, "up")).peer})  # type: ignore[union-attr]
        await sp._on_lines([update(A, ["20.0.0.0/24"]), update(B, ["20.1.0.0/24"]), update(A, ["20.0.1.0/24"])])
        out = []
        while (ev := inbox.get_nowait()) is not None:
            out.append(ev)
        return out, sp.foreign_dropped
    evs, dropped = asyncio.run(run())
    assert dropped == 1 and shape(evs) == [("UpdateEvent", A, 1), ("UpdateEvent", A, 1)]


def test_a_batch_never_holds_an_update_the_core_slices() -> None:
    from routing import children, core

    assert msg.UpdateBatch.MAX_PREFIXES == core.JOB_STEP
    assert children.LINES_PER_CALL == msg.UpdateBatch.MAX_UPDATES  # one read's run is one batch


def test_the_inbox_bounds_updates_not_events() -> None:
    """A producer waits once ``maxsize`` UPDATEs are queued, whether they came one by one or in batches,
    and is let go when the owner has taken enough."""
    async def run() -> tuple[bool, bool, int]:
        inbox = Inbox(maxsize=10)
        u = msg.parse_line(update(A, ["20.0.0.0/24"]))
        batch = msg.UpdateBatch(u.peer, (u,) * 4)  # type: ignore[union-attr,arg-type]
        await inbox.put(batch)
        await inbox.put(batch)
        await inbox.put(u)
        await inbox.put(u)  # 10 UPDATEs in 4 events: full
        blocked = asyncio.ensure_future(inbox.put(u))
        await asyncio.sleep(0.01)  # poll: let the producer run into the bound
        was_blocked = not blocked.done()
        assert inbox.get_nowait() is batch  # 4 taken: room again
        await asyncio.wait_for(blocked, 1)
        return was_blocked, blocked.done(), inbox.routing_depth
    was_blocked, done, depth = asyncio.run(run())
    assert was_blocked and done and depth == 4


def raw(peer: str, nlri: bytes, extra: bytes = b"") -> bytes:
    """A ``U`` line (``exabgp.updates: raw``) announcing ``nlri`` from AS 64512, next hop ``peer``."""
    attrs = (bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 6, 2, 1]) + (64512).to_bytes(4, "big")
             + bytes([0x40, 3, 4]) + bytes(int(x) for x in peer.split(".")) + extra)
    body = (0).to_bytes(2, "big") + len(attrs).to_bytes(2, "big") + attrs + nlri
    return b"U " + peer.encode() + b" " + body.hex().encode()


def test_raw_update_errors_withdraw_or_reset_and_nothing_after_a_reset_counts(tmp_path: Path) -> None:
    """Treat-as-withdraw becomes a withdraw-only event in its place; a session reset asks ExaBGP for
    NOTIFICATION 3/subcode and drops that session's later UPDATEs until ExaBGP reports its state,
    while another session's UPDATEs go on; both are counted."""
    sent: list[str] = []

    async def run() -> tuple[list[object], ExabgpSpeaker]:
        inbox = Inbox(maxsize=10_000)
        sp = ExabgpSpeaker(config(), tmp_path, inbox)

        async def command(cmd: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - the real one's signature
            sent.append(cmd)
            return True

        sp.command = command  # type: ignore[method-assign]
        bad_community = bytes([0xC0, 8, 6]) + b"\x00" * 6
        await sp._on_lines([raw(A, b"\x18\x14\x00\x01", bad_community),   # treat-as-withdraw
                            raw(A, b"\x21\x14\x00\x02\x00\x00"),            # a /33: session reset
                            raw(A, b"\x18\x14\x00\x03"),                    # after the reset: dropped
                            raw(B, b"\x18\x14\x01\x01")])                   # another session: kept
        await asyncio.gather(*sp._reset_tasks)  # the reset command is a task
        await sp._on_lines([state(A, "down"), raw(A, b"\x18\x14\x00\x04")])
        out = []
        while (ev := inbox.get_nowait()) is not None:
            out.append(ev)
        return out, sp

    evs, sp = asyncio.run(run())
    updates = [u for e in evs for u in (e.updates if isinstance(e, msg.UpdateBatch) else [e])
               if isinstance(u, msg.UpdateEvent)]
    assert [(str(u.peer), [str(p) for p, _, _ in u.announce], [str(p) for p in u.withdraw]) for u in updates] == [
        (A, [], ["20.0.1.0/24"]), (B, ["20.1.1.0/24"], []), (A, ["20.0.4.0/24"], [])]
    assert sent == [f"neighbor {A} teardown {0x300 + 10}"]
    assert sp.update_errors == {"treat_as_withdraw": 1, "session_reset": 1}
    assert sp.resetting == set()
