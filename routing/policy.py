"""Import and export policy: pure functions from a path to a path or a rejection.

Theory of operation
-------------------
A customer's import policy is a channel filter (BIRD's ``in_filter``): ``apply(path)`` returns the
path to install (with LOCAL_PREF set) or a :class:`Rejection` naming the rule that refused it. The
checks run in a fixed order so that the reason an operator sees is the most fundamental one:

1. ``default_route`` — 0.0.0.0/0 and ::/0 are never accepted from a customer;
2. ``bogon`` — the prefix overlaps martian/bogon space (``router.bogons``);
3. ``too_specific`` — longer than ``router.max_prefix_length_v4``/``_v6`` (/24, /48);
4. ``not_in_prefix_list`` — no rule of the customer's ``import.prefixes`` matches (``ge``/``le``);
4b. ``rpki_invalid`` — the path's origin validation state (RFC 6811, set by the RIB from the VRPs
   before policy runs, :meth:`routing.rib.Rib.validated`) is ``invalid`` and the customer's RPKI
   mode is ``reject-invalid``; ``tag-only`` keeps the path with its state, ``off`` drops the state;
5. ``first_as_mismatch`` — AS_PATH does not start with the customer's ASN (RFC 4271 §6.3);
6. ``own_as_in_path`` — our ASN appears in the AS_PATH (a loop);
7. ``community_rejected`` — the path carries a community of ``import.reject_communities``;
8. ``invalid_nexthop`` — the next hop is not a usable unicast address of the prefix's family.

A path carrying ``BLACKHOLE`` (65535:666, RFC 7999) is a remotely triggered blackhole request and
takes its own rules instead of 3., 4. and 8.: ``rtbh_not_allowed`` unless the customer has
``import.rtbh``; ``not_in_prefix_list`` unless it lies inside one of the customer's rule prefixes
(at any length: a /32 inside ``198.51.100.0/22 le 24``); ``too_specific`` beyond
``router.rtbh_max_length_v4``/``_v6``. The next hop is not checked (we drop, we never forward to
it). An accepted one has :attr:`Path.rtbh` set; the RIB turns it into a blackhole FIB entry.

Action communities (the customer steers its own traffic; README "Communities" is the public page)
live in our ASN's namespace: standard ``ASN:70|80|90`` (2-byte ASNs only) or large ``ASN:1:LP`` set
LOCAL_PREF to that value if it is *lower* than the customer's (a customer marks its backup link, so
the failover groups get the right primary); standard ``ASN:101..103`` or large ``ASN:2:N`` (N 1..3)
prepend the customer's AS that many times towards the backbone (:attr:`Path.prepend`). A
customer's communities in our namespace are never passed on (:meth:`ImportPolicy.communities_out`
scrubs them, then adds the informational ones of the router, the customer and the session), so a
customer cannot forge the tags other routers of the network act on. The stored path keeps the
attributes exactly as received: a reload re-runs the new policy on what the customer sent.

``max_prefixes`` is a session limit, not a per-path rule: the RIB enforces it
(:class:`routing.rib.AdjRibIn`) and the daemon tears the session down with Cease subcode 1.

Invariant (tested with hypothesis): a prefix that no rule of the customer's list matches is never
accepted, whatever its attributes.

Prefix arithmetic uses integers, not :mod:`ipaddress` methods: the policy runs once per received
prefix, a million times for a full table.
"""

from __future__ import annotations

import functools
import ipaddress
from bisect import bisect_right
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from common.model import (
    BLACKHOLE,
    Attributes,
    IPAddress,
    IPNetwork,
    Path,
    Validity,
    intern_attrs,
    path_of,
    path_source,
    prefix_key,
)
from routing.config import CustomerConfig, PrefixRule, RouterConfig, parse_community

#: A customer's effective RPKI mode (``Config.customer_rpki``).
RpkiMode = Literal["reject-invalid", "tag-only", "off"]


class RejectReason(StrEnum):
    DEFAULT_ROUTE = "default_route"
    BOGON = "bogon"
    TOO_SPECIFIC = "too_specific"
    NOT_IN_PREFIX_LIST = "not_in_prefix_list"
    FIRST_AS_MISMATCH = "first_as_mismatch"
    OWN_AS_IN_PATH = "own_as_in_path"
    INVALID_NEXTHOP = "invalid_nexthop"
    MAX_PREFIXES = "max_prefixes"
    COMMUNITY_REJECTED = "community_rejected"
    RTBH_NOT_ALLOWED = "rtbh_not_allowed"
    RPKI_INVALID = "rpki_invalid"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str = ""


_Key = tuple[int, int, int]  # (version, network as int, prefix length)


_key = prefix_key


def _covers(outer: _Key, inner: _Key) -> bool:
    """True if ``inner`` lies within ``outer`` (same family, longer or equal length)."""
    v, a, la = outer
    w, b, lb = inner
    if v != w or lb < la:
        return False
    bits = 32 if v == 4 else 128
    shift = bits - la
    return (a >> shift) == (b >> shift)


#: Per IP version and prefix length: the host bits (a prefix's last address is its network | these).
_HOST_MASK = {4: tuple((1 << (32 - n)) - 1 for n in range(33)), 6: tuple((1 << (128 - n)) - 1 for n in range(129))}


def _overlaps(x: _Key, y: _Key) -> bool:
    return _covers(x, y) or _covers(y, x)


class ImportPolicy:
    """A customer's import filter (see the module docstring for the rule order)."""

    def __init__(self, router: RouterConfig, customer: CustomerConfig, rpki: RpkiMode = "off") -> None:
        self.customer = customer.name
        self.rpki: RpkiMode = rpki
        self.customer_asn = customer.asn
        self.local_asn = router.asn
        self.local_pref = customer.import_.local_pref
        self.labels = tuple(customer.import_.set_mpls_label)
        self.max_len = {4: router.max_prefix_length_v4, 6: router.max_prefix_length_v6}
        self._bogons = [_key(b) for b in router.bogons]
        # Bogons as sorted, merged address intervals per IP version: "does the prefix overlap a bogon"
        # (inside one, or covering one) is one bisect, whatever the list holds (issue 12: a scan of
        # the bogon lengths was ~2 us per received prefix).
        self._bogon_iv: dict[int, tuple[list[int], list[int]]] = {}
        for v in (4, 6):
            bits = 32 if v == 4 else 128
            ivs = sorted((a, a | ((1 << (bits - length)) - 1)) for w, a, length in self._bogons if w == v)
            starts: list[int] = []
            ends: list[int] = []
            for lo, hi in ivs:
                if ends and lo <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], hi)
                else:
                    starts.append(lo)
                    ends.append(hi)
            self._bogon_iv[v] = (starts, ends)
        self._rules: list[tuple[_Key, int, int]] = [
            (_key(r.prefix), r.ge, r.le) for r in customer.import_.prefixes
        ]
        self.rules: tuple[PrefixRule, ...] = tuple(customer.import_.prefixes)
        self.rtbh = customer.import_.rtbh
        self.rtbh_max_len = {4: router.rtbh_max_length_v4, 6: router.rtbh_max_length_v6}
        #: Our own space (``router.announce``): never blackholed on a customer's request, even if a
        #: prefix list wrongly covers it.
        self._ours = [_key(n) for n in router.announce]
        self._reject_std, self._reject_large = _patterns(customer.import_.reject_communities)
        self._actions = ActionCommunities(router.asn)
        std, large = _split(list(router.communities) + list(customer.communities))
        self._info = (std, large)
        self._info_peer = {p.address: _split(p.communities) for p in customer.peers if p.communities}

    def check_prefix(self, prefix: IPNetwork) -> Rejection | None:
        k = _key(prefix)
        if k[2] == 0:
            return Rejection(RejectReason.DEFAULT_ROUTE)
        if self._is_bogon(k):
            for b in self._bogons:
                if _overlaps(b, k):
                    return Rejection(RejectReason.BOGON, f"overlaps {_fmt(b)}")
        if k[2] > self.max_len[k[0]]:
            return Rejection(RejectReason.TOO_SPECIFIC, f"longer than /{self.max_len[k[0]]}")
        for rk, ge, le in self._rules:
            if ge <= k[2] <= le and _covers(rk, k):
                return None
        return Rejection(RejectReason.NOT_IN_PREFIX_LIST)

    def _check_rpki(self, path: Path) -> Rejection | None:
        """RFC 8481 §4 leaves the action to policy: only ``reject-invalid`` refuses a path."""
        if path.rpki is Validity.INVALID and self.rpki == "reject-invalid":
            origin = path.attrs.origin_as
            return Rejection(RejectReason.RPKI_INVALID,
                             f"origin AS {origin}" if origin is not None else "no single origin AS (AS_SET)")
        return None

    def _is_bogon(self, k: _Key) -> bool:
        """True if the prefix overlaps a bogon: the last interval starting at or before the prefix's
        last address must end at or after its first."""
        v, a, length = k
        starts, ends = self._bogon_iv[v]
        i = bisect_right(starts, a | _HOST_MASK[v][length]) - 1
        return i >= 0 and ends[i] >= a

    def check_rtbh_prefix(self, prefix: IPNetwork) -> Rejection | None:
        """The prefix rules of a blackhole request (module docstring)."""
        k = _key(prefix)
        if not self.rtbh:
            return Rejection(RejectReason.RTBH_NOT_ALLOWED, "import.rtbh is off for this customer")
        if k[2] == 0:
            return Rejection(RejectReason.DEFAULT_ROUTE)
        if self._is_bogon(k):
            return Rejection(RejectReason.BOGON, "blackhole request in bogon space")
        if k[2] > self.rtbh_max_len[k[0]]:
            return Rejection(RejectReason.TOO_SPECIFIC, f"blackhole longer than /{self.rtbh_max_len[k[0]]}")
        if not any(_covers(rk, k) for rk, _ge, _le in self._rules):
            return Rejection(RejectReason.NOT_IN_PREFIX_LIST, "blackhole request outside the customer's prefixes")
        if any(_overlaps(o, k) for o in self._ours):
            return Rejection(RejectReason.NOT_IN_PREFIX_LIST, "blackhole request for our own space")
        return None

    def apply(self, path: Path) -> Path | Rejection:
        attrs = path.attrs
        blackhole = BLACKHOLE in attrs.communities
        rej = self.check_rtbh_prefix(path.prefix) if blackhole else self.check_prefix(path.prefix)
        if rej is not None:
            return rej
        src = path.source  # the session and policy values, read once (common.model.Path)
        if src.rpki is not None:
            rej = self._check_rpki(path)
            if rej is not None:
                return rej
            if self.rpki == "off":
                path = replace(path, rpki=None)
                src = path.source
        as_path = attrs.as_path
        if not as_path or as_path[0] != self.customer_asn:
            first = as_path[0] if as_path else "empty"
            return Rejection(RejectReason.FIRST_AS_MISMATCH, f"first AS {first}, expected {self.customer_asn}")
        if self.local_asn in as_path:
            return Rejection(RejectReason.OWN_AS_IN_PATH, f"AS_PATH contains {self.local_asn}")
        if self._reject_std or self._reject_large:
            hit = _matching(attrs, self._reject_std, self._reject_large)
            if hit is not None:
                return Rejection(RejectReason.COMMUNITY_REJECTED, hit)
        if not blackhole and not _usable_nexthop(src.nexthop, path.prefix.version):
            return Rejection(RejectReason.INVALID_NEXTHOP, str(src.nexthop))
        local_pref, prepend = self.local_pref, 0
        if attrs.communities or attrs.large_communities:
            local_pref, prepend = self._actions.apply(attrs, self.local_pref)
        if self.labels and not attrs.labels and not blackhole:
            attrs = intern_attrs(replace(attrs, labels=self.labels))
        if attrs is path.attrs and local_pref == src.local_pref and blackhole == src.rtbh and prepend == src.prepend:
            return path  # nothing to change (most paths of a full table): no new Path (issue 12)
        return path_of(path.prefix, attrs, path_source(src.peer, src.nexthop, local_pref, src.rpki, blackhole, prepend))

    def communities_out(self, path: Path) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
        """The standard and large communities an accepted path carries onwards (shown by ``show routes``,
        sent to the backbone): the received ones minus our namespace, plus our informational ones."""
        std, large = self._info
        extra = self._info_peer.get(path.peer.address)
        if extra is not None:
            std, large = std + extra[0], large + extra[1]
        return _communities_out(path.attrs, self.local_asn, std, large)


@functools.lru_cache(maxsize=4096)
def _usable_nexthop(nh: IPAddress, version: int) -> bool:
    """Cached: a session has one or two next hops, checked once instead of once per prefix."""
    if nh.version != version:
        return False
    return not (nh.is_unspecified or nh.is_multicast or nh.is_loopback or nh.is_link_local)


class ActionCommunities:
    """The action communities of our ASN (module docstring); a fixed scheme, documented in the README,
    because customers configure their routers from our public community page."""

    LOCAL_PREF_STD = (70, 80, 90)
    PREPEND_STD = {101: 1, 102: 2, 103: 3}
    LARGE_LOCAL_PREF = 1
    LARGE_PREPEND = 2

    def __init__(self, asn: int) -> None:
        self.asn = asn
        self.std_ok = asn <= 65535

    def apply(self, attrs: Attributes, local_pref: int) -> tuple[int, int]:
        """(LOCAL_PREF, prepend count) the path's communities ask for; cached per attribute set."""
        return _actions(attrs, self.asn, local_pref)


@functools.lru_cache(maxsize=65536)
def _actions(attrs: Attributes, asn: int, local_pref: int) -> tuple[int, int]:
    """Cached: a table has a few thousand distinct attribute sets across a million prefixes."""
    lp, prepend = local_pref, 0
    if asn <= 65535:
        for hi, lo in attrs.communities:
            if hi != asn:
                continue
            if lo in ActionCommunities.LOCAL_PREF_STD:
                lp = min(lp, lo)
            elif lo in ActionCommunities.PREPEND_STD:
                prepend = max(prepend, ActionCommunities.PREPEND_STD[lo])
    for ga, f1, f2 in attrs.large_communities:
        if ga != asn:
            continue
        if f1 == ActionCommunities.LARGE_LOCAL_PREF:
            lp = min(lp, f2)
        elif f1 == ActionCommunities.LARGE_PREPEND and 1 <= f2 <= 3:
            prepend = max(prepend, f2)
    return lp, prepend


@functools.lru_cache(maxsize=65536)
def _communities_out(attrs: Attributes, asn: int, std_info: tuple[tuple[int, int], ...],
                     large_info: tuple[tuple[int, int, int], ...],
                     ) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
    std = [c for c in attrs.communities if not (asn <= 65535 and c[0] == asn)]
    large = [c for c in attrs.large_communities if c[0] != asn]
    std += [c for c in std_info if c not in std]
    large += [c for c in large_info if c not in large]
    return tuple(std), tuple(large)


_Pattern = tuple[int | None, ...]


def _patterns(texts: list[str]) -> tuple[tuple[_Pattern, ...], tuple[_Pattern, ...]]:
    """``A:B`` / ``A:B:C`` with ``*`` for any part, split into standard and large patterns."""
    std: list[_Pattern] = []
    large: list[_Pattern] = []
    for t in texts:
        parts = tuple(None if x == "*" else int(x) for x in t.split(":"))
        (std if len(parts) == 2 else large).append(parts)
    return tuple(std), tuple(large)


def _split(texts: list[str]) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
    std: list[tuple[int, int]] = []
    large: list[tuple[int, int, int]] = []
    for t in texts:
        v = parse_community(t)
        if len(v) == 2:
            std.append(v)  # type: ignore[arg-type]
        else:
            large.append(v)  # type: ignore[arg-type]
    return tuple(std), tuple(large)


def _match(pattern: _Pattern, value: tuple[int, ...]) -> bool:
    return all(p is None or p == v for p, v in zip(pattern, value, strict=True))


@functools.lru_cache(maxsize=65536)
def _matching(attrs: Attributes, std: tuple[_Pattern, ...], large: tuple[_Pattern, ...]) -> str | None:
    """The first community of ``attrs`` that a pattern matches, as text; None if none does."""
    for c in attrs.communities:
        if any(_match(p, c) for p in std):
            return f"{c[0]}:{c[1]}"
    for c in attrs.large_communities:
        if any(_match(p, c) for p in large):
            return f"{c[0]}:{c[1]}:{c[2]}"
    return None


def format_ext_community(value: int) -> str:
    """RFC 4360 text for the common types (route target, route origin), else the 8 bytes in hex."""
    typ, sub = (value >> 56) & 0xFF, (value >> 48) & 0xFF
    names = {0x02: "rt", 0x03: "soo"}
    if typ in (0x00, 0x40) and sub in names:  # 2-byte AS : 4-byte value
        return f"{names[sub]}:{(value >> 32) & 0xFFFF}:{value & 0xFFFFFFFF}"
    if typ in (0x01, 0x41) and sub in names:  # IPv4 : 2-byte value
        return f"{names[sub]}:{ipaddress.IPv4Address((value >> 16) & 0xFFFFFFFF)}:{value & 0xFFFF}"
    if typ in (0x02, 0x42) and sub in names:  # 4-byte AS : 2-byte value
        return f"{names[sub]}:{(value >> 16) & 0xFFFFFFFF}:{value & 0xFFFF}"
    return f"0x{value:016x}"


def _fmt(k: _Key) -> str:
    v, a, length = k
    addr = ipaddress.IPv4Address(a) if v == 4 else ipaddress.IPv6Address(a)
    return f"{addr}/{length}"


def export_routes(router: RouterConfig, customer: CustomerConfig, peer_version: int) -> list[IPNetwork]:
    """The prefixes one customer session is sent: ``export.prefixes`` (null: ``router.announce``) of
    the session's family, then the family's default route if ``export.default_route``.

    Every one carries the same attributes (:func:`export_attributes`) and next hop self.
    """
    exp = customer.export
    chosen = exp.prefixes if exp.prefixes is not None else router.announce
    out = [n for n in chosen if n.version == peer_version]
    if exp.default_route:
        default = ipaddress.ip_network("0.0.0.0/0" if peer_version == 4 else "::/0")
        if default not in out:
            out.append(default)
    return out


@dataclass(frozen=True, slots=True)
class ExportAttributes:
    """The attributes of everything one customer's sessions are sent (besides next hop self).

    ``as_path`` empty means ExaBGP's own default on eBGP: our AS once. With a prepend it is written
    out in full (our AS ``1 + prepend`` times), because ExaBGP sends an explicit AS_PATH exactly as
    given and adds nothing to it (read in ExaBGP 5.0.15 ``Attributes.pack``; notes/exabgp.md).
    """

    as_path: tuple[int, ...] = ()
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()

    def text(self) -> str:
        """ExaBGP's words for them, as a static route and an ``announce route`` both take them."""
        return attributes_text(as_path=self.as_path if self.as_path else None, communities=self.communities,
                               large_communities=self.large_communities)


def export_attributes(router: RouterConfig, customer: CustomerConfig) -> ExportAttributes:
    # Imported here: the top of this file is the import policy's (edited in parallel), this half is export's.
    from routing.config import parse_community

    exp = customer.export
    std: list[tuple[int, int]] = []
    large: list[tuple[int, int, int]] = []
    for text in exp.communities:
        c = parse_community(text)
        if len(c) == 2:
            if c not in std:
                std.append(c)  # type: ignore[arg-type]
        elif c not in large:
            large.append(c)  # type: ignore[arg-type]
    as_path = (router.asn,) * (1 + exp.prepend) if exp.prepend else ()
    return ExportAttributes(as_path, tuple(std), tuple(large))


def customer_exports(router: RouterConfig, customer: CustomerConfig, peer_version: int) -> dict[IPNetwork, str]:
    """Prefix -> ExaBGP attribute text of what one customer session is sent: the unit the reload
    compares (a prefix whose attributes changed is announced again, without a session reset)."""
    attrs = export_attributes(router, customer).text()
    return {n: attrs for n in export_routes(router, customer, peer_version)}


def attributes_text(*, origin: str | None = None, as_path: tuple[int, ...] | None = None, med: int | None = None,
                    local_pref: int | None = None, communities: tuple[tuple[int, int], ...] = (),
                    large_communities: tuple[tuple[int, int, int], ...] = (),
                    ext_communities: tuple[int, ...] = ()) -> str:
    """Path attributes in ExaBGP's route syntax (configuration and API share it); empty parts left
    out. Built from integers only, so the text is always ASCII (a non-ASCII byte would make ExaBGP
    respawn the API process)."""
    parts: list[str] = []
    if origin is not None:
        parts.append(f"origin {origin}")
    if as_path is not None:
        parts.append("as-path [ " + " ".join(str(a) for a in as_path) + " ]")
    if med is not None:
        parts.append(f"med {med}")
    if local_pref is not None:
        parts.append(f"local-preference {local_pref}")
    if communities:
        parts.append("community [ " + " ".join(f"{a}:{b}" for a, b in communities) + " ]")
    if large_communities:
        parts.append("large-community [ " + " ".join(f"{a}:{b}:{c}" for a, b, c in large_communities) + " ]")
    if ext_communities:
        parts.append("extended-community [ " + " ".join(f"0x{v:016x}" for v in ext_communities) + " ]")
    return " ".join(parts)
