"""Raw UPDATEs (``exabgp.updates: raw``, the default) against a peer that sends what we tell it to.

A two-node lab written here: ``pop`` runs pop-router (ExaBGP through the lean reactor launcher, which
passes UPDATEs on undecoded), ``rogue`` is a BGP speaker written in this file (a listening socket in
the node's namespace: ExaBGP connects to it), so the bytes of each UPDATE are exactly the test's.
Checked, in order, on one session:

- a well-formed UPDATE reaches the kernel, and the launcher reports it passed UPDATEs on undecoded;
- an UPDATE whose COMMUNITIES attribute is 6 bytes long (RFC 7606 7.8: treat-as-withdraw) withdraws
  the prefix it carries, which was installed, and the session stays up; the metric counts it;
- an UPDATE with a /33 in its NLRI (RFC 7606 5.3: session reset) makes ExaBGP send NOTIFICATION
  UPDATE Message Error / Invalid Network Field (3/10) and close: the routes of the session leave the
  kernel and the metric counts it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from common.netns import netns
from labs.runner import Lab

from .lab import kernel_routes, metric_value, metrics, running, show
from .netns import wait_for

ROGUE, POP = "10.0.3.2", "10.0.3.1"
ROGUE_AS = 4200000002  # four octets: the OPEN carries AS_TRANS and capability 65
PREFIX = "203.0.113.0/24"

POP_YAML: dict[str, Any] = {
    "router": {"asn": 65000, "router_id": "192.0.2.1"},
    "api": {"socket": "/run/pop-router/api.sock"},
    "fib": {"protocol": 200},
    "exabgp": {"updates": "raw"},
    "customers": [{"name": "rogue", "asn": ROGUE_AS, "import": {"prefixes": ["203.0.113.0/24"]},
                   "peers": [{"address": ROGUE, "local_address": POP}]}],
}

TOPOLOGY = {
    "name": "rawupd",
    "topology": {
        "defaults": {"kind": "linux"},
        "nodes": {
            "pop": {"image": "pop-router:latest", "binds": ["pop.yaml:/etc/pop-router/pop.yaml"],
                    "exec": [f"ip addr add {POP}/30 dev eth1"]},
            "rogue": {"image": "alpine:latest", "exec": [f"ip addr add {ROGUE}/30 dev eth1"]},
        },
        "links": [{"endpoints": ["pop:eth1", "rogue:eth1"]}],
    },
}


def message(kind: int, body: bytes = b"") -> bytes:
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def attribute(flags: int, code: int, value: bytes) -> bytes:
    return bytes([flags, code, len(value)]) + value


def update(nlri: bytes, *extra: bytes) -> bytes:
    """An UPDATE body announcing ``nlri`` (already encoded) from the rogue AS, next hop the rogue."""
    attrs = (attribute(0x40, 1, b"\x00") + attribute(0x40, 2, b"\x02\x01" + ROGUE_AS.to_bytes(4, "big"))
             + attribute(0x40, 3, socket.inet_aton(ROGUE)) + b"".join(extra))
    return struct.pack("!HH", 0, len(attrs)) + attrs + nlri


NLRI_24 = b"\x18\xcb\x00\x71"  # 203.0.113.0/24


class Rogue:
    """One BGP session, accepted in the rogue node's namespace: OPEN, KEEPALIVEs, then whatever the
    test sends; everything received is kept (the NOTIFICATION is what the last test looks for)."""

    def __init__(self, ns_path: str) -> None:
        with netns(ns_path):
            self.server = socket.create_server((ROGUE, 179))
        self.server.settimeout(60)
        self.received: list[tuple[int, bytes]] = []
        self.closed = threading.Event()
        self.conn: socket.socket | None = None
        self._lock = threading.Lock()

    def establish(self) -> None:
        conn, _ = self.server.accept()
        conn.settimeout(None)
        self.conn = conn
        caps = bytes([2, 6, 1, 4, 0, 1, 0, 1]) + bytes([2, 6, 65, 4]) + ROGUE_AS.to_bytes(4, "big")
        self.send(1, struct.pack("!BHH4sB", 4, 23456, 90, socket.inet_aton(ROGUE), len(caps)) + caps)
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: any(k == 1 for k, _ in self.received), timeout=30, what="ExaBGP's OPEN")
        self.send(4)
        threading.Thread(target=self._keepalives, daemon=True).start()

    def send(self, kind: int, body: bytes = b"") -> None:
        assert self.conn is not None
        with self._lock:
            self.conn.sendall(message(kind, body))

    def _keepalives(self) -> None:
        while not self.closed.wait(5):
            with contextlib.suppress(OSError):
                self.send(4)

    def _read(self) -> None:
        assert self.conn is not None
        buf = b""
        while True:
            try:
                data = self.conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed.set()
                return
            buf += data
            while len(buf) >= 19 and len(buf) >= (n := struct.unpack("!H", buf[16:18])[0]):
                self.received.append((buf[18], buf[19:n]))
                buf = buf[n:]

    def close(self) -> None:
        self.closed.set()
        for s in (self.conn, self.server):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Rogue]]:
    d = tmp_path_factory.mktemp("rawupd")
    d.chmod(0o755)
    (d / "pop.yaml").write_text(yaml.safe_dump(POP_YAML))
    (d / "rawupd.clab.yml").write_text(yaml.safe_dump(TOPOLOGY))
    with running(d / "rawupd.clab.yml", "rawupd") as lab:
        rogue = Rogue(f"/proc/{lab.holder_pid('rogue')}/ns/net")
        try:
            rogue.establish()
            wait_for(lambda: state(lab) == "established", timeout=30, what="the session Established")
            yield lab, rogue
        finally:
            rogue.close()


def state(lab: Lab) -> str | None:
    return next((p["state"] for p in show(lab, "peers") if p["peer"] == ROGUE), None)


def installed(lab: Lab) -> bool:
    return PREFIX in kernel_routes(lab)


def errors(lab: Lab, action: str) -> float:
    return metric_value(metrics(lab), "pop_router_bgp_update_errors_total", peer=ROGUE, action=action) or 0.0


def test_a_raw_update_reaches_the_kernel(lab: tuple[Lab, Rogue]) -> None:
    pop, rogue = lab
    rogue.send(2, update(NLRI_24))
    wait_for(lambda: installed(pop), timeout=10, what=f"{PREFIX} in the kernel")

    def raw() -> dict[str, Any]:
        (process,) = show(pop, "status")["exabgp_processes"]
        return process["lean_reactor"]["raw_updates"]

    # the launcher rewrites its report at most every 2 s
    wait_for(lambda: raw()["passed"] >= 1, timeout=10, interval=0.5, what="the launcher reporting raw UPDATEs")
    assert raw()["active"] is True and raw()["decoded"] == {}, raw()


def test_a_malformed_community_withdraws_and_the_session_stays(lab: tuple[Lab, Rogue]) -> None:
    pop, rogue = lab
    if not installed(pop):
        rogue.send(2, update(NLRI_24))
        wait_for(lambda: installed(pop), timeout=10, what=f"{PREFIX} in the kernel")
    before = errors(pop, "treat_as_withdraw")
    rogue.send(2, update(NLRI_24, attribute(0xC0, 8, b"\xfd\xe8\x00\x01\x00\x02")))  # 6 bytes: not n x 4
    wait_for(lambda: not installed(pop), timeout=10, what=f"{PREFIX} withdrawn (treat-as-withdraw)")
    assert errors(pop, "treat_as_withdraw") == before + 1
    time.sleep(1)  # poll: a reset would take ExaBGP a pass or two
    assert state(pop) == "established" and not rogue.closed.is_set()
    assert not any(k == 3 for k, _ in rogue.received), "a NOTIFICATION for a treat-as-withdraw error"


def test_an_unparseable_nlri_resets_the_session_with_3_10(lab: tuple[Lab, Rogue]) -> None:
    pop, rogue = lab
    rogue.send(2, update(NLRI_24))
    wait_for(lambda: installed(pop), timeout=10, what=f"{PREFIX} in the kernel")
    rogue.send(2, update(NLRI_24 + b"\x21\xcb\x00\x71\x80\x01"))  # then a /33
    wait_for(rogue.closed.is_set, timeout=15, what="ExaBGP closing the session")
    notifications = [body for kind, body in rogue.received if kind == 3]
    assert notifications and notifications[-1][:2] == b"\x03\x0a", notifications
    wait_for(lambda: not installed(pop), timeout=10, what="the session's routes flushed")
    assert errors(pop, "session_reset") >= 1

