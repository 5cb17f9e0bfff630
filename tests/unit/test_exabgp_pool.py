"""The ExaBGP pool's size and assignment: deterministic, a customer's sessions together, few moves."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from routing.config import parse_config
from routing.exabgp.pool import (
    AUTO_MIN_SESSIONS,
    assign,
    auto_processes,
    peer_processes,
    process_count,
    process_of,
)
from routing.exabgp.speaker import SpeakerPool
from routing.inbox import Inbox

NAMES = [f"customer-{i}" for i in range(400)]


def pool_config(customers: int, processes: int | str, peers_each: int = 2) -> dict:
    cs = []
    for i in range(customers):
        peers = [{"address": f"10.{i // 200}.{i % 200}.{2 + j}", "local_address": f"10.{i // 200}.{i % 200}.1"}
                 for j in range(peers_each)]
        cs.append({"name": f"c{i}", "asn": 64512 + i, "import": {"prefixes": ["198.51.100.0/24"]}, "peers": peers})
    return {"router": {"asn": 65000, "router_id": "192.0.2.1"}, "exabgp": {"processes": processes},
            "customers": cs}


def test_assignment_is_deterministic_and_covers_every_process() -> None:
    a = assign(NAMES, 4)
    assert a == assign(reversed(NAMES), 4) == {n: process_of(n, 4) for n in NAMES}
    counts = [sum(1 for i in a.values() if i == k) for k in range(4)]
    assert all(60 <= c <= 140 for c in counts), counts  # about 100 each
    assert assign(NAMES, 1) == dict.fromkeys(NAMES, 0)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True),
       st.text(min_size=1, max_size=12), st.integers(1, 8))
@settings(max_examples=100, deadline=None)
def test_adding_or_removing_other_customers_moves_nobody(names: list[str], other: str, n: int) -> None:
    before = assign(names, n)
    with_other = assign([*names, other], n)
    assert {k: with_other[k] for k in names if k != other} == {k: v for k, v in before.items() if k != other}
    assert assign(names[1:], n) == {k: before[k] for k in names[1:]}


def test_growing_the_pool_moves_only_customers_to_the_new_process() -> None:
    for n in range(1, 6):
        before, after = assign(NAMES, n), assign(NAMES, n + 1)
        moved = [k for k in NAMES if before[k] != after[k]]
        assert all(after[k] == n for k in moved)  # every move goes to the new process
        assert abs(len(moved) - len(NAMES) / (n + 1)) < len(NAMES) * 0.1  # about 1/(n+1) of them


def test_sessions_of_a_customer_stay_together() -> None:
    c = parse_config(pool_config(40, 3, peers_each=4))
    by_addr = peer_processes(c)
    for cust in c.customers:
        assert len({by_addr[p.address] for p in cust.peers}) == 1
    assert set(by_addr.values()) == {0, 1, 2}


def test_auto_size() -> None:
    assert auto_processes(2, 10) == 1  # few sessions: one process, whatever the CPUs
    assert auto_processes(2, AUTO_MIN_SESSIONS) == 1  # 2 CPUs: one left to the daemon
    assert auto_processes(3, AUTO_MIN_SESSIONS) == 2
    assert auto_processes(16, 1000) == 4
    assert auto_processes(1, 1000) == 1
    assert process_count(parse_config(pool_config(3, "auto"))) == 1
    assert process_count(parse_config(pool_config(60, "auto")), cpu_count=8) == 4
    assert process_count(parse_config(pool_config(3, 2))) == 2


def test_each_process_writes_only_its_neighbours_0600(tmp_path: Path) -> None:
    c = parse_config(pool_config(6, 2))
    pool = SpeakerPool(c, tmp_path / "run", Inbox())
    texts = []
    for s in pool.speakers:
        s.write_config()
        assert stat.S_IMODE(s.conf_path.stat().st_mode) == 0o600
        assert s.socket_path.name == f"{s.name}.sock"
        texts.append(s.conf_path.read_text())
    for cust in c.customers:
        i = process_of(cust.name, 2)
        for p in cust.peers:
            assert f"neighbor {p.address} {{" in texts[i]
            assert f"neighbor {p.address} {{" not in texts[1 - i]
        assert pool.speaker_for(cust.peers[0].address).index == i
    # Each process's relay connects to its own socket.
    assert all(str(s.socket_path) in t for s, t in zip(pool.speakers, texts, strict=True))


def test_reload_signals_only_processes_whose_neighbours_changed(tmp_path: Path) -> None:
    d = pool_config(6, 2)
    old = parse_config(d)
    pool = SpeakerPool(old, tmp_path / "run", Inbox())
    d["customers"].pop(0)  # c0 leaves: only its process's text changes
    new = parse_config(d)
    gone = process_of("c0", 2)
    out = asyncio.run(pool.reload(new))
    assert out == {f"exabgp-{gone}": "configuration written (ExaBGP not running: read at its next start)"}


def test_count_change_moves_customers_and_the_plan_says_so(tmp_path: Path) -> None:
    from routing.daemon import reconfigure_event
    from routing.reload import plan_reload, running_config

    d = pool_config(8, 1)
    old = parse_config(d)
    d["exabgp"]["processes"] = 2
    new = parse_config(d)
    moved = {c.name for c in new.customers if process_of(c.name, 2) == 1}
    assert moved  # 8 customers: some go to the new process
    plan = plan_reload(old, new)
    assert "exabgp" not in plan.needs_restart  # the count is applied live
    assert plan.exabgp_processes_changed == ["exabgp-0", "exabgp-1"]
    resets = {s["customer"] for s in plan.sessions_reset}
    assert resets == moved
    assert all("moved from exabgp-0 to exabgp-1" in s["reasons"][0] for s in plan.sessions_reset)
    run = running_config(old, new)
    assert run.exabgp.processes == 2
    ev = reconfigure_event(1, old, run, plan, peer_processes(old), peer_processes(run))
    assert {a for a, i in ev.moves} == {p.address for c in new.customers if c.name in moved for p in c.peers}
    assert all(i == 1 for _a, i in ev.moves)

    pool = SpeakerPool(old, tmp_path / "run", Inbox())
    out = asyncio.run(pool.reload(run))
    assert out["exabgp-1"] == "started" and out["exabgp-0"].startswith("configuration written")
    p0, p1 = pool.speakers
    # Process 0's late "down" about a moved session must not reach the core.
    assert p0.foreign == {a for a, _i in ev.moves} and not p1.foreign & set(p1.peers)
    pool.speakers[1].channel.close()


def test_proc_times_of_a_running_process() -> None:
    import os

    from routing.views import proc_times

    cpu_s, uptime_s = proc_times(os.getpid())
    assert cpu_s is not None and cpu_s > 0 and uptime_s is not None and uptime_s >= 0
    assert proc_times(2**22 + 12345) == (None, None)
