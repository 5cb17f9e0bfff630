"""Value types shared by the routing core: paths, attributes, FIB entries and diffs.

Theory of operation
-------------------
Everything here is immutable and hashable. A :class:`Path` is one peer's announcement of one
prefix after parsing; attribute sets are interned (:func:`intern_attrs`) because a full table
repeats a few thousand distinct attribute sets across a million prefixes, and sharing them keeps the
Adj-RIB-In at a few hundred bytes per path.

The table talks to its consumers only through :class:`FibDiff` values ``(prefix, old, new)``
(BIRD's ``rt_notify(new, old)``): the FIB never scans the RIB.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _CachedHash:
    """Computes the hash of an :mod:`ipaddress` object once.

    ``IPv4Network.__hash__`` recomputes ``int(addr) ^ int(mask)`` and ``IPv4Address.__hash__`` is
    ``hash(hex(int(self._ip)))`` on every dict operation; a prefix and its next hops go through about
    fifteen of those between the wire and the kernel (~20 % of the ingest CPU). Instances stay equal
    to, and hash like, the plain ipaddress objects.
    """

    __slots__ = ()

    def __hash__(self) -> int:
        try:
            return self._h  # type: ignore[attr-defined,has-type]
        except AttributeError:
            self._h = h = super().__hash__()  # type: ignore[misc]
            return h


class Prefix4(_CachedHash, ipaddress.IPv4Network):
    pass


class Prefix6(_CachedHash, ipaddress.IPv6Network):
    pass


class Address4(_CachedHash, ipaddress.IPv4Address):
    __slots__ = ("_h",)


class Address6(_CachedHash, ipaddress.IPv6Address):
    __slots__ = ("_h",)


def parse_address(text: str) -> IPAddress:
    return Address6(text) if ":" in text else Address4(text)


_OCTET = r"(0|[1-9][0-9]{0,2})"
_V4_PREFIX = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/([0-9]{{1,2}})")
_V4_NETMASKS = tuple(ipaddress.IPv4Address((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF) for n in range(33))


def _prefix4_from_int(ip: int, plen: int) -> Prefix4:
    """Build a :class:`Prefix4` without ``IPv4Network.__init__`` (its argument parsing is most of the
    cost): the three attributes that define a network, as ``__init__`` sets them. Checked against
    :mod:`ipaddress` at import (:func:`_fast_v4_ok`); if a Python release changes the layout, the
    fast path switches itself off."""
    p = object.__new__(Prefix4)
    p.network_address = ipaddress.IPv4Address(ip & int(_V4_NETMASKS[plen]))
    p.netmask = _V4_NETMASKS[plen]
    p._prefixlen = plen
    return p


def _fast_v4_ok() -> bool:
    try:
        for ip, plen in ((0, 0), (0xC0000201, 24), (0x0A000001, 32), (0xFFFFFFFF, 1)):
            fast, ref = _prefix4_from_int(ip, plen), ipaddress.IPv4Network((ip, plen), strict=False)
            same = (fast == ref and hash(fast) == hash(ref) and str(fast) == str(ref)
                    and fast.broadcast_address == ref.broadcast_address and fast.num_addresses == ref.num_addresses)
            if not same or (plen and fast.supernet() != ref.supernet()):
                return False
        return True
    except Exception:  # any surprise means: do not use the fast path
        return False


_FAST_V4 = _fast_v4_ok()


def parse_prefix(text: str) -> IPNetwork:
    """Parse ``ADDR/LEN`` (host bits cleared) into a hash-caching prefix; ValueError if invalid.

    IPv4 takes a fast path (it was half of the daemon's CPU in a full-table ingest through
    :mod:`ipaddress`'s string parser, and one packed UPDATE is a loop step): four decimal octets
    without leading zeros and a length, matched by one regular expression, become a prefix built
    from integers. Anything else goes to :mod:`ipaddress`, which accepts or rejects it as before.
    """
    if ":" in text:
        return Prefix6(text, strict=False)
    m = _V4_PREFIX.fullmatch(text) if _FAST_V4 else None
    if m is not None:
        a, b, c, d, n = (int(x) for x in m.groups())
        if a <= 255 and b <= 255 and c <= 255 and d <= 255 and n <= 32:
            return _prefix4_from_int((a << 24) | (b << 16) | (c << 8) | d, n)
    return Prefix4(text, strict=False)


class Origin(IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


@dataclass(frozen=True, slots=True)
class Attributes:
    origin: Origin = Origin.IGP
    as_path: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    #: Extended communities (RFC 4360), each the 8-byte value as an integer (type byte first).
    ext_communities: tuple[int, ...] = ()
    #: MPLS label stack from labeled unicast (RFC 8277), outermost first.
    labels: tuple[int, ...] = ()
    #: The AS_PATH's last segment was an AS_SET (``as_path`` flattens a set to one hop), so the
    #: route has no single origin AS (RFC 6811 §2 "NONE").
    as_set_last: bool = False

    @property
    def origin_as(self) -> int | None:
        """The origin AS of RFC 6811 §2: the last AS of an AS_SEQUENCE; None for an AS_SET or an
        empty path (our own routes), which no VRP matches."""
        if self.as_set_last or not self.as_path:
            return None
        return self.as_path[-1]


_ATTRS: dict[Attributes, Attributes] = {}


def intern_attrs(a: Attributes) -> Attributes:
    """Return the one shared instance equal to ``a`` (the cache is bounded by distinct sets)."""
    return _ATTRS.setdefault(a, a)


_NO_ROUTER_ID = ipaddress.IPv4Address(0)


@dataclass(frozen=True, slots=True)
class Peer:
    """What the decision process needs to know about the session a path came from."""

    address: IPAddress
    customer: str
    asn: int
    local_asn: int
    router_id: ipaddress.IPv4Address = _NO_ROUTER_ID

    @property
    def ibgp(self) -> bool:
        return self.asn == self.local_asn


class Validity(StrEnum):
    """RFC 6811 §2 route origin validation states (shared by ``rpki/`` and the RIB)."""

    VALID = "valid"
    INVALID = "invalid"
    NOT_FOUND = "not_found"


#: Well-known communities (RFC 1997, RFC 7999).
NO_EXPORT = (65535, 65281)
NO_ADVERTISE = (65535, 65282)
BLACKHOLE = (65535, 666)


@dataclass(frozen=True, slots=True)
class Path:
    prefix: IPNetwork
    peer: Peer
    nexthop: IPAddress
    attrs: Attributes
    #: LOCAL_PREF after import policy (eBGP paths carry none on the wire).
    local_pref: int = 100
    #: Origin validation state (RFC 6811) when a validator is configured; None: not validated.
    rpki: Validity | None = None
    #: Accepted as a remotely triggered blackhole (RFC 7999): traffic to the prefix is dropped here.
    rtbh: bool = False
    #: Times to prepend the customer's AS towards the backbone (an action community asked for it).
    prepend: int = 0


@dataclass(frozen=True, slots=True)
class FibEntry:
    """What the kernel should hold for a prefix: a set of next hops (ECMP when more than one)."""

    prefix: IPNetwork
    nexthops: tuple[IPAddress, ...]
    labels: tuple[int, ...] = field(default=())
    #: Next hops to use if every primary one dies: the next-best path on another link or router.
    backup: tuple[IPAddress, ...] = field(default=())
    #: Labels to push towards the backup next hops (the backup path's own, RFC 8277 or policy).
    backup_labels: tuple[int, ...] = field(default=())
    #: Drop traffic to the prefix (RTBH, RFC 7999): a kernel ``blackhole`` route and an XDP drop
    #: entry; ``nexthops`` is then empty.
    blackhole: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class FibDiff:
    prefix: IPNetwork
    old: FibEntry | None
    new: FibEntry | None


def afi(prefix: IPNetwork) -> str:
    return "ipv4" if prefix.version == 4 else "ipv6"
