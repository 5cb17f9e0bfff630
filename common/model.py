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
from dataclasses import dataclass, field
from enum import IntEnum

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


def parse_prefix(text: str) -> IPNetwork:
    """Parse ``ADDR/LEN`` (host bits cleared) into a hash-caching prefix; ValueError if invalid.

    IPv4 takes a fast path (it is half of the daemon's CPU in a full-table ingest through
    :mod:`ipaddress`'s string parser): four decimal octets and a length become an ``(int, len)``
    tuple, which ``IPv4Network`` accepts without parsing. Anything unusual (leading zeros, missing
    parts) goes to :mod:`ipaddress`, which accepts or rejects it as before.
    """
    if ":" in text:
        return Prefix6(text, strict=False)
    addr, sep, plen = text.partition("/")
    parts = addr.split(".")
    if (sep and len(parts) == 4 and plen.isdigit() and len(plen) <= 2
            and all(p.isdigit() and 0 < len(p) <= 3 and (p[0] != "0" or p == "0") for p in parts)):
        a, b, c, d = (int(p) for p in parts)
        n = int(plen)
        if a <= 255 and b <= 255 and c <= 255 and d <= 255 and n <= 32:
            ip = (a << 24) | (b << 16) | (c << 8) | d
            return Prefix4((ip & ((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF), n))
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
    #: MPLS label stack from labeled unicast (RFC 8277), outermost first.
    labels: tuple[int, ...] = ()


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


@dataclass(frozen=True, slots=True)
class Path:
    prefix: IPNetwork
    peer: Peer
    nexthop: IPAddress
    attrs: Attributes
    #: LOCAL_PREF after import policy (eBGP paths carry none on the wire).
    local_pref: int = 100


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


@dataclass(frozen=True, slots=True)
class FibDiff:
    prefix: IPNetwork
    old: FibEntry | None
    new: FibEntry | None


def afi(prefix: IPNetwork) -> str:
    return "ipv4" if prefix.version == 4 else "ipv6"
