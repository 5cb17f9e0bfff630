"""Every import-policy rule, in the order that decides the reported reason."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import IPNetwork
from routing.config import PrefixRule
from routing.policy import Rejection, RejectReason, _overlaps, export_routes

from .factories import config, path, peer, policy


@pytest.mark.parametrize(
    ("prefix", "kw", "reason"),
    [
        ("203.0.113.0/24", {}, None),
        ("198.51.100.0/22", {}, None),
        ("198.51.101.0/24", {}, None),
        ("198.51.100.0/23", {}, None),
        ("2001:db8:100::/48", {"nexthop": "2001:db8:1::2"}, None),
        ("0.0.0.0/0", {}, RejectReason.DEFAULT_ROUTE),
        ("::/0", {"nexthop": "2001:db8:1::2"}, RejectReason.DEFAULT_ROUTE),
        ("10.99.0.0/16", {}, RejectReason.BOGON),
        ("192.168.0.0/24", {}, RejectReason.BOGON),
        ("8.0.0.0/5", {}, RejectReason.BOGON),  # covers 10.0.0.0/8
        ("fc00:1::/48", {"nexthop": "2001:db8:1::2"}, RejectReason.BOGON),
        ("203.0.113.128/25", {}, RejectReason.TOO_SPECIFIC),
        ("198.51.100.1/32", {}, RejectReason.TOO_SPECIFIC),
        ("2001:db8:100:1::/64", {"nexthop": "2001:db8:1::2"}, RejectReason.TOO_SPECIFIC),
        ("198.51.104.0/24", {}, RejectReason.NOT_IN_PREFIX_LIST),
        ("198.51.96.0/21", {}, RejectReason.NOT_IN_PREFIX_LIST),  # shorter than the rule
        ("203.0.112.0/23", {}, RejectReason.NOT_IN_PREFIX_LIST),
        ("2001:db8:200::/48", {"nexthop": "2001:db8:1::2"}, RejectReason.NOT_IN_PREFIX_LIST),
        ("203.0.113.0/24", {"as_path": (64999, 64512)}, RejectReason.FIRST_AS_MISMATCH),
        ("203.0.113.0/24", {"as_path": ()}, RejectReason.FIRST_AS_MISMATCH),
        ("203.0.113.0/24", {"as_path": (64512, 65000, 64513)}, RejectReason.OWN_AS_IN_PATH),
        ("203.0.113.0/24", {"nexthop": "127.0.0.1"}, RejectReason.INVALID_NEXTHOP),
        ("203.0.113.0/24", {"nexthop": "2001:db8:1::2"}, RejectReason.INVALID_NEXTHOP),
        ("2001:db8:100::/48", {"nexthop": "fe80::1"}, RejectReason.INVALID_NEXTHOP),
    ],
)
def test_import_rule(prefix: str, kw: dict, reason: RejectReason | None) -> None:
    res = policy().apply(path(prefix, **kw))
    if reason is None:
        assert not isinstance(res, Rejection), res
        assert res.local_pref == 100
    else:
        assert isinstance(res, Rejection)
        assert res.reason is reason


def test_four_byte_customer_asn() -> None:
    pol = policy(1)
    p = peer("10.0.3.2", "globex", 4200000001)
    assert not isinstance(pol.apply(path("203.0.113.0/24", p=p)), Rejection)
    res = pol.apply(path("203.0.113.0/24", p=p, as_path=(64512,)))
    assert isinstance(res, Rejection) and res.reason is RejectReason.FIRST_AS_MISMATCH


def test_export_is_per_family() -> None:
    c = config()
    assert [str(n) for n in export_routes(c.router, c.customers[0], 4)] == ["192.0.2.0/24"]
    assert [str(n) for n in export_routes(c.router, c.customers[0], 6)] == ["2001:db8:ffff::/48"]


v4_prefixes = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
v6_prefixes = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False),
    st.sampled_from([0x20010DB8 << 96, 0x20010DB8_01000000 << 64, 0xFC00 << 112]) | st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


def prefix_allowed(rules: Iterable[PrefixRule], prefix: IPNetwork) -> bool:
    """Reference rule matching with :mod:`ipaddress`, the oracle for the policy's integer fast path."""
    return any(r.matches(prefix) for r in rules)


@given(prefix=v4_prefixes | v6_prefixes, as_path=st.lists(st.integers(1, 2**32 - 1), max_size=5))
def test_never_accepts_outside_prefix_list(prefix, as_path) -> None:
    pol = policy()
    nh = "10.0.1.2" if prefix.version == 4 else "2001:db8:1::2"
    res = pol.apply(path(str(prefix), nexthop=nh, as_path=(64512, *as_path)))
    if not prefix_allowed(pol.rules, prefix):
        assert isinstance(res, Rejection)
    # The fast integer check agrees with the ipaddress reference whenever no earlier rule applies.
    if isinstance(res, Rejection) and res.reason is RejectReason.NOT_IN_PREFIX_LIST:
        assert not prefix_allowed(pol.rules, prefix)


@given(sub=st.integers(0, 1023), length=st.integers(22, 24))
def test_le_range_members_accepted(sub: int, length: int) -> None:
    net = ipaddress.ip_network((0xC6336400 + sub, length), strict=False)  # 198.51.100.0/22 le 24
    res = policy().apply(path(str(net)))
    assert not isinstance(res, Rejection)


def test_set_mpls_label_policy() -> None:
    from routing.config import parse_config

    from .factories import CONFIG

    cfg = dict(CONFIG)
    cust = dict(cfg["customers"][0])
    cust["import"] = {**cust["import"], "set_mpls_label": [100, 200]}
    cfg["customers"] = [cust, *cfg["customers"][1:]]
    c = parse_config(cfg)
    from routing.policy import ImportPolicy

    res = ImportPolicy(c.router, c.customers[0]).apply(path("203.0.113.0/24"))
    assert not isinstance(res, Rejection) and res.attrs.labels == (100, 200)


@given(st.one_of(
    st.tuples(st.just(4), st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.tuples(st.just(6), st.integers(0, 2**128 - 1), st.integers(0, 128)),
    # near the bogons' edges, where an off-by-one would show
    st.builds(lambda b, d, n: (4, max(0, min(2**32 - 1, b + d)), n),
              st.sampled_from([0x0A000000, 0x0AFFFFFF, 0x0B000000, 0x09FFFFFF, 0x64400000, 0xC0A80000, 0xF0000000]),
              st.integers(-300, 300), st.integers(1, 32)),
))
def test_bogon_index_equals_a_scan_of_the_list(key) -> None:
    """The interval index answers "overlaps a bogon" exactly as comparing with every bogon does."""
    v, a, n = key
    bits = 32 if v == 4 else 128
    k = (v, a & ~((1 << (bits - n)) - 1), n)
    pol = policy()
    assert pol._is_bogon(k) == any(_overlaps(b, k) for b in pol._bogons)
