"""Builders for paths, policies and routing cores used across unit tests."""

from __future__ import annotations

import ipaddress

from common.model import Attributes, Origin, Path, Peer
from routing.config import Config, parse_config
from routing.core import PeerStatus, RoutingCore
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy
from routing.rib import Rib

CONFIG = {
    "router": {"asn": 65000, "router_id": "192.0.2.1", "announce": ["192.0.2.0/24", "2001:db8:ffff::/48"]},
    "customers": [
        {"name": "acme", "asn": 64512,
         "import": {"prefixes": ["203.0.113.0/24", "198.51.100.0/22 le 24", "2001:db8:100::/48"],
                    "max_prefixes": 100},
         "peers": [{"address": "10.0.1.2", "local_address": "10.0.1.1"},
                   {"address": "10.0.2.2", "local_address": "10.0.2.1"},
                   {"address": "2001:db8:1::2", "local_address": "2001:db8:1::1"}]},
        {"name": "globex", "asn": 4200000001,
         "import": {"prefixes": ["203.0.113.0/24", "2001:db8:200::/48"]},
         "peers": [{"address": "10.0.3.2", "local_address": "10.0.3.1"}]},
    ],
}


def config():
    return parse_config(CONFIG)


def policy(customer: int = 0) -> ImportPolicy:
    c = config()
    return ImportPolicy(c.router, c.customers[customer])


def peer(address: str = "10.0.1.2", customer: str = "acme", asn: int = 64512,
         router_id: str = "10.255.0.1", local_asn: int = 65000) -> Peer:
    return Peer(ipaddress.ip_address(address), customer, asn, local_asn, ipaddress.IPv4Address(router_id))


def path(prefix: str = "203.0.113.0/24", *, p: Peer | None = None, nexthop: str | None = None,
         as_path: tuple[int, ...] | None = None, origin: Origin = Origin.IGP, med: int | None = None,
         local_pref: int = 100) -> Path:
    p = p or peer()
    return Path(
        ipaddress.ip_network(prefix), p,
        ipaddress.ip_address(nexthop or str(p.address)),
        Attributes(origin=origin, as_path=as_path if as_path is not None else (p.asn,), med=med),
        local_pref,
    )


def customer_sessions(c: Config, rib: Rib, *, limits: bool = True, max_prefixes: int | None = None,
                      bfd: bool = False, strict: bool = False,
                      speakers: dict[str, int] | None = None) -> dict[ipaddress.IPv4Address, PeerStatus]:
    """Add every IPv4 customer session of ``c`` to ``rib`` and return their core statuses. The receive
    limit is the customer's (``max_prefixes`` overrides it; ``limits=False``: none)."""
    peers = {}
    for customer, pc in c.peers():
        if pc.address.version != 4:
            continue
        limit = (customer.import_.max_prefixes if max_prefixes is None else max_prefixes) if limits else None
        rib.add_peer(pc.address, ImportPolicy(c.router, customer), limit)
        peers[pc.address] = PeerStatus(pc.address, pc.local_address, customer.name, "ipv4",
                                       Peer(pc.address, customer.name, customer.asn, 65000),
                                       bfd=bfd, bfd_strict=strict,
                                       speaker=(speakers or {}).get(customer.name, 0))
    return peers


def session_up(core: RoutingCore, addr: ipaddress.IPv4Address, now: float = 1.0) -> list:
    """ExaBGP's connected + up for ``addr``; the core's actions."""
    return core.on_event(msg.StateEvent(addr, addr, "connected"), now) + \
        core.on_event(msg.StateEvent(addr, addr, "up"), now)


def drain(core: RoutingCore, budget: int = 2000) -> list:
    """Run the core's jobs to the end; every action they returned."""
    out = []
    while core.busy:
        out += core.work(budget)
    return out
