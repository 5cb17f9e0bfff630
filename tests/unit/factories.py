"""Builders for paths and policies used across unit tests."""

from __future__ import annotations

import ipaddress

from common.model import Attributes, Origin, Path, Peer
from routing.config import parse_config
from routing.policy import ImportPolicy

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
