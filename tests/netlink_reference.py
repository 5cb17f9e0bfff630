"""Reference encoders for tests: rtnetlink messages built attribute by attribute, independently of
the writer's packed fast path in :mod:`fib.netlink` (which is checked against them), and plain
``via`` routes (RTA_GATEWAY / RTA_MULTIPATH) that the daemon never writes but tests need to set up
routes of their own on a real kernel.

Deliberately written without the production helpers: an oracle that shared the fast path's code
would agree with its bugs.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from common.model import IPAddress, IPNetwork
from fib.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_COMPAT,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_NH_ID,
    RTA_PRIORITY,
    RTA_TABLE,
    RTM_NEWROUTE,
    RTN_UNICAST,
)


def _rta(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def _route(op: int, seq: int, prefix: IPNetwork, *, protocol: int, table: int, metric: int, flags: int,
           tail: bytes) -> bytes:
    family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
    body = struct.pack("=BBBBBBBBI", family, prefix.prefixlen, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                       protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    attrs = _rta(RTA_DST, prefix.network_address.packed) + _rta(RTA_TABLE, struct.pack("=I", table)) + \
        _rta(RTA_PRIORITY, struct.pack("=I", metric)) + tail
    payload = body + attrs
    return struct.pack("=IHHII", 16 + len(payload), op, flags, seq, 0) + payload


def encode_route_nhid_reference(
    op: int, seq: int, prefix: IPNetwork, nhid: int, *, protocol: int, table: int, metric: int, replace: bool = True,
) -> bytes:
    """What :func:`fib.netlink.encode_route_nhid` and :func:`fib.netlink.route_encoder` must build."""
    flags = NLM_F_REQUEST
    tail = b""
    if op == RTM_NEWROUTE:
        flags |= NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        tail = _rta(RTA_NH_ID, struct.pack("=I", nhid))
    return _route(op, seq, prefix, protocol=protocol, table=table, metric=metric, flags=flags, tail=tail)


def encode_route(
    op: int, seq: int, prefix: IPNetwork, nexthops: Sequence[IPAddress], *, protocol: int, table: int, metric: int,
    ack: bool = False, replace: bool = True,
) -> bytes:
    """A route on gateways (one RTA_GATEWAY, or RTA_MULTIPATH for several), the way `ip route` writes one."""
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    tail = b""
    if op == RTM_NEWROUTE:
        flags |= NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        if len(nexthops) == 1:
            tail = _rta(RTA_GATEWAY, nexthops[0].packed)
        elif nexthops:
            mp = b""
            for nh in nexthops:
                gw = _rta(RTA_GATEWAY, nh.packed)
                mp += struct.pack("=HBBi", 8 + len(gw), 0, 0, 0) + gw
            tail = _rta(RTA_MULTIPATH, mp)
    return _route(op, seq, prefix, protocol=protocol, table=table, metric=metric, flags=flags, tail=tail)
