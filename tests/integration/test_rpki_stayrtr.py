"""The RTR client against Debian's real stayrtr, in a fresh network namespace.

stayrtr serves a VRP JSON file on 127.0.0.1 inside the namespace and re-reads it every second
(``-refresh 1``); our client's socket is created inside that namespace (``common.netns``), the rest
of the test runs in the host's. Checked: the initial set; an edit of the file reaches the client
through Serial Notify -> Serial Query with no Reset Query and no reconnect (the refresh interval is
30 s, so only the notify can explain it in time); after stayrtr is killed the VRPs stay until the
expire interval (12 s) has passed since the last update, then go. A second test runs stayrtr at
protocol version 0 and checks the client falls back.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from common.netns import netns
from rpki.client import CacheConfig, RpkiClients
from rpki.model import Vrp, make_vrp
from rpki.session import SessionConfig, TimerLimits
from rpki.vrp import EffectiveChange

from .netns import unique_prefix

PORT = 8282
REFRESH_S, RETRY_S, EXPIRE_S = 30, 1, 12
LIMITS = TimerLimits(refresh_s=(1, 86400), retry_s=(1, 7200), expire_s=(1, 172800))

INITIAL = [("192.0.2.0/24", 24, 64496), ("198.51.100.0/22", 24, 64497), ("2001:db8::/32", 48, 64498)]
EDITED = [("192.0.2.0/24", 24, 64496), ("203.0.113.0/24", 24, 64499), ("2001:db8::/32", 48, 64498)]


def write_vrps(path: Path, roas: list[tuple[str, int, int]]) -> None:
    doc = {"metadata": {"generated": int(time.time())},
           "roas": [{"prefix": p, "maxLength": ml, "asn": f"AS{asn}", "ta": "test"} for p, ml, asn in roas]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # stayrtr never reads a half-written file


def as_vrps(roas: list[tuple[str, int, int]]) -> frozenset[Vrp]:
    return frozenset(make_vrp(p, ml, asn) for p, ml, asn in roas)


async def poll(fn: Callable[[], object], *, within_s: float, what: str) -> None:
    """Poll for a state (FRR topotests' run_and_expect), never a fixed sleep."""
    deadline = time.monotonic() + within_s
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)  # poll


class Stayrtr:
    def __init__(self, ns: str, vrp_file: Path, protocol: int | None = None) -> None:
        self.ns, self.vrp_file = ns, vrp_file
        args = ["ip", "netns", "exec", ns, "stayrtr", "-bind", f"127.0.0.1:{PORT}", "-cache", str(vrp_file),
                "-refresh", "1", "-checktime=false", "-metrics.addr", "127.0.0.1:9847",
                "-rtr.refresh", str(REFRESH_S), "-rtr.retry", str(RETRY_S), "-rtr.expire", str(EXPIRE_S)]
        if protocol is not None:
            args += ["-protocol", str(protocol)]
        self.log = vrp_file.with_suffix(".log").open("w")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its pid
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.log.close()


@pytest.fixture
async def rtr_ns() -> AsyncIterator[str]:
    if not shutil.which("stayrtr"):
        pytest.fail("stayrtr is not installed (make test installs it: Makefile DEBS)")
    name = unique_prefix("rtr")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def connector(ns: str):  # type: ignore[no-untyped-def]
    async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with netns(ns):  # the socket belongs to the namespace it is created in
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)
    return connect


async def start(ns: str, changes: list[EffectiveChange]) -> tuple[RpkiClients, asyncio.Task[None]]:
    clients = RpkiClients([CacheConfig("127.0.0.1", PORT, preference=1)], changes.append,
                          session_cfg=SessionConfig(limits=LIMITS), connect=connector(ns), backoff_s=0.2,
                          backoff_max_s=1.0)
    return clients, asyncio.create_task(clients.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def test_follows_stayrtr_notify_and_keeps_vrps_until_expire(rtr_ns: str, tmp_path: Path) -> None:
    vrp_file = tmp_path / "vrps.json"
    write_vrps(vrp_file, INITIAL)
    server = Stayrtr(rtr_ns, vrp_file)
    changes: list[EffectiveChange] = []
    clients, task = await start(rtr_ns, changes)
    client = clients.clients[0]
    sess = client.session
    try:
        await poll(lambda: clients.table.effective == as_vrps(INITIAL), within_s=20, what="the initial VRP set")
        m = clients.metrics()
        assert m.cache_up == {"127.0.0.1:8282": 1} and m.vrps == {"ipv4": 2, "ipv6": 1}
        assert sess.version == 1 and (sess.refresh_s, sess.retry_s, sess.expire_s) == (REFRESH_S, RETRY_S, EXPIRE_S)
        serial, connects, resets = sess.serial, client.connects, sess.queries_sent["reset"]

        write_vrps(vrp_file, EDITED)
        await poll(lambda: clients.table.effective == as_vrps(EDITED), within_s=15, what="the edited VRP set")
        assert sess.serial is not None and serial is not None and sess.serial > serial
        assert client.connects == connects and sess.queries_sent["reset"] == resets, "followed without a reset"
        assert sess.queries_sent["serial"] >= 1
        last = changes[-1]
        assert last.announced == {make_vrp("203.0.113.0/24", 24, 64499)}
        assert last.withdrawn == {make_vrp("198.51.100.0/22", 24, 64497)}
        assert [str(r.network()) for r in last.affected()] == ["198.51.100.0/22", "203.0.113.0/24"]
        assert clients.table.validate("198.51.100.0/24", 64497) == "not_found"
        assert clients.table.validate("203.0.113.0/24", 64499) == "valid"
        assert clients.table.validate("203.0.113.0/24", 64500) == "invalid"

        # The cache goes away: its VRPs stay until EXPIRE_S after the last update, then go.
        server.kill()
        await poll(lambda: clients.metrics().cache_up == {"127.0.0.1:8282": 0}, within_s=10, what="cache down")
        assert clients.table.effective == as_vrps(EDITED)
        assert sess.last_update is not None
        expires = sess.last_update + EXPIRE_S
        loop = asyncio.get_running_loop()
        await poll(lambda: not clients.table.effective, within_s=EXPIRE_S + 10, what="expiry")
        assert loop.time() >= expires - 0.05
        assert clients.metrics().vrps == {"ipv4": 0, "ipv6": 0} and sess.serial is None
    finally:
        await stop(task)
        server.kill()


async def test_falls_back_to_version_0(rtr_ns: str, tmp_path: Path) -> None:
    vrp_file = tmp_path / "vrps.json"
    write_vrps(vrp_file, INITIAL)
    server = Stayrtr(rtr_ns, vrp_file, protocol=0)
    clients, task = await start(rtr_ns, [])
    try:
        await poll(lambda: clients.table.effective == as_vrps(INITIAL), within_s=20, what="the VRP set over v0")
        sess = clients.clients[0].session
        assert sess.version == 0
        assert (sess.refresh_s, sess.retry_s, sess.expire_s) == (3600, 600, 7200)  # v0: our defaults
    finally:
        await stop(task)
        server.kill()
