"""VRP table over several caches, and route origin validation (RFC 6811 §2).

Theory of operation
-------------------
**Which caches count** (RFC 8210 §10). Each cache's data is kept apart, marked with its source
("a client may hold data from multiple caches but MUST keep the data marked as to source"), and
validation never distinguishes sources. The *effective* set is the union of the data of the
caches that share the most preferred (lowest) preference among the caches that are **up**
(connected and synchronised): "load data from the most preferred cache to which it can connect".
When no cache is up, it is the union of every cache that still holds unexpired data, so the router
keeps "at least one set of data" while caches are away (a cache's data goes only when it expires,
see :mod:`rpki.session`). Several caches of equal preference are unioned, which is what RFC 6811
asks for when there are several covering VRPs. RFC 8481 §4 leaves what to *do* with the result to
policy; this module only computes it.

**Validation** (RFC 6811 §2): a VRP *covers* a route when the VRP prefix contains the route prefix
(VRP length <= route length, same leading bits); it *matches* when it covers, its AS equals the
route's origin AS and the route length is <= the VRP max length. Valid if some VRP matches,
Invalid if some covers but none matches, NotFound if none covers. A VRP for AS 0 covers but never
matches (RFC 6483 §4, RFC 7607: AS 0 is never a route's origin); a route whose origin cannot be
determined (AS_SET last, RFC 6811 "NONE") is passed as ``origin_as=None`` and matches nothing.

**Index.** VRP prefixes form a laminar family (two prefixes are nested or disjoint). For each
address family :class:`Validator` keeps the distinct VRP prefixes sorted by (start address,
length) with each prefix's parent (its longest strict covering prefix) and, per prefix, the dict
``origin AS -> the largest max length of this prefix's VRPs`` (AS 0 left out). For a route
``(address, length)``: ``bisect`` finds the last prefix starting at or before the address; the
deepest VRP prefix containing the route is that one or one of its ancestors (a later-sorted prefix
starting at or before the address lies inside the deepest container), so we walk up parents while
the prefix does not contain the address or is longer than the route. Found: covered, and Valid iff
that prefix or one of its ancestors has ``entries.get(origin, -1) >= length``. That is one C
bisect, usually zero or one parent steps and one or two dict lookups per route. The index is
immutable and rebuilt (sort, one pass) when the effective set changes; a RIB holds a reference to
one snapshot while it re-validates.

**Re-validation scope.** A VRP can change a route's state only if it covers the route, so
:func:`affected` returns the changed VRP prefixes (nested ones folded into the outermost) as
:class:`PrefixRange` values: "every route equal to or more specific than this prefix". A RIB
re-validates just the routes inside them (:meth:`AffectedRanges.contains` answers for one route
with the same bisect walk).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from rpki.model import AFI_LABEL, WIDTH, Validity, Vrp

VALID, INVALID, NOT_FOUND = Validity.VALID, Validity.INVALID, Validity.NOT_FOUND
_NO_ENTRY = -1


class _FamilyIndex:
    """Sorted laminar prefix family for one address family (see the module docstring)."""

    __slots__ = ("ends", "entries", "lens", "parents", "starts")

    def __init__(self, width: int, vrps: Iterable[Vrp]) -> None:
        # Keys are one int, ``prefix << 8 | length``: sorting and hashing ints stays in C, tuples do not.
        own: dict[int, dict[int, int]] = {}
        for v in vrps:
            key = v.prefix << 8 | v.prefix_len
            d = own.get(key)
            if d is None:
                d = own[key] = {}
            if v.asn != 0 and d.get(v.asn, _NO_ENTRY) < v.max_len:  # AS 0 covers, never matches
                d[v.asn] = v.max_len
        keys = sorted(own)
        hostmask = [(1 << (width - ln)) - 1 for ln in range(width + 1)]
        self.starts: list[int] = [k >> 8 for k in keys]
        self.lens: list[int] = [k & 0xFF for k in keys]
        self.ends: list[int] = [s | hostmask[ln] for s, ln in zip(self.starts, self.lens, strict=True)]
        #: origin AS -> largest max length, of this prefix's own VRPs (ancestors are walked, not copied:
        #: copying them would cost O(VRPs x covering entries) when a short prefix has many origins).
        self.entries: list[dict[int, int]] = [own[k] for k in keys]
        parents = self.parents = [-1] * len(keys)
        ends = self.ends
        stack: list[int] = []
        for i, start in enumerate(self.starts):
            while stack and ends[stack[-1]] < start:
                stack.pop()
            if stack:
                parents[i] = stack[-1]
            stack.append(i)

    def lookup(self, addr: int, plen: int) -> int:
        """Index of the deepest VRP prefix covering ``addr/plen``, or -1."""
        i = bisect_right(self.starts, addr) - 1
        ends, lens, parents = self.ends, self.lens, self.parents
        while i >= 0 and (ends[i] < addr or lens[i] > plen):
            i = parents[i]
        return i


class Validator:
    """An immutable origin-validation index over one VRP set (RFC 6811 §2)."""

    __slots__ = ("_v4", "_v6", "size")

    def __init__(self, vrps: Iterable[Vrp]) -> None:
        v4: list[Vrp] = []
        v6: list[Vrp] = []
        for v in vrps:
            (v4 if v.afi == 4 else v6).append(v)
        self._v4 = _FamilyIndex(32, v4)
        self._v6 = _FamilyIndex(128, v6)
        self.size = len(v4) + len(v6)

    def validate_int(self, afi: int, addr: int, plen: int, origin_as: int | None) -> Validity:
        """The fast path: the route as integers (what a RIB keeps per path)."""
        idx = self._v4 if afi == 4 else self._v6
        i = bisect_right(idx.starts, addr) - 1
        ends, lens, parents = idx.ends, idx.lens, idx.parents
        while i >= 0 and (ends[i] < addr or lens[i] > plen):
            i = parents[i]
        if i < 0:
            return NOT_FOUND
        if origin_as:  # None (no single origin) and AS 0 match nothing
            entries = idx.entries
            while i >= 0:  # this prefix and every shorter one covering it
                if entries[i].get(origin_as, _NO_ENTRY) >= plen:
                    return VALID
                i = parents[i]
        return INVALID

    def validate_any_length(self, afi: int, addr: int, plen: int, origin_as: int | None) -> Validity:
        """``validate_int`` without the max length: Valid when a covering VRP has the origin AS.

        For remotely triggered blackhole routes (RFC 7999 /32s and /128s): the owner of a prefix may
        blackhole any part of it, so BIRD and others skip the max length for them."""
        idx = self._v4 if afi == 4 else self._v6
        i = idx.lookup(addr, plen)
        if i < 0:
            return NOT_FOUND
        if origin_as:
            entries, parents = idx.entries, idx.parents
            while i >= 0:
                if origin_as in entries[i]:
                    return VALID
                i = parents[i]
        return INVALID

    def validate_many(self, routes: Iterable[tuple[int, int, int, int | None]]) -> list[Validity]:
        """``validate_int`` over ``(afi, address, length, origin)`` tuples: the re-validation loop."""
        f = self.validate_int
        return [f(afi, addr, plen, origin) for afi, addr, plen, origin in routes]

    def validate(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network | str,
                 origin_as: int | None) -> Validity:
        """RFC 6811 §2 state of a route ``prefix`` originated by ``origin_as`` (None: no single origin)."""
        if isinstance(prefix, str):
            prefix = ipaddress.ip_network(prefix, strict=False)
        return self.validate_int(prefix.version, int(prefix.network_address), prefix.prefixlen, origin_as)


def validate(vrps: Validator, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network | str,
             origin_as: int | None) -> Validity:
    """Pure function form: ``validate(index, prefix, origin) -> valid | invalid | not_found``."""
    return vrps.validate(prefix, origin_as)


# --- re-validation scope -------------------------------------------------------------------------
class PrefixRange(NamedTuple):
    """Every route equal to or more specific than ``prefix/prefix_len`` (in address family ``afi``)."""

    afi: int
    prefix: int
    prefix_len: int

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        cls = ipaddress.IPv4Network if self.afi == 4 else ipaddress.IPv6Network
        return cls((self.prefix, self.prefix_len))


class AffectedRanges:
    """The outermost changed VRP prefixes; ``contains`` says whether a route lies inside one."""

    __slots__ = ("_index", "ranges")

    def __init__(self, ranges: list[PrefixRange]) -> None:
        self.ranges = ranges
        self._index = {afi: _FamilyIndex(WIDTH[afi], (Vrp(r.afi, r.prefix, r.prefix_len, r.prefix_len, 0)
                                                    for r in ranges if r.afi == afi)) for afi in (4, 6)}

    def contains(self, afi: int, addr: int, plen: int) -> bool:
        return self._index[afi].lookup(addr, plen) >= 0

    def __len__(self) -> int:
        return len(self.ranges)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.ranges)


def affected(changed_vrps: Iterable[Vrp]) -> AffectedRanges:
    """Prefix ranges whose routes may change validation state when ``changed_vrps`` come or go."""
    out: list[PrefixRange] = []
    for afi in (4, 6):
        width = WIDTH[afi]
        keys = sorted({(v.prefix, v.prefix_len) for v in changed_vrps if v.afi == afi})
        last_end = -1
        for start, plen in keys:  # sorted by start, shorter first: a nested one starts inside the last kept
            if start <= last_end:
                continue
            out.append(PrefixRange(afi, start, plen))
            last_end = start | ((1 << (width - plen)) - 1)
    return AffectedRanges(out)


# --- the table over caches -----------------------------------------------------------------------
@dataclass
class CacheData:
    name: str
    preference: int
    up: bool = False
    vrps: set[Vrp] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class EffectiveChange:
    """How the effective (validated-against) VRP set changed, and what to re-validate."""

    announced: frozenset[Vrp]
    withdrawn: frozenset[Vrp]

    def __bool__(self) -> bool:
        return bool(self.announced or self.withdrawn)

    def affected(self) -> AffectedRanges:
        return affected(self.announced | self.withdrawn)


class VrpTable:
    """Per-cache VRP sets, the effective union (see the module docstring) and its validator."""

    def __init__(self) -> None:
        self.caches: dict[str, CacheData] = {}
        self.effective: frozenset[Vrp] = frozenset()
        self._validator: Validator | None = Validator(())

    def add_cache(self, name: str, preference: int) -> None:
        self.caches.setdefault(name, CacheData(name, preference))

    def selected(self) -> list[str]:
        """Names of the caches whose data is in effect."""
        up = [c for c in self.caches.values() if c.up]
        pool = up or [c for c in self.caches.values() if c.vrps]
        if not pool:
            return []
        best = min(c.preference for c in pool)
        return sorted(c.name for c in pool if c.preference == best)

    def apply(self, cache: str, announced: Iterable[Vrp], withdrawn: Iterable[Vrp]) -> EffectiveChange:
        data = self.caches[cache]
        data.vrps.difference_update(withdrawn)
        data.vrps.update(announced)
        return self._recompute()

    def set_up(self, cache: str, up: bool) -> EffectiveChange:
        data = self.caches[cache]
        if data.up == up:
            return EffectiveChange(frozenset(), frozenset())
        data.up = up
        return self._recompute()

    def _recompute(self) -> EffectiveChange:
        chosen = self.selected()
        if len(chosen) == 1:
            new = frozenset(self.caches[chosen[0]].vrps)
        else:
            new = frozenset().union(*(self.caches[n].vrps for n in chosen))
        old = self.effective
        if new == old:
            return EffectiveChange(frozenset(), frozenset())
        change = EffectiveChange(new - old, old - new)
        self.effective = new
        self._validator = None  # rebuilt on first use
        return change

    def validator(self) -> Validator:
        """The index for the current effective set (a snapshot: later changes build a new one)."""
        if self._validator is None:
            self._validator = Validator(self.effective)
        return self._validator

    def validate(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network | str,
                 origin_as: int | None) -> Validity:
        return self.validator().validate(prefix, origin_as)

    def counts_by_afi(self) -> dict[str, int]:
        """``pop_router_rpki_vrps{afi}`` for the effective set."""
        out = dict.fromkeys(AFI_LABEL.values(), 0)
        for v in self.effective:
            out[AFI_LABEL[v.afi]] += 1
        return out
