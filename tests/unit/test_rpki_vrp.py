"""Origin validation against a reference written straight from RFC 6811 §2, and the cache table.

The reference is deliberately naive (every VRP checked against every route, with the RFC's words
for "covered" and "matched"); hypothesis compares it with the indexed validator on random VRP
sets, including AS 0 VRPs, nested prefixes and max lengths.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rpki.model import WIDTH, Validity, Vrp, make_vrp
from rpki.vrp import Validator, VrpTable, affected


def reference(vrps: list[Vrp], afi: int, addr: int, plen: int, origin: int | None) -> Validity:
    """RFC 6811 §2, literally."""
    width = WIDTH[afi]
    covered = matched = False
    for v in vrps:
        if v.afi != afi:
            continue
        # "Covered: the Route Prefix is covered by a VRP prefix when the VRP prefix length is less than
        # or equal to the Route prefix length, and the VRP prefix address and the Route prefix address
        # are identical for all bits specified by the VRP prefix length."
        shift = width - v.prefix_len
        if v.prefix_len <= plen and (v.prefix >> shift) == (addr >> shift):
            covered = True
            # "Matched: ... covered by that VRP, the Route prefix length is less than or equal to the
            # VRP prefix max length, and the Route Origin ASN is equal to the VRP ASN." AS 0 and
            # NONE never match (RFC 6483 §4, RFC 6811 §2).
            if plen <= v.max_len and origin is not None and origin != 0 and origin == v.asn:
                matched = True
    if matched:
        return Validity.VALID
    return Validity.INVALID if covered else Validity.NOT_FOUND


def _prefix(afi: int, bits: int, plen: int) -> int:
    width = WIDTH[afi]
    return (bits << (width - 8)) & ~((1 << (width - plen)) - 1) & ((1 << width) - 1)


def _vrp(t: tuple[int, int, int, int, int]) -> Vrp:
    afi, bits, plen, extra, asn = t
    plen = min(plen, 12 if afi == 4 else 14)
    return Vrp(afi, _prefix(afi, bits, plen), plen, min(WIDTH[afi], plen + extra), asn)


def _route(t: tuple[int, int, int, int | None]) -> tuple[int, int, int, int | None]:
    afi, bits, plen, origin = t
    plen = min(plen, 12 if afi == 4 else 14)
    return afi, _prefix(afi, bits, plen), plen, origin


# Addresses from a small space (the top 8 bits vary, lengths up to 12/14) so VRPs nest and collide.
AFI = st.sampled_from([4, 6])
VRPS = st.lists(st.tuples(AFI, st.integers(0, 255), st.integers(0, 14), st.integers(0, 4), st.integers(0, 4))
                .map(_vrp), max_size=25)
ROUTES = st.lists(st.tuples(AFI, st.integers(0, 255), st.integers(0, 14), st.none() | st.integers(0, 4))
                  .map(_route), min_size=1, max_size=30)


def vrps_and_routes() -> st.SearchStrategy[tuple[list[Vrp], list[tuple[int, int, int, int | None]]]]:
    return st.tuples(VRPS, ROUTES)


@settings(max_examples=300, deadline=None)
@given(vrps_and_routes())
def test_validate_equals_rfc6811_reference(case: tuple[list[Vrp], list]) -> None:  # type: ignore[type-arg]
    vrps, routes = case
    idx = Validator(vrps)
    for afi, addr, plen, origin in routes:
        assert idx.validate_int(afi, addr, plen, origin) == reference(vrps, afi, addr, plen, origin), \
            (afi, addr, plen, origin)


@settings(max_examples=200, deadline=None)
@given(vrps_and_routes(), vrps_and_routes())
def test_affected_ranges_contain_every_route_that_changes(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    before, routes = a
    change = b[0]
    after = list(set(before) ^ set(change))
    rng = affected(change)
    old, new = Validator(before), Validator(after)
    for afi, addr, plen, origin in routes + b[1]:
        if old.validate_int(afi, addr, plen, origin) != new.validate_int(afi, addr, plen, origin):
            assert rng.contains(afi, addr, plen)


def test_examples() -> None:
    idx = Validator([make_vrp("10.0.0.0/8", 16, 65001), make_vrp("10.1.0.0/16", 24, 65002),
                     make_vrp("192.0.2.0/24", None, 0), make_vrp("2001:db8::/32", 48, 65003)])
    cases = {
        ("10.0.0.0/8", 65001): "valid", ("10.1.0.0/16", 65001): "valid", ("10.1.2.0/24", 65002): "valid",
        ("10.1.2.0/25", 65002): "invalid", ("11.0.0.0/8", 1): "not_found", ("192.0.2.0/24", 0): "invalid",
        ("192.0.2.0/25", 64500): "invalid", ("2001:db8:1::/48", 65003): "valid",
        ("2001:db8:1::/49", 65003): "invalid", ("10.2.0.0/17", 65001): "invalid", ("10.0.0.0/8", None): "invalid",
        ("0.0.0.0/0", 65001): "not_found",
    }
    for (prefix, origin), want in cases.items():
        assert idx.validate(prefix, origin) == want, (prefix, origin)


def test_affected_folds_nested_ranges() -> None:
    rng = affected([make_vrp("10.0.0.0/8", 16, 1), make_vrp("10.1.0.0/16", 16, 1), make_vrp("11.0.0.0/8", 8, 1),
                    make_vrp("2001:db8::/32", 32, 1)])
    assert [str(r.network()) for r in rng] == ["10.0.0.0/8", "11.0.0.0/8", "2001:db8::/32"]
    assert rng.contains(4, int.from_bytes(bytes([10, 1, 2, 0]), "big"), 24)
    assert not rng.contains(4, int.from_bytes(bytes([12, 0, 0, 0]), "big"), 8)
    assert not rng.contains(4, 0, 0)  # a default route is not inside 10/8


A = make_vrp("192.0.2.0/24", 24, 1)
B = make_vrp("198.51.100.0/24", 24, 2)
C = make_vrp("203.0.113.0/24", 24, 3)


def test_table_prefers_the_most_preferred_cache_that_is_up() -> None:
    t = VrpTable()
    t.add_cache("primary", 1)
    t.add_cache("backup", 2)
    t.apply("backup", [B], [])
    t.set_up("backup", True)
    assert t.effective == {B}
    t.apply("primary", [A], [])
    ch = t.set_up("primary", True)
    assert t.effective == {A} and ch.announced == {A} and ch.withdrawn == {B}
    assert t.selected() == ["primary"]
    # primary goes away but its data has not expired: the live backup is preferred
    t.set_up("primary", False)
    assert t.effective == {B}
    # nobody up: keep at least one set, the most preferred of those still holding data
    t.set_up("backup", False)
    assert t.effective == {A}
    # primary's data expires: backup's remains
    t.apply("primary", [], [A])
    assert t.effective == {B}


def test_table_unions_caches_of_equal_preference() -> None:
    t = VrpTable()
    for name in ("a", "b"):
        t.add_cache(name, 10)
        t.set_up(name, True)
    t.apply("a", [A, C], [])
    ch = t.apply("b", [B, C], [])
    assert t.effective == {A, B, C} and ch.announced == {B} and not ch.withdrawn
    ch = t.apply("a", [], [C])
    assert not ch and t.effective == {A, B, C}  # C still held by b: no effective change
    assert t.validate("203.0.113.0/24", 3) == "valid" and t.counts_by_afi() == {"ipv4": 3, "ipv6": 0}
