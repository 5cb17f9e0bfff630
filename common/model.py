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
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from enum import IntEnum, StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

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


class Prefix6(_CachedHash, ipaddress.IPv6Network):
    pass


class Address4(_CachedHash, ipaddress.IPv4Address):
    __slots__ = ("_h",)


class Address6(_CachedHash, ipaddress.IPv6Address):
    __slots__ = ("_h",)


def parse_address(text: str) -> IPAddress:
    return Address6(text) if ":" in text else Address4(text)


#: "0".."32" -> the length: a dict probe accepts exactly the canonical decimal texts (``int()`` would
#: also take " 24", "+24", "2_4" and other scripts' digits).
_V4_PLEN = {str(n): n for n in range(33)}
_V4_NETMASKS = tuple(ipaddress.IPv4Address((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF) for n in range(33))
_V4_MASKS = tuple(int(m) for m in _V4_NETMASKS)
_new_address4 = ipaddress.IPv4Address.__new__
_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def _address4(ip: int) -> ipaddress.IPv4Address:
    """An ``IPv4Address`` from a valid integer without ``__init__``'s checks."""
    a = _new_address4(ipaddress.IPv4Address)
    a._ip = ip
    return a


#: Python's integer hash modulus (2**61 - 1 on 64-bit builds): ``hash(n) == n % _M`` for n >= 0.
_M = sys.hash_info.modulus
_new_int = int.__new__
#: The value of a /n with network ^ netmask == 0, by n (the parser adds the rest).
_PLEN_BASE = tuple((n + 1) * _M for n in range(33))


class Prefix4(int):
    """An IPv4 network that is one integer, and equals, hashes and orders like ``IPv4Network``.

    Why not ``ipaddress.IPv4Network``: its instances carry a ``__dict__`` and their own network
    address object, ~216 bytes per prefix, and a full table keeps a million of them (issue 12; the
    second-largest structure in ``benchmarks/fulltable_mem.py``). Why an ``int`` and not an object
    with two integer slots (80 bytes: the object and the network's own integer): one integer of three
    30-bit digits is 56 bytes, and its hash and equality are the C ones of ``int``, while every dict
    probe of a slotted object ran a Python ``__hash__`` and ``__eq__`` (issue 12: ~5 % of a 3-session
    ingest).

    The value is ``(length + 1) * M + (network ^ netmask)`` with ``M = sys.hash_info.modulus``: unique
    per (network, length), and its hash is ``network ^ netmask``, which is exactly
    ``IPv4Network.__hash__``, so both kinds meet in one dict. ``==`` is ``int``'s: between two of
    these, value equality is network equality; against an ``IPv4Network`` it returns NotImplemented and
    the network's own ``__eq__`` compares ``_version``, ``network_address`` and ``netmask`` (properties
    here). Ordering is by (network, length), as ``IPv4Network`` orders, not by the value. An ``int``
    that happens to equal the value compares equal: nothing here compares prefixes with integers.
    The attributes the code uses are properties computed when asked; anything else of
    ``IPv4Network``'s API is delegated to a real one built on the spot (:meth:`__getattr__`: rare paths
    only). ``tests/unit/test_model_parse.py`` checks the mix in sets, dicts, sorts and ``subnet_of``.
    """

    __slots__ = ()
    version = _version = 4
    max_prefixlen = _max_prefixlen = 32
    __hash__ = int.__hash__

    def __new__(cls, address: object, strict: bool = True) -> Prefix4:
        ref = ipaddress.IPv4Network(address, strict=strict)  # type: ignore[arg-type]
        return _prefix4_from_int(int(ref.network_address), ref.prefixlen)

    @property
    def prefixlen(self) -> int:
        return self // _M - 1

    _plen = prefixlen

    @property
    def _ip(self) -> int:
        return prefix_key(self)[1]

    @property
    def network_address(self) -> ipaddress.IPv4Address:
        return _address4(self._ip)

    @property
    def netmask(self) -> ipaddress.IPv4Address:
        return _V4_NETMASKS[self._plen]

    @property
    def hostmask(self) -> ipaddress.IPv4Address:
        return _address4(_V4_MASKS[self._plen] ^ 0xFFFFFFFF)

    @property
    def broadcast_address(self) -> ipaddress.IPv4Address:
        return _address4(self._ip | (_V4_MASKS[self._plen] ^ 0xFFFFFFFF))

    @property
    def num_addresses(self) -> int:
        return 1 << (32 - self._plen)

    @property
    def packed(self) -> bytes:
        """The network address in network byte order (what netlink and the XDP maps take)."""
        return self._ip.to_bytes(4, "big")

    @property
    def with_prefixlen(self) -> str:
        return self.__str__()

    def as_ipaddress(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((self._ip, self._plen))

    def __str__(self) -> str:
        ip = self._ip
        return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}/{self._plen}"

    def __repr__(self) -> str:
        return f"Prefix4('{self}')"

    def __format__(self, spec: str) -> str:
        return format(self.__str__(), spec) if spec else self.__str__()

    def __reduce__(self) -> tuple[object, tuple[int, int]]:
        return _prefix4_from_int, (self._ip, self._plen)

    def _other(self, other: object) -> tuple[int, int] | None:
        """(network, length) of another IPv4 network, None if it is not one."""
        if type(other) is Prefix4:
            _v, ip, plen = prefix_key(other)
            return ip, plen
        if isinstance(other, ipaddress.IPv4Network):
            return int(other.network_address), other.prefixlen
        return None

    def _order(self, other: object) -> tuple[int, int] | None:
        o = self._other(other)
        if o is None and isinstance(other, ipaddress.IPv6Network):
            raise TypeError(f"{self!r} and {other!r} are not of the same version")
        return o

    def __lt__(self, other: object) -> bool:
        o = self._order(other)
        return NotImplemented if o is None else (self._ip, self._plen) < o

    def __le__(self, other: object) -> bool:
        o = self._order(other)
        return NotImplemented if o is None else (self._ip, self._plen) <= o

    def __gt__(self, other: object) -> bool:
        o = self._order(other)
        return NotImplemented if o is None else (self._ip, self._plen) > o

    def __ge__(self, other: object) -> bool:
        o = self._order(other)
        return NotImplemented if o is None else (self._ip, self._plen) >= o

    def __contains__(self, other: object) -> bool:
        if isinstance(other, ipaddress.IPv4Address):
            return (other._ip & _V4_MASKS[self._plen]) == self._ip
        return False  # like IPv4Network: a network is never "in" another, addresses of v6 neither

    def subnet_of(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            raise TypeError(f"{self!r} and {other!r} are not of the same version")
        ip, plen = o
        return plen <= self._plen and (self._ip & _V4_MASKS[plen]) == ip

    def supernet_of(self, other: object) -> bool:
        o = self._other(other)
        if o is None:
            raise TypeError(f"{self!r} and {other!r} are not of the same version")
        ip, plen = o
        return self._plen <= plen and (ip & _V4_MASKS[self._plen]) == self._ip

    def overlaps(self, other: object) -> bool:
        return self.subnet_of(other) or self.supernet_of(other)

    def supernet(self, prefixlen_diff: int = 1, new_prefix: int | None = None) -> Prefix4:
        return _prefix4(self.as_ipaddress().supernet(prefixlen_diff, new_prefix))

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name in ("_ip", "_plen"):
            raise AttributeError(name)
        return getattr(self.as_ipaddress(), name)


#: A prefix anywhere in the routing core: what the parser makes (:class:`Prefix4`, :class:`Prefix6`)
#: and what config and tests hand in (plain :mod:`ipaddress` networks) mix freely.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network | Prefix4


def as_ipaddress(prefix: IPNetwork) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The plain :mod:`ipaddress` network for APIs that take only those (``collapse_addresses``)."""
    return prefix.as_ipaddress() if type(prefix) is Prefix4 else prefix  # type: ignore[union-attr,return-value]


def prefix_key(prefix: IPNetwork) -> tuple[int, int, int]:
    """(version, network as an integer, length): the key of the policy and ROV indexes. A
    :class:`Prefix4`'s value decodes to both integers (the one place that decodes it); a plain network
    builds them."""
    if type(prefix) is Prefix4:
        k, x = divmod(prefix, _M)
        return 4, x ^ _V4_MASKS[k - 1], k - 1
    return prefix.version, int(prefix.network_address), prefix.prefixlen


def _prefix4(net: ipaddress.IPv4Network) -> Prefix4:
    return _prefix4_from_int(int(net.network_address), net.prefixlen)


def _prefix4_from_int(ip: int, plen: int) -> Prefix4:
    """A :class:`Prefix4` from integers (host bits cleared here), without ``__init__``'s parsing."""
    mask = _V4_MASKS[plen]
    return _new_int(Prefix4, _PLEN_BASE[plen] + ((ip & mask) ^ mask))


def parse_prefix(text: str) -> IPNetwork:
    """Parse ``ADDR/LEN`` (host bits cleared) into a hash-caching prefix; ValueError if invalid.

    IPv4 takes a fast path (every prefix of a full table comes through here; :mod:`ipaddress`'s
    string parser was half of the daemon's CPU in a full-table ingest, a regular expression and five
    ``int()`` calls still ~2 us): the C library's ``inet_pton`` accepts exactly four decimal octets
    of at most 255 without leading zeros (POSIX), the length is looked up among "0".."32", and the
    prefix is built from the integers (~0.6 us). Anything else goes to :mod:`ipaddress`, which
    accepts or rejects it as before (``tests/unit/test_model_parse.py`` checks both agree).
    """
    if ":" in text:
        return Prefix6(text, strict=False)
    addr, _, plen = text.partition("/")
    n = _V4_PLEN.get(plen)
    if n is not None:
        try:
            packed = _inet_pton(_AF_INET, addr)
        except (OSError, ValueError):  # ValueError: an embedded NUL or a non-ASCII character
            pass
        else:
            mask = _V4_MASKS[n]
            return _new_int(Prefix4, _PLEN_BASE[n] + ((int.from_bytes(packed, "big") & mask) ^ mask))
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
    """Return the one shared instance equal to ``a``. The table holds every set seen since the last
    :func:`sweep_interned_attrs`, in use or not."""
    return _ATTRS.setdefault(a, a)


def interned_attrs() -> int:
    return len(_ATTRS)


#: References to an entry of :data:`_ATTRS` that nothing else holds, as :func:`sweep_interned_attrs`
#: counts them: the dict's key and value, the loop's local and ``getrefcount``'s own argument.
_TABLE_ONLY_REFS = 4
_getrefcount = getattr(sys, "getrefcount", None)


def sweep_interned_attrs(step: int = 5_000) -> Iterator[int]:
    """Drop the attribute sets that no path holds any more; yields after every ``step`` entries (the
    caller runs its loop in between) the number dropped so far.

    Why: sets are interned so that a table's million paths share a few thousand, but the table
    itself kept every set ever seen. A MED or AS path that changes makes a new set and leaves the old
    one behind: a long-running PoP under churn grew the table without bound (issue 12: the full-table
    benchmark, a MED per UPDATE, leaves 250,000 sets behind when the session goes). A set that only
    the table refers to has a reference count of :data:`_TABLE_ONLY_REFS` here, and nothing can take
    a new reference between the count and the delete: only the routing loop interns. Where the
    interpreter has no reference counts (PyPy) nothing is dropped.
    """
    if _getrefcount is None:
        return
    snap: list[Attributes | None] = list(_ATTRS)
    dropped = 0
    for start in range(0, len(snap), step):
        for i in range(start, min(start + step, len(snap))):
            a = snap[i]
            snap[i] = None  # the snapshot's reference must not count
            if _getrefcount(a) <= _TABLE_ONLY_REFS:
                del _ATTRS[a]  # type: ignore[arg-type]
                dropped += 1
        yield dropped


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


@dataclass(frozen=True)
class _PathFields:
    """:class:`Path`'s fields as a dataclass declares them: its constructor's parameters, what
    ``dataclasses.fields`` and ``dataclasses.replace`` see. Never instantiated."""

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


class PathSource:
    """What a path owes to its session and to import policy: peer, next hop, LOCAL_PREF, origin
    validation state, RTBH and prepend. Shared by every path with the same six values (a session's
    table has a handful): see :class:`Path`. Equal and hashing by value; not to be changed."""

    __slots__ = ("_hash", "local_pref", "nexthop", "peer", "prepend", "rpki", "rtbh")

    def __init__(self, peer: Peer, nexthop: IPAddress, local_pref: int, rpki: Validity | None, rtbh: bool,
                 prepend: int) -> None:
        self.peer, self.nexthop, self.local_pref = peer, nexthop, local_pref
        self.rpki, self.rtbh, self.prepend = rpki, rtbh, prepend
        self._hash = hash((peer, nexthop, local_pref, rpki, rtbh, prepend))

    def _values(self) -> tuple[Any, ...]:
        return (self.peer, self.nexthop, self.local_pref, self.rpki, self.rtbh, self.prepend)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not PathSource:
            return NotImplemented
        return self is other or self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return self._hash


#: Interned :class:`PathSource` objects, keyed by the identities of the peer, next-hop and validity
#: objects and the values of the rest. Identity is safe as a key: the source in the table holds those
#: objects, so their ids cannot be reused while it is there. Cleared past :data:`PATH_SOURCES_MAX`
#: (a table ever growing with peers come and gone would leak): sharing is lost, nothing else.
_SOURCES: dict[tuple[int, int, int, int, bool, int], PathSource] = {}
PATH_SOURCES_MAX = 100_000


def path_source(peer: Peer, nexthop: IPAddress, local_pref: int = 100, rpki: Validity | None = None,
                rtbh: bool = False, prepend: int = 0) -> PathSource:
    key = (id(peer), id(nexthop), local_pref, id(rpki), rtbh, prepend)
    src = _SOURCES.get(key)
    if src is None:
        if len(_SOURCES) >= PATH_SOURCES_MAX:
            _SOURCES.clear()
        src = _SOURCES[key] = PathSource(peer, nexthop, local_pref, rpki, rtbh, prepend)
    return src


class Path:
    """One received path after import policy: a prefix, its attribute set, and its
    :class:`PathSource`.

    Why not a frozen dataclass of the eight fields (what it was): a full table keeps one Path per
    prefix per session, and eight slots and a GC header made each 96 bytes. Six of the eight are the
    same for all of a session's paths but for a few policy outcomes, so they live in one shared
    :class:`PathSource`. Three slots make 64 bytes: 32 MB less per session at a million prefixes
    (issue 12). The dataclass API is kept: the same constructor, the eight fields as attributes
    (the six shared ones read through the source), ``dataclasses.fields``/``replace``/``asdict``,
    equality and hashing by the eight values, frozen, pickling. :func:`new_path` builds one at the
    cost of a plain object (``tests/unit/test_model_fast.py``)."""

    __slots__ = ("attrs", "prefix", "source")
    __dataclass_fields__ = _PathFields.__dataclass_fields__  # type: ignore[attr-defined]
    __dataclass_params__ = _PathFields.__dataclass_params__  # type: ignore[attr-defined]
    __match_args__ = ("prefix", "peer", "nexthop", "attrs", "local_pref", "rpki", "rtbh", "prepend")

    if TYPE_CHECKING:
        prefix: IPNetwork
        attrs: Attributes
        source: PathSource
        peer: Peer
        nexthop: IPAddress
        local_pref: int
        rpki: Validity | None
        rtbh: bool
        prepend: int
    else:
        peer = property(attrgetter("source.peer"))
        nexthop = property(attrgetter("source.nexthop"))
        local_pref = property(attrgetter("source.local_pref"))
        rpki = property(attrgetter("source.rpki"))
        rtbh = property(attrgetter("source.rtbh"))
        prepend = property(attrgetter("source.prepend"))

    def __init__(self, prefix: IPNetwork, peer: Peer, nexthop: IPAddress, attrs: Attributes, local_pref: int = 100,
                 rpki: Validity | None = None, rtbh: bool = False, prepend: int = 0) -> None:
        _set(self, "prefix", prefix)
        _set(self, "attrs", attrs)
        _set(self, "source", path_source(peer, nexthop, local_pref, rpki, rtbh, prepend))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Path:
            return NotImplemented
        return (self.prefix == other.prefix and self.attrs == other.attrs  # type: ignore[attr-defined]
                and self.source == other.source)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.prefix, self.attrs, self.source))

    def _values(self) -> tuple[Any, ...]:
        s = self.source
        return (self.prefix, s.peer, s.nexthop, self.attrs, s.local_pref, s.rpki, s.rtbh, s.prepend)

    def __repr__(self) -> str:
        return "Path(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.__match_args__, self._values(), strict=True)) + ")"

    def __reduce__(self) -> tuple[type[Path], tuple[Any, ...]]:
        return Path, self._values()


_set = object.__setattr__


class _PathBuilder:
    __slots__ = ("attrs", "prefix", "source")


def new_path(prefix: IPNetwork, peer: Peer, nexthop: IPAddress, attrs: Attributes, local_pref: int = 100,
             rpki: Validity | None = None, rtbh: bool = False, prepend: int = 0) -> Path:
    """``Path(...)`` at a plain slotted object's cost: built as a :class:`_PathBuilder`, which has
    the same slots, then made a Path by assigning ``__class__`` (as :func:`fast_constructor` does)."""
    return path_of(prefix, attrs, path_source(peer, nexthop, local_pref, rpki, rtbh, prepend))


def path_of(prefix: IPNetwork, attrs: Attributes, source: PathSource) -> Path:
    """A Path from its three parts (another prefix or source for an existing path's others), at
    :func:`new_path`'s cost."""
    o = _new_object(_PathBuilder)
    o.prefix = prefix
    o.attrs = attrs
    o.source = source
    o.__class__ = Path
    return o  # type: ignore[return-value]


_new_object = object.__new__


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


_V = TypeVar("_V")


def fast_constructor(cls: type[_V]) -> Callable[..., _V]:
    """A constructor for the frozen, slotted dataclass ``cls``, taking the same arguments, at less
    than the cost of a plain dataclass's.

    Why: a frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``
    (frozen classes refuse plain assignment): 645 ns for a :class:`Path` against 108 ns for the same
    fields unfrozen, measured here, and an ingest builds a Path, a FibEntry, a FibDiff and a route
    operation per prefix (issue 12). The constructor made here (generated, as ``dataclasses`` makes
    ``__init__``, with the same parameters and defaults) creates an instance of a plain slotted twin
    with the same fields in the same order, sets them, then makes it a ``cls`` by assigning
    ``__class__``, which Python allows exactly when both layouts are the same slots. From then on it
    is a genuine ``cls``: frozen, equal and hashing like one made by ``cls(...)``
    (``tests/unit/test_model_fast.py``). No ``__post_init__`` or field validation runs: only for
    classes that have none."""
    fs = fields(cls)  # type: ignore[arg-type]
    twin = type(f"_{cls.__name__}Builder", (), {"__slots__": tuple(f.name for f in fs)})
    if cls.__dict__.get("__slots__") != twin.__slots__ or cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__}: not a slotted dataclass of its own fields (no __class__ swap possible)")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: has __post_init__, which this constructor would skip")
    env: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    params: list[str] = []
    for f in fs:
        if f.default is not MISSING:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not MISSING:
            env[f"_f_{f.name}"] = f.default_factory
            env["_MISSING"] = MISSING
            params.append(f"{f.name}=_MISSING")
        else:
            params.append(f.name)
    body = ["    o = _new(_twin)"]
    for f in fs:
        if f.default_factory is not MISSING:
            body.append(f"    o.{f.name} = _f_{f.name}() if {f.name} is _MISSING else {f.name}")
        else:
            body.append(f"    o.{f.name} = {f.name}")
    body += ["    o.__class__ = _cls", "    return o"]
    src = f"def make({', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(src, env)  # generated from the dataclass's own field names, as dataclasses makes __init__
    make: Callable[..., _V] = env["make"]
    make.__doc__ = f"``{cls.__name__}(...)`` built at a plain slotted object's cost (:func:`fast_constructor`)."
    make.__qualname__ = f"new_{cls.__name__}"
    return make


new_fib_entry = fast_constructor(FibEntry)
new_fib_diff = fast_constructor(FibDiff)


def afi(prefix: IPNetwork) -> str:
    return "ipv4" if prefix.version == 4 else "ipv6"
