"""A small rtnetlink route codec and batching socket, for the FIB hot path.

Why our own and not pyroute2: pyroute2 0.9.7 adds about 1,000 routes/s (0.7 ms of CPU per route)
and dumps about 5,000/s, while the kernel accepts 100k+ routes/s when messages are packed ~1 MiB
per ``sendmsg`` without per-message acks (measured on this machine; see ``benchmarks/``). It also
has no nexthop objects and drops ``RTA_NH_ID``. Links, addresses and neighbours are read here too;
pyroute2 is left to the BFD transport (one address lookup, off every hot path) and to tests, whose
independent parser checks what we build.

Theory of operation
-------------------
- Wire layout is declared once as :mod:`struct` formats (``NLMSGHDR``, ``RTMSG``, ``RTATTR``,
  ``RTNEXTHOP``) and attribute ids; every message is built from them. The route hot path packs a
  whole message with one struct derived from those declarations (:func:`route_encoder`, the only
  RTM_NEWROUTE encoder for unicast routes).
- Decoding is table-driven, like pyroute2's ``nla_map``: each message family is a
  :class:`MessageDecl` (types, fixed header, attribute id -> field and reader) and one walker,
  :func:`_walk`, is the only attribute loop. A message or attribute we do not declare is skipped.
- :meth:`RouteSocket.apply` sends a batch of messages with consecutive sequence numbers, only the
  last one carrying ``NLM_F_ACK``. The kernel still answers every *failed* message with an
  ``NLMSG_ERROR`` carrying its sequence number, and processes a socket's messages in order, so the
  ack of the last one is a barrier: once it arrives, every error of the batch has arrived too.
  Errors are matched back to the operations by sequence number.
- Ownership: every route we write carries ``rtm_protocol = fib.protocol`` and our metric; deletes
  carry the protocol too, and the kernel refuses to delete a route of another protocol with it
  (``fib_table_delete``/``ip6_route_del`` compare it), so we cannot remove what we do not own.
- Dumps are parsed with the same declarations and filtered on protocol and table.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import functools
import ipaddress
import os
import socket
import struct
import sys
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.model import IPAddress, IPNetwork, Prefix4, prefix_key

# --- declarations (linux/netlink.h, linux/rtnetlink.h) ---------------------------------------------
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")  # len, type
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex
NLMSGERR = struct.Struct("=i")

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RTA_NEWDST = 19
RTA_ENCAP_TYPE = 21
RTA_ENCAP = 22
RTA_NH_ID = 30

RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106
NHMSG = struct.Struct("=BBBBI")  # family, scope, protocol, resvd, flags
NEXTHOP_GRP = struct.Struct("=IBBH")  # id, weight - 1, resvd1, resvd2
NHA_ID = 1
NHA_GROUP = 2
NHA_GROUP_TYPE = 3
NHA_OIF = 5
NHA_GATEWAY = 6
NHA_ENCAP_TYPE = 7
NHA_ENCAP = 8
LWTUNNEL_ENCAP_MPLS = 1
MPLS_IPTUNNEL_DST = 1
AF_MPLS = 28

RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RT_TABLE_COMPAT = 252

SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

# Links, neighbours and addresses (linux/if_link.h, linux/neighbour.h, linux/if_addr.h) and the
# multicast groups we listen to.
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFLA_ADDRESS = 1
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDA_DST = 1
NDA_LLADDR = 2
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTNLGRP_NEXTHOP = 32
NETLINK_ADD_MEMBERSHIP = 1

MAX_BATCH_BYTES = 1 << 20
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")
_BE32 = struct.Struct("!I")


def _align(n: int) -> int:
    return (n + 3) & ~3


# --- encoding --------------------------------------------------------------------------------------
def _rta(kind: int, data: bytes) -> bytes:
    n = RTATTR.size + len(data)
    return RTATTR.pack(n, kind) + data + b"\0" * (_align(n) - n)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _rta(kind | 0x8000, b"".join(attrs))  # NLA_F_NESTED


def _message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One netlink message: the NLMSGHDR every encoder (but the route hot path) puts in front."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def _create_flags(replace: bool) -> int:
    """NLM_F_EXCL unless replacing: the kernel's replace matches a route on prefix, tos and metric only,
    *not* on protocol, so replacing what we have not installed ourselves could overwrite another
    protocol's route; the writer replaces only what it knows it owns."""
    return NLM_F_REQUEST | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route as the kernel holds it (parsed from a dump), reduced to what we manage."""

    prefix: IPNetwork
    nexthops: tuple[IPAddress, ...]
    protocol: int
    table: int
    metric: int
    oifs: tuple[int, ...] = ()
    nhid: int = 0
    #: An ``RTN_BLACKHOLE`` route (RTBH): no next hop, the kernel drops what it matches.
    blackhole: bool = False


@dataclass(frozen=True, slots=True)
class KernelNexthop:
    """A nexthop object or group as the kernel holds it."""

    id: int
    protocol: int
    gateway: IPAddress | None = None
    oif: int = 0
    #: Group members as (nexthop id, weight); empty for a plain nexthop.
    group: tuple[tuple[int, int], ...] = ()
    labels: tuple[int, ...] = ()


def mpls_label_stack(labels: Sequence[int], ttl: int = 0) -> bytes:
    """RFC 3032 label stack entries: label(20) | TC(3) | S(1) | TTL(8), bottom of stack last."""
    out = b""
    for i, label in enumerate(labels):
        if not 0 <= label < 1 << 20:
            raise ValueError(f"MPLS label {label} out of range")
        out += struct.pack("!I", (label << 12) | ((1 if i == len(labels) - 1 else 0) << 8) | ttl)
    return out


def encode_nexthop(
    seq: int, nhid: int, gateway: IPAddress, oif: int, *, protocol: int, replace: bool = False,
    labels: Sequence[int] = (),
) -> bytes:
    """RTM_NEWNEXTHOP for one gateway on one interface, optionally with an MPLS push (kernel MPLS)."""
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    attrs = [_rta(NHA_ID, _U32.pack(nhid)), _rta(NHA_OIF, _U32.pack(oif)), _rta(NHA_GATEWAY, gateway.packed)]
    if labels:
        attrs += [_rta(NHA_ENCAP_TYPE, _U16.pack(LWTUNNEL_ENCAP_MPLS)),
                  _nested(NHA_ENCAP, _rta(MPLS_IPTUNNEL_DST, mpls_label_stack(labels)))]
    payload = NHMSG.pack(family, 0, protocol, 0, 0) + b"".join(attrs)
    return _message(RTM_NEWNEXTHOP, _create_flags(replace), seq, payload)


def encode_group(seq: int, nhid: int, members: Sequence[int], *, protocol: int, replace: bool = False) -> bytes:
    """RTM_NEWNEXTHOP for a multipath group of nexthop ids (equal weights). Replacing a group's members
    moves every route that points at it in one message (prefix-independent failover)."""
    grp = b"".join(NEXTHOP_GRP.pack(m, 0, 0, 0) for m in members)
    payload = NHMSG.pack(socket.AF_UNSPEC, 0, protocol, 0, 0) + _rta(NHA_ID, _U32.pack(nhid)) + _rta(NHA_GROUP, grp)
    return _message(RTM_NEWNEXTHOP, _create_flags(replace), seq, payload)


def encode_del_nexthop(seq: int, nhid: int) -> bytes:
    """RTM_DELNEXTHOP by id (the kernel refuses it while a route still points at the object)."""
    payload = NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _rta(NHA_ID, _U32.pack(nhid))
    return _message(RTM_DELNEXTHOP, NLM_F_REQUEST, seq, payload)


# The route hot path: a whole RTM_NEWROUTE/RTM_DELROUTE (NLMSGHDR, RTMSG, RTA_DST, then u32
# attributes RTA_TABLE, RTA_PRIORITY and, for a new route, RTA_NH_ID) as *one* struct, derived from
# the declarations above: one pack per route instead of one per part (~1M calls for a full table).
# The address attribute needs no padding (4 + 4 and 4 + 16 bytes are multiples of 4).
def _route_layout(addr_len: int, u32_attrs: int) -> struct.Struct:
    parts = [NLMSGHDR.format, RTMSG.format, RTATTR.format + f"{addr_len}s"] + [RTATTR.format + "I"] * u32_attrs
    return struct.Struct("=" + "".join(p.lstrip("=") for p in parts))


_ROUTE4_NH, _ROUTE6_NH = _route_layout(4, 3), _route_layout(16, 3)
_ROUTE4_DEL, _ROUTE6_DEL = _route_layout(4, 2), _route_layout(16, 2)


def route_encoder(*, protocol: int, table: int, metric: int) -> Callable[[int, IPNetwork, int, bool], bytes]:
    """The one RTM_NEWROUTE encoder (routes on a nexthop object or group, ``RTA_NH_ID``), with the
    per-table constants bound once: the writer's hot loop calls it once per route (a million times
    for a full table), and keyword handling and constant lookups cost as much as the packing itself.
    ``replace=False`` creates exclusively (see :func:`_create_flags`)."""
    rtm_table = table if table < 256 else RT_TABLE_COMPAT
    pack4, size4 = _ROUTE4_NH.pack, _ROUTE4_NH.size
    pack6, size6 = _ROUTE6_NH.pack, _ROUTE6_NH.size
    f_new, f_replace = _create_flags(False), _create_flags(True)
    inet, inet6, new, scope, unicast = socket.AF_INET, socket.AF_INET6, RTM_NEWROUTE, RT_SCOPE_UNIVERSE, RTN_UNICAST
    dst_a, table_a, prio_a, nhid_a = RTA_DST, RTA_TABLE, RTA_PRIORITY, RTA_NH_ID

    def encode(seq: int, prefix: IPNetwork, nhid: int, replace: bool) -> bytes:
        if type(prefix) is Prefix4:  # a parsed prefix: both integers without an address object
            _v, ip, plen = prefix_key(prefix)
            return pack4(size4, new, f_replace if replace else f_new, seq, 0, inet, plen, 0, 0,
                         rtm_table, protocol, scope, unicast, 0, 8, dst_a, ip.to_bytes(4, "big"),
                         8, table_a, table, 8, prio_a, metric, 8, nhid_a, nhid)
        dst = prefix.network_address.packed
        if len(dst) == 4:
            return pack4(size4, new, f_replace if replace else f_new, seq, 0, inet, prefix.prefixlen, 0, 0,
                         rtm_table, protocol, scope, unicast, 0, 8, dst_a, dst,
                         8, table_a, table, 8, prio_a, metric, 8, nhid_a, nhid)
        return pack6(size6, new, f_replace if replace else f_new, seq, 0, inet6, prefix.prefixlen, 0, 0,
                     rtm_table, protocol, scope, unicast, 0, 20, dst_a, dst,
                     8, table_a, table, 8, prio_a, metric, 8, nhid_a, nhid)

    return encode


#: :func:`encode_route_nhid`'s encoders by (protocol, table, metric): binding costs more than packing.
_bound_route_encoder = functools.lru_cache(maxsize=64)(
    lambda protocol, table, metric: route_encoder(protocol=protocol, table=table, metric=metric))


def encode_route_nhid(
    op: int, seq: int, prefix: IPNetwork, nhid: int, *, protocol: int, table: int, metric: int, replace: bool = True,
    rtm_type: int = RTN_UNICAST,
) -> bytes:
    """RTM_NEWROUTE pointing at a nexthop object or group (RTA_NH_ID), or the RTM_DELROUTE of that
    route (the same message without RTA_NH_ID: the kernel matches prefix, table, metric, protocol and,
    for IPv4, the route type: deleting a blackhole route needs ``rtm_type=RTN_BLACKHOLE``)."""
    if op == RTM_NEWROUTE:
        return _bound_route_encoder(protocol, table, metric)(seq, prefix, nhid, replace)
    return _route_without_nh(op, NLM_F_REQUEST, seq, prefix, protocol=protocol, table=table, metric=metric,
                             rtm_type=rtm_type)


def _route_without_nh(op: int, flags: int, seq: int, prefix: IPNetwork, *, protocol: int, table: int, metric: int,
                      rtm_type: int) -> bytes:
    v4 = prefix.version == 4
    st = _ROUTE4_DEL if v4 else _ROUTE6_DEL
    family, dst_len = (socket.AF_INET, 8) if v4 else (socket.AF_INET6, 20)
    return st.pack(st.size, op, flags, seq, 0, family, prefix.prefixlen, 0, 0,
                   table if table < 256 else RT_TABLE_COMPAT, protocol, RT_SCOPE_UNIVERSE, rtm_type, 0,
                   dst_len, RTA_DST, prefix.network_address.packed, 8, RTA_TABLE, table, 8, RTA_PRIORITY, metric)


def encode_blackhole_route(seq: int, prefix: IPNetwork, *, protocol: int, table: int, metric: int,
                           replace: bool) -> bytes:
    """RTM_NEWROUTE of type RTN_BLACKHOLE (RTBH, RFC 7999): no nexthop, the kernel drops silently.
    Same prefix, table, metric and protocol as our unicast routes, so a replace turns one into the
    other in place (the kernel's replace matches prefix, tos and metric)."""
    return _route_without_nh(RTM_NEWROUTE, _create_flags(replace), seq, prefix, protocol=protocol, table=table,
                             metric=metric, rtm_type=RTN_BLACKHOLE)


def _mpls_route_header(protocol: int) -> bytes:
    return RTMSG.pack(AF_MPLS, 20, 0, 0, 254, protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)


def encode_mpls_route(seq: int, in_label: int, out_labels: Sequence[int], via: IPAddress, oif: int, *,
                      protocol: int) -> bytes:
    """An incoming-label route (AF_MPLS): swap ``in_label`` for ``out_labels`` (empty: pop) towards ``via``."""
    fam = socket.AF_INET if via.version == 4 else socket.AF_INET6
    attrs = _rta(RTA_DST, mpls_label_stack([in_label]))
    if out_labels:
        attrs += _rta(RTA_NEWDST, mpls_label_stack(out_labels))
    attrs += _rta(RTA_VIA, _U16.pack(fam) + via.packed) + _rta(RTA_OIF, _U32.pack(oif))
    return _message(RTM_NEWROUTE, _create_flags(True), seq, _mpls_route_header(protocol) + attrs)


def encode_del_mpls_route(seq: int, in_label: int, *, protocol: int) -> bytes:
    payload = _mpls_route_header(protocol) + _rta(RTA_DST, mpls_label_stack([in_label]))
    return _message(RTM_DELROUTE, NLM_F_REQUEST, seq, payload)


# --- decoding: one attribute walker, each message kind declared as data ----------------------------
# Like pyroute2's ``nla_map``: a message declaration names the message types it parses, its fixed
# header (a struct and its field names) and, per attribute id, the field the attribute fills and the
# reader of its payload. :func:`_walk` is the only attribute loop; a decoder turns the parsed fields
# into our value types. Attributes not declared are skipped; a repeated attribute keeps its last
# value; a truncated attribute ends the walk (the kernel never sends one).
#: Reads one attribute's payload, ``buf[start:end]``, in place (no slice per attribute: a dump
#: parses millions of them); ``family`` is the message's address family.
Reader = Callable[[bytes, int, int, int], Any]
NlaMap = Mapping[int, tuple[str, Reader]]
_RTA_HDR = RTATTR.size
_rta_unpack = RTATTR.unpack_from


def _walk(buf: bytes, off: int, end: int, nla_map: NlaMap, family: int) -> dict[str, Any]:
    """The fields of the attributes from ``off`` to ``end`` that ``nla_map`` declares: the one
    attribute loop of every decoder."""
    out: dict[str, Any] = {}
    get = nla_map.get
    while off + _RTA_HDR <= end:
        n, kind = _rta_unpack(buf, off)
        if n < _RTA_HDR or off + n > end:
            break
        spec = get(kind & 0x3FFF)
        if spec is not None:
            out[spec[0]] = spec[1](buf, off + _RTA_HDR, off + n, family)
        off += (n + 3) & ~3
    return out


def _u32(buf: bytes, start: int, _end: int, _family: int) -> int:
    return _U32.unpack_from(buf, start)[0]


def _i32(buf: bytes, start: int, _end: int, _family: int) -> int:
    return _I32.unpack_from(buf, start)[0]


def _raw(buf: bytes, start: int, end: int, _family: int) -> bytes:
    return bytes(buf[start:end])


def _addr_bytes(buf: bytes, start: int, end: int, family: int) -> bytes:
    return bytes(buf[start: min(end, start + (4 if family == socket.AF_INET else 16))])


def _addr(buf: bytes, start: int, end: int, family: int) -> IPAddress | None:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(bytes(buf[start:start + 4]))
    if family == socket.AF_INET6:
        return ipaddress.IPv6Address(bytes(buf[start:start + 16]))
    return None


def _labels(buf: bytes, start: int, end: int, _family: int) -> tuple[int, ...]:
    return tuple(x >> 12 for (x,) in _BE32.iter_unpack(buf[start: start + (end - start) // 4 * 4]))


def _nh_group(buf: bytes, start: int, end: int, _family: int) -> tuple[tuple[int, int], ...]:
    data = buf[start: start + (end - start) // NEXTHOP_GRP.size * NEXTHOP_GRP.size]
    return tuple((m[0], m[1] + 1) for m in NEXTHOP_GRP.iter_unpack(data))


def _nested_map(nla_map: NlaMap) -> Reader:
    return lambda buf, start, end, family: _walk(buf, start, end, nla_map, family)


def _multipath(buf: bytes, start: int, end: int, family: int) -> list[tuple[int, dict[str, Any]]]:
    """RTA_MULTIPATH: a run of (struct rtnexthop, its own attributes), as (ifindex, attributes)."""
    hops, off = [], start
    while off + RTNEXTHOP.size <= end:
        ln, _flags, _hops, ifindex = RTNEXTHOP.unpack_from(buf, off)
        if ln < RTNEXTHOP.size:
            break
        hops.append((ifindex, _walk(buf, off + RTNEXTHOP.size, min(off + ln, end), _RTNH_NLA, family)))
        off += _align(ln)
    return hops


_RTNH_NLA: NlaMap = {RTA_GATEWAY: ("gateway", _addr)}


@dataclass(frozen=True, slots=True)
class MessageDecl:
    """How one family of rtnetlink messages is laid out after its NLMSGHDR."""

    kinds: frozenset[int]
    header: struct.Struct
    #: Names of ``header``'s fields; the first is always the address family.
    fields: Any  # a namedtuple class
    nla_map: NlaMap


def _decl(kinds: set[int], header: struct.Struct, fields: str, nla_map: NlaMap) -> MessageDecl:
    return MessageDecl(frozenset(kinds), header, namedtuple("Header", fields), nla_map)


ROUTE_MSG = _decl({RTM_NEWROUTE, RTM_DELROUTE}, RTMSG, "family dst_len src_len tos table protocol scope type flags", {
    RTA_DST: ("dst", _addr_bytes), RTA_OIF: ("oif", _i32), RTA_GATEWAY: ("gateway", _addr),
    RTA_PRIORITY: ("metric", _u32), RTA_MULTIPATH: ("multipath", _multipath), RTA_TABLE: ("table", _u32),
    RTA_NH_ID: ("nhid", _u32),
})
NEXTHOP_MSG = _decl({RTM_NEWNEXTHOP, RTM_DELNEXTHOP}, NHMSG, "family scope protocol resvd flags", {
    NHA_ID: ("id", _u32), NHA_GROUP: ("group", _nh_group), NHA_OIF: ("oif", _u32), NHA_GATEWAY: ("gateway", _addr),
    NHA_ENCAP: ("encap", _nested_map({MPLS_IPTUNNEL_DST: ("labels", _labels)})),
})
ADDR_MSG = _decl({RTM_NEWADDR, RTM_DELADDR}, IFADDRMSG, "family prefixlen flags scope index", {
    IFA_ADDRESS: ("address", _addr), IFA_LOCAL: ("local", _addr),
})
NEIGH_MSG = _decl({RTM_NEWNEIGH, RTM_DELNEIGH}, NDMSG, "family ifindex state flags type", {
    NDA_DST: ("dst", _addr), NDA_LLADDR: ("lladdr", _raw),
})
LINK_MSG = _decl({RTM_NEWLINK, RTM_DELLINK}, IFINFOMSG, "family type index flags change", {
    IFLA_ADDRESS: ("address", _raw),
})


def _parse(decl: MessageDecl, msg: bytes, *, attributes: bool = True) -> tuple[int, Any, dict[str, Any]] | None:
    """(message type, header fields, attribute fields) of ``msg``, or None if ``decl`` is not its kind."""
    kind = NLMSGHDR.unpack_from(msg, 0)[1]
    if kind not in decl.kinds or len(msg) < NLMSGHDR.size + decl.header.size:
        return None
    hdr = decl.fields._make(decl.header.unpack_from(msg, NLMSGHDR.size))
    attrs = _walk(msg, NLMSGHDR.size + decl.header.size, len(msg), decl.nla_map, hdr.family) if attributes else {}
    return kind, hdr, attrs


def decode_nexthop(msg: bytes) -> KernelNexthop | None:
    p = _parse(NEXTHOP_MSG, msg)
    if p is None:
        return None
    _kind, hdr, a = p
    labels = a["encap"].get("labels", ()) if "encap" in a else ()
    return KernelNexthop(a.get("id", 0), hdr.protocol, a.get("gateway"), a.get("oif", 0), a.get("group", ()), labels)


def _decode_route(msg: bytes, kinds: frozenset[int]) -> KernelRoute | None:
    p = _parse(ROUTE_MSG, msg)
    if p is None or p[0] not in kinds:
        return None
    _kind, hdr, a = p
    if hdr.type not in (RTN_UNICAST, RTN_BLACKHOLE) or hdr.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    gws = [a["gateway"]] if "gateway" in a else []
    oifs = [a["oif"]] if "oif" in a else []
    for ifindex, hop in a.get("multipath", ()):
        oifs.append(ifindex)
        if "gateway" in hop:
            gws.append(hop["gateway"])
    net = ipaddress.IPv4Network if hdr.family == socket.AF_INET else ipaddress.IPv6Network
    prefix = net((int.from_bytes(a.get("dst", b""), "big"), hdr.dst_len))
    return KernelRoute(prefix, tuple(sorted(gws, key=int)), hdr.protocol, a.get("table", hdr.table),
                       a.get("metric", 0), tuple(oifs), a.get("nhid", 0), hdr.type == RTN_BLACKHOLE)


_NEW_ROUTE = frozenset({RTM_NEWROUTE})


def decode_route(msg: bytes) -> KernelRoute | None:
    """Parse one RTM_NEWROUTE message (header included); None for anything we do not manage."""
    return _decode_route(msg, _NEW_ROUTE)


def decode_route_any(msg: bytes) -> KernelRoute | None:
    """Like decode_route, for RTM_DELROUTE notifications too."""
    return _decode_route(msg, ROUTE_MSG.kinds)


@dataclass(frozen=True, slots=True)
class BatchResult:
    #: (index in the batch, errno) for every message the kernel refused.
    errors: list[tuple[int, int]]
    messages: int


def _buffers(s: socket.socket, size: int, *, send: bool) -> None:
    """Large socket buffers: SO_RCVBUFFORCE/SO_SNDBUFFORCE as root, the capped plain options otherwise."""
    pairs = [(33, socket.SO_RCVBUF)] + ([(32, socket.SO_SNDBUF)] if send else [])
    for force, plain in pairs:
        try:
            s.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, size)


class RouteSocket:
    """A NETLINK_ROUTE socket in the calling thread's network namespace, for batches and dumps.

    Not thread-safe: one writer owns it (the FIB dataplane's drain task runs its batches in a
    worker thread one at a time).
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        _buffers(self.sock, 8 << 20, send=True)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass
        self.sock.bind((0, 0))
        self._seq = int.from_bytes(os.urandom(2), "big") << 8

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def apply(self, messages: Sequence[bytes], *, sequenced: bool = False) -> BatchResult:
        """Send already-encoded messages and collect errors, matched back by sequence number.

        ``sequenced``: each message already carries its index in the batch as its sequence number
        (the writer encodes it at plan time), so this thread only joins and sends: no per-message
        Python loop holding the GIL while the event loop plans the next batch. Otherwise the seq
        fields are rewritten here. The batch is consumed up to its barrier (the acked last message)
        before returning, so the next batch on this socket never sees a stale reply.
        """
        if not messages:
            return BatchResult([], 0)
        n = len(messages)
        buf = bytearray(b"".join(messages))
        if sequenced:
            first = 0
            last_off = len(buf) - len(messages[-1])
        else:
            first = (self._seq + 1) & 0xFFFFFFFF or 1
            if first + n > 0xFFFFFFFF:
                first = 1
            self._seq = first + n - 1
            pack_into = _U32.pack_into
            off = 0
            for seq, m in enumerate(messages, first):
                pack_into(buf, off + 8, seq)
                off += len(m)
            last_off = off - len(messages[-1])
        last_seq = (first + n - 1) & 0xFFFFFFFF
        (flags,) = _U16.unpack_from(buf, last_off + 6)
        _U16.pack_into(buf, last_off + 6, flags | NLM_F_ACK)
        view = memoryview(buf)
        if len(buf) <= MAX_BATCH_BYTES:
            self.sock.sendall(view)
        else:  # cut at message boundaries into sends of at most MAX_BATCH_BYTES
            off = cut = 0
            for m in messages:
                if off + len(m) - cut > MAX_BATCH_BYTES:
                    self.sock.sendall(view[cut:off])
                    cut = off
                off += len(m)
            self.sock.sendall(view[cut:off])
        errors: list[tuple[int, int]] = []
        while True:
            done = False
            for kind, msg in split_messages(self.sock.recv(1 << 20)):
                if kind != NLMSG_ERROR:
                    continue
                seq = NLMSGHDR.unpack_from(msg, 0)[3]
                (err,) = NLMSGERR.unpack_from(msg, NLMSGHDR.size)
                idx = (seq - first) & 0xFFFFFFFF
                if err and idx < n:
                    errors.append((idx, -err))
                if seq == last_seq:
                    done = True
            if done:
                return BatchResult(errors, n)

    def dump_routes(self, family: int = socket.AF_UNSPEC) -> list[KernelRoute]:
        return self._dump(RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), decode_route)

    def dump_nexthops(self) -> list[KernelNexthop]:
        return self._dump(RTM_GETNEXTHOP, NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), decode_nexthop)

    def dump_neighbours(self) -> list[tuple[IPAddress, int, int, bytes]]:
        """(address, ifindex, NUD state, link-layer address) of every neighbour entry."""
        return self._dump(RTM_GETNEIGH, NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), decode_neighbour)

    def dump_addresses(self) -> list[tuple[IPAddress, int]]:
        """(address, ifindex) of every address configured in the namespace (the router's own)."""
        return self._dump(RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), _decode_addr)

    def dump_link_macs(self) -> dict[int, bytes]:
        return dict(self._dump(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), _decode_link_mac))

    def route_get(self, dst: IPAddress) -> tuple[int, IPAddress | None]:
        """The kernel's forwarding decision for ``dst``: (output interface index, gateway or None)."""
        seq = self.next_seq()
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        body = RTMSG.pack(family, dst.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + _rta(RTA_DST, dst.packed)
        self.sock.sendall(_message(RTM_GETROUTE, NLM_F_REQUEST, seq, body))
        for _kind, msg in self._replies(seq):
            p = _parse(ROUTE_MSG, msg)
            if p is not None and p[0] == RTM_NEWROUTE:
                return p[2].get("oif", 0), p[2].get("gateway")
        raise OSError(errno_mod.ENOENT, "no route")

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """The kernel's answers to request ``seq`` until NLMSG_DONE or an ack; errors raise OSError."""
        while True:
            data = self.sock.recv(1 << 20)
            for kind, msg in split_messages(data):
                if NLMSGHDR.unpack_from(msg, 0)[3] != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (err,) = NLMSGERR.unpack_from(msg, NLMSGHDR.size)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                yield kind, msg

    def _dump(self, kind: int, req: bytes, decoder):  # type: ignore[no-untyped-def]
        seq = self.next_seq()
        self.sock.sendall(_message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, req))
        out: list = []
        for _kind, msg in self._replies(seq):
            r = decoder(msg)
            if r is not None:
                out.append(r)
        return out

    def dump_owned(self, protocol: int, table: int) -> list[KernelRoute]:
        return [r for r in self.dump_routes() if r.protocol == protocol and r.table == table]


def _notification_socket(groups: int, rcvbuf: int) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                      socket.NETLINK_ROUTE)
    _buffers(s, rcvbuf, send=False)
    s.bind((0, groups))
    return s


def monitor_socket() -> socket.socket:
    """A non-blocking socket receiving link, route and nexthop notifications (for drift detection)."""
    s = _notification_socket(RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE, 16 << 20)
    s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
    return s


_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27


class OwnRouteFilter:
    """A classic BPF socket filter that drops, in the kernel, the RTM_NEWROUTE notifications of one
    route protocol (ours) before they reach a notification socket.

    Why: every route we write comes back to the FIB monitor as a notification, a million for a full
    table, and receiving and skipping them was ~6 % of the daemon's CPU in a 1M ingest (issue 12).
    The dataplane attaches this while it has batches in the kernel, which is exactly when the
    monitor treats such notifications as our own and skips them anyway; deletions and other
    protocols' routes still pass. The kernel runs a socket's filter when it queues a broadcast, and a
    route's notification is queued while the request that made it is processed, before its ack: a
    notification of a batch whose ack has arrived cannot reach the socket after the filter is gone.

    Program (loads from a message's start; netlink sends one notification per datagram):
    ``ldh [4]`` (nlmsg_type, read big-endian by BPF, so the constant is byte-swapped on little-endian
    hosts); ``jeq RTM_NEWROUTE``; ``ldb [21]`` (rtm_protocol: 16-byte header + 5); ``jeq protocol``:
    drop, else keep the whole datagram.
    """

    def __init__(self, protocol: int) -> None:
        newroute = int.from_bytes(RTM_NEWROUTE.to_bytes(2, sys.byteorder), "big")
        insns = [
            (0x28, 0, 0, 4),           # ldh [4]
            (0x15, 0, 3, newroute),    # jeq #RTM_NEWROUTE, next, keep
            (0x30, 0, 0, 21),          # ldb [21]
            (0x15, 0, 1, protocol),    # jeq #protocol, drop, keep
            (0x06, 0, 0, 0),           # drop
            (0x06, 0, 0, 0xFFFFFFFF),  # keep
        ]
        self._code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
        self._prog = struct.pack("@HP", len(insns), ctypes.addressof(self._code))  # struct sock_fprog

    def attach(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, self._prog)

    @staticmethod
    def detach(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)


def split_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + NLMSGHDR.size <= len(data):
        n, kind, _f, _s, _p = NLMSGHDR.unpack_from(data, off)
        if n < NLMSGHDR.size:
            return
        yield kind, data[off: off + n]
        off += _align(n)


def neighbour_monitor_socket() -> socket.socket:
    """A non-blocking socket receiving neighbour and address notifications (for the XDP nexthop MACs
    and the router's own addresses, which XDP must hand to the kernel)."""
    return _notification_socket(RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, 4 << 20)


def _decode_addr(msg: bytes) -> tuple[IPAddress, int] | None:
    p = _parse(ADDR_MSG, msg)
    if p is None:
        return None
    _kind, hdr, a = p
    addr = a.get("local", a.get("address"))  # IFA_LOCAL is ours on point-to-point links
    return (addr, hdr.index) if addr is not None else None


def decode_neighbour(msg: bytes) -> tuple[IPAddress, int, int, bytes] | None:
    """(address, ifindex, NUD state, lladdr) of an RTM_NEWNEIGH/RTM_DELNEIGH; state 0 for a delete.
    (A dump only answers with RTM_NEWNEIGH.)"""
    p = _parse(NEIGH_MSG, msg)
    if p is None or p[2].get("dst") is None:
        return None
    kind, hdr, a = p
    if kind == RTM_DELNEIGH:
        return a["dst"], hdr.ifindex, 0, b""
    return a["dst"], hdr.ifindex, hdr.state, a.get("lladdr", b"")


def _decode_link_mac(msg: bytes) -> tuple[int, bytes] | None:
    p = _parse(LINK_MSG, msg)
    if p is None or p[0] != RTM_NEWLINK or "address" not in p[2]:
        return None
    return p[1].index, p[2]["address"]


def decode_link_state(msg: bytes) -> tuple[int, bool] | None:
    """(ifindex, usable) from RTM_NEWLINK/RTM_DELLINK: usable = administratively up with carrier."""
    p = _parse(LINK_MSG, msg, attributes=False)
    if p is None:
        return None
    kind, hdr, _a = p
    return hdr.index, kind == RTM_NEWLINK and bool(hdr.flags & IFF_UP) and bool(hdr.flags & IFF_LOWER_UP)


def errno_name(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))
