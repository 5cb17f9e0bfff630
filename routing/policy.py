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
5. ``first_as_mismatch`` — AS_PATH does not start with the customer's ASN (RFC 4271 §6.3);
6. ``own_as_in_path`` — our ASN appears in the AS_PATH (a loop);
7. ``invalid_nexthop`` — the next hop is not a usable unicast address of the prefix's family.

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
from dataclasses import dataclass, replace
from enum import StrEnum

from common.model import IPAddress, IPNetwork, Path, intern_attrs
from routing.config import CustomerConfig, PrefixRule, RouterConfig


class RejectReason(StrEnum):
    DEFAULT_ROUTE = "default_route"
    BOGON = "bogon"
    TOO_SPECIFIC = "too_specific"
    NOT_IN_PREFIX_LIST = "not_in_prefix_list"
    FIRST_AS_MISMATCH = "first_as_mismatch"
    OWN_AS_IN_PATH = "own_as_in_path"
    INVALID_NEXTHOP = "invalid_nexthop"
    MAX_PREFIXES = "max_prefixes"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str = ""


_Key = tuple[int, int, int]  # (version, network as int, prefix length)


def _key(net: IPNetwork) -> _Key:
    return net.version, int(net.network_address), net.prefixlen


def _covers(outer: _Key, inner: _Key) -> bool:
    """True if ``inner`` lies within ``outer`` (same family, longer or equal length)."""
    v, a, la = outer
    w, b, lb = inner
    if v != w or lb < la:
        return False
    bits = 32 if v == 4 else 128
    shift = bits - la
    return (a >> shift) == (b >> shift)


def _overlaps(x: _Key, y: _Key) -> bool:
    return _covers(x, y) or _covers(y, x)


class ImportPolicy:
    """A customer's import filter (see the module docstring for the rule order)."""

    def __init__(self, router: RouterConfig, customer: CustomerConfig) -> None:
        self.customer = customer.name
        self.customer_asn = customer.asn
        self.local_asn = router.asn
        self.local_pref = customer.import_.local_pref
        self.labels = tuple(customer.import_.set_mpls_label)
        self.max_len = {4: router.max_prefix_length_v4, 6: router.max_prefix_length_v6}
        self._bogons = [_key(b) for b in router.bogons]
        # Bogons indexed by (version, length) -> network bits, so "is the prefix inside a bogon" is one
        # set lookup per distinct bogon length instead of a scan of the list.
        self._bogon_bits: dict[tuple[int, int], set[int]] = {}
        for v, a, length in self._bogons:
            bits = 32 if v == 4 else 128
            self._bogon_bits.setdefault((v, length), set()).add(a >> (bits - length))
        self._rules: list[tuple[_Key, int, int]] = [
            (_key(r.prefix), r.ge, r.le) for r in customer.import_.prefixes
        ]
        self.rules: tuple[PrefixRule, ...] = tuple(customer.import_.prefixes)

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

    def _is_bogon(self, k: _Key) -> bool:
        v, a, length = k
        bits = 32 if v == 4 else 128
        for (bv, blen), nets in self._bogon_bits.items():
            if bv != v:
                continue
            if blen <= length:
                if (a >> (bits - blen)) in nets:
                    return True
            elif any((n >> (blen - length)) == (a >> (bits - length)) for n in nets):
                return True
        return False

    def apply(self, path: Path) -> Path | Rejection:
        rej = self.check_prefix(path.prefix)
        if rej is not None:
            return rej
        as_path = path.attrs.as_path
        if not as_path or as_path[0] != self.customer_asn:
            first = as_path[0] if as_path else "empty"
            return Rejection(RejectReason.FIRST_AS_MISMATCH, f"first AS {first}, expected {self.customer_asn}")
        if self.local_asn in as_path:
            return Rejection(RejectReason.OWN_AS_IN_PATH, f"AS_PATH contains {self.local_asn}")
        if not _usable_nexthop(path.nexthop, path.prefix.version):
            return Rejection(RejectReason.INVALID_NEXTHOP, str(path.nexthop))
        if self.labels and not path.attrs.labels:
            attrs = intern_attrs(replace(path.attrs, labels=self.labels))
            return replace(path, local_pref=self.local_pref, attrs=attrs)
        return replace(path, local_pref=self.local_pref)


@functools.lru_cache(maxsize=4096)
def _usable_nexthop(nh: IPAddress, version: int) -> bool:
    """Cached: a session has one or two next hops, checked once instead of once per prefix."""
    if nh.version != version:
        return False
    return not (nh.is_unspecified or nh.is_multicast or nh.is_loopback or nh.is_link_local)


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
