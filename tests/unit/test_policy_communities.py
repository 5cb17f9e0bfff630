"""Communities in import policy: action communities, scrubbing, informational tags, RTBH requests.

The rules are the module docstring of ``routing/policy.py`` and the README's community page; the
hypothesis test checks the RTBH acceptance rule against a reference written from RFC 7999 and the
issue's text (inside the customer's own prefixes, up to the configured length, only when allowed).
"""

from __future__ import annotations

import copy
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import BLACKHOLE, NO_EXPORT, Attributes, FibEntry, Path
from routing.config import ConfigError, parse_community, parse_config
from routing.exabgp.messages import UpdateEvent, parse_line
from routing.policy import ImportPolicy, Rejection, RejectReason, format_ext_community
from routing.rib import Rib

from .factories import CONFIG, peer


def _policy(rtbh: bool = True, reject: list[str] | None = None, **router: object) -> ImportPolicy:
    data = copy.deepcopy(CONFIG)
    data["router"].update(router)
    c = data["customers"][0]
    c["import"]["rtbh"] = rtbh
    c["import"]["reject_communities"] = reject or []
    c["communities"] = ["65000:2001", "65000:20:1"]
    c["peers"][0]["communities"] = ["65000:3001"]
    cfg = parse_config(data)
    return ImportPolicy(cfg.router, cfg.customers[0])


def _path(prefix: str, comms: tuple = (), large: tuple = (), nexthop: str = "10.0.1.2", as_path: tuple = (64512,),
          address: str = "10.0.1.2") -> Path:
    return Path(ipaddress.ip_network(prefix), peer(address), ipaddress.ip_address(nexthop),
                Attributes(as_path=as_path, communities=comms, large_communities=large))


@pytest.mark.parametrize(("comms", "large", "lp", "prepend"), [
    ((), (), 100, 0),
    (((65000, 90),), (), 90, 0),
    (((65000, 70), (65000, 90)), (), 70, 0),           # the lowest asked for wins
    (((65001, 70),), (), 100, 0),                       # another AS's namespace: no action
    ((), ((65000, 1, 50),), 50, 0),
    ((), ((65000, 1, 150),), 100, 0),                   # never raised above the customer's
    (((65000, 102),), (), 100, 2),
    ((), ((65000, 2, 3),), 100, 3),
    ((), ((65000, 2, 9),), 100, 0),                     # out of range: ignored
    (((65000, 101),), ((65000, 2, 3),), 100, 3),
])
def test_action_communities(comms: tuple, large: tuple, lp: int, prepend: int) -> None:
    res = _policy().apply(_path("203.0.113.0/24", comms, large))
    assert not isinstance(res, Rejection), res
    assert (res.local_pref, res.prepend, res.rtbh) == (lp, prepend, False)


def test_backup_link_marked_by_customer_loses_best_path() -> None:
    """The customer tags its backup session with ASN:70: the Loc-RIB picks the other link as primary
    and the backup as the FIB entry's backup (the failover groups follow)."""
    pol = _policy()
    rib = Rib()
    for a in ("10.0.1.2", "10.0.2.2"):
        rib.add_peer(ipaddress.ip_address(a), pol, None)
    rib.announce(ipaddress.ip_address("10.0.1.2"), [_path("203.0.113.0/24", ((65000, 70),))])
    rib.announce(ipaddress.ip_address("10.0.2.2"),
                 [_path("203.0.113.0/24", nexthop="10.0.2.2", address="10.0.2.2")])
    e = rib.loc.fib_entry(ipaddress.ip_network("203.0.113.0/24"))
    assert e is not None
    assert e.nexthops == (ipaddress.ip_address("10.0.2.2"),)
    assert e.backup == (ipaddress.ip_address("10.0.1.2"),)


def test_communities_out_scrubs_our_namespace_and_adds_informational() -> None:
    pol = _policy()
    p = _path("203.0.113.0/24", ((65000, 90), (65000, 2001), (64512, 7), NO_EXPORT), ((65000, 2, 1), (64512, 1, 1)))
    acc = pol.apply(p)
    assert not isinstance(acc, Rejection)
    std, large = pol.communities_out(acc)
    # the customer's forged 65000:2001 is dropped, ours is added once; its own and well-known stay
    assert std == ((64512, 7), NO_EXPORT, (65000, 2001), (65000, 3001))
    assert large == ((64512, 1, 1), (65000, 20, 1))
    # the stored path keeps what was received: a reload re-runs policy on the original
    assert acc.attrs == p.attrs
    # the second session of the customer has no link tag
    other = pol.apply(_path("203.0.113.0/24", nexthop="10.0.2.2", address="10.0.2.2"))
    assert not isinstance(other, Rejection)
    assert pol.communities_out(other) == (((65000, 2001),), ((65000, 20, 1),))


@pytest.mark.parametrize(("patterns", "comms", "large", "hit"), [
    (["64512:666"], ((64512, 666),), (), "64512:666"),
    (["64512:*"], ((64512, 1),), (), "64512:1"),
    (["*:13"], ((1, 13),), (), "1:13"),
    (["64512:1:*"], (), ((64512, 1, 99),), "64512:1:99"),
    (["64512:1:*"], (), ((64512, 2, 99),), None),
    (["64512:666"], ((64512, 667),), (), None),
])
def test_reject_communities(patterns: list[str], comms: tuple, large: tuple, hit: str | None) -> None:
    res = _policy(reject=patterns).apply(_path("203.0.113.0/24", comms, large))
    if hit is None:
        assert not isinstance(res, Rejection)
    else:
        assert isinstance(res, Rejection)
        assert (res.reason, res.detail) == (RejectReason.COMMUNITY_REJECTED, hit)


@pytest.mark.parametrize(("prefix", "rtbh", "reason"), [
    ("203.0.113.66/32", True, None),
    ("198.51.101.7/32", True, None),              # inside 198.51.100.0/22 le 24, beyond le: RTBH may
    ("198.51.100.0/23", True, None),
    ("2001:db8:100::1/128", True, None),
    ("203.0.113.66/32", False, RejectReason.RTBH_NOT_ALLOWED),
    ("192.0.2.1/32", True, RejectReason.NOT_IN_PREFIX_LIST),      # our own space
    ("198.51.104.1/32", True, RejectReason.NOT_IN_PREFIX_LIST),   # another customer's
    ("198.51.96.0/21", True, RejectReason.NOT_IN_PREFIX_LIST),    # wider than the rule's prefix
    ("10.1.1.1/32", True, RejectReason.BOGON),
    ("0.0.0.0/0", True, RejectReason.DEFAULT_ROUTE),
])
def test_rtbh_request(prefix: str, rtbh: bool, reason: RejectReason | None) -> None:
    nh = "2001:db8:1::2" if ":" in prefix else "192.0.2.254"  # a discard next hop: not checked
    res = _policy(rtbh=rtbh).apply(_path(prefix, (BLACKHOLE,), nexthop=nh))
    if reason is None:
        assert not isinstance(res, Rejection), res
        assert res.rtbh
    else:
        assert isinstance(res, Rejection)
        assert res.reason is reason


def test_rtbh_never_for_our_own_space_even_if_a_prefix_list_covers_it() -> None:
    data = copy.deepcopy(CONFIG)
    data["customers"][0]["import"].update(rtbh=True, prefixes=["192.0.2.0/24"])  # our announce: a mistake
    cfg = parse_config(data)
    res = ImportPolicy(cfg.router, cfg.customers[0]).apply(_path("192.0.2.1/32", (BLACKHOLE,)))
    assert isinstance(res, Rejection)
    assert (res.reason, res.detail) == (RejectReason.NOT_IN_PREFIX_LIST, "blackhole request for our own space")


def test_rtbh_max_length() -> None:
    pol = _policy(rtbh_max_length_v4=28)
    res = pol.apply(_path("203.0.113.64/32", (BLACKHOLE,)))
    assert isinstance(res, Rejection)
    assert res.reason is RejectReason.TOO_SPECIFIC
    assert not isinstance(pol.apply(_path("203.0.113.64/28", (BLACKHOLE,))), Rejection)


def test_rtbh_path_becomes_a_blackhole_fib_entry_and_withdraw_restores() -> None:
    pol = _policy()
    rib = Rib()
    a = ipaddress.ip_address("10.0.1.2")
    rib.add_peer(a, pol, None)
    rib.announce(a, [_path("203.0.113.0/24")])
    diffs = rib.announce(a, [_path("203.0.113.66/32", (BLACKHOLE,))])
    assert [d.new for d in diffs] == [FibEntry(ipaddress.ip_network("203.0.113.66/32"), (), blackhole=True)]
    diffs = rib.withdraw(a, [ipaddress.ip_network("203.0.113.66/32")])
    assert [(d.old is not None and d.old.blackhole, d.new) for d in diffs] == [(True, None)]
    assert rib.loc.fib_entry(ipaddress.ip_network("203.0.113.0/24")) is not None


_RULES = ["203.0.113.0/24", "198.51.100.0/22 le 24", "2001:db8:100::/48"]


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.booleans(), st.integers(24, 32))
def test_rtbh_decision_matches_reference(addr: int, plen: int, allowed: bool, max_len: int) -> None:
    prefix = ipaddress.IPv4Network((addr, plen), strict=False)
    pol = _policy(rtbh=allowed, rtbh_max_length_v4=max_len)
    res = pol.apply(_path(str(prefix), (BLACKHOLE,), nexthop="192.0.2.254"))
    inside = any(prefix.subnet_of(ipaddress.ip_network(r.split()[0])) for r in _RULES if ":" not in r)
    expected = allowed and inside and plen <= max_len  # documentation space: no bogon overlaps
    assert (not isinstance(res, Rejection)) == expected, (prefix, res)
    if expected:
        assert res.rtbh  # type: ignore[union-attr]


def test_exabgp_json_communities_of_all_three_kinds() -> None:
    line = (b'{"type": "update", "neighbor": {"address": {"peer": "10.0.1.2"}, "message": {"update": '
            b'{"attribute": {"origin": "igp", "as-path": [64512], "community": [[65535, 666], [64512, 1]], '
            b'"large-community": [[65000, 2, 1]], "extended-community": [{"value": 842122827661322, '
            b'"string": "target:65000:10"}]}, "announce": {"ipv4 unicast": {"10.0.1.2": '
            b'[{"nlri": "203.0.113.66/32"}]}}}}}}')
    ev = parse_line(line)
    assert isinstance(ev, UpdateEvent)
    assert ev.attrs.communities == ((65535, 666), (64512, 1))
    assert ev.attrs.large_communities == ((65000, 2, 1),)
    assert [format_ext_community(v) for v in ev.attrs.ext_communities] == ["rt:65000:10"]


@pytest.mark.parametrize(("value", "text"), [
    ((0x0002 << 48) | (65000 << 32) | 10, "rt:65000:10"),
    ((0x0003 << 48) | (65000 << 32) | 7, "soo:65000:7"),
    ((0x0102 << 48) | (int(ipaddress.IPv4Address("192.0.2.1")) << 16) | 5, "rt:192.0.2.1:5"),
    ((0x0202 << 48) | (4200000001 << 16) | 5, "rt:4200000001:5"),
    (0x8006000000000000, "0x8006000000000000"),
])
def test_format_ext_community(value: int, text: str) -> None:
    assert format_ext_community(value) == text


@pytest.mark.parametrize(("text", "value"), [
    ("65000:100", (65000, 100)), ("no-export", NO_EXPORT), ("BLACKHOLE", BLACKHOLE),
    ("4200000001:1:2", (4200000001, 1, 2)),
])
def test_parse_community(text: str, value: tuple) -> None:
    assert parse_community(text) == value


def test_bad_community_in_config_names_the_field() -> None:
    data = copy.deepcopy(CONFIG)
    data["customers"][0]["communities"] = ["65000:70000"]
    with pytest.raises(ConfigError, match=r"customers\[0\]\.communities\[0\]: .*0\.\.65535"):
        parse_config(data, "pop.yaml")


def test_reload_reevaluates_when_rtbh_is_switched_on() -> None:
    from routing.reload import policy_fingerprint
    cfg = parse_config(CONFIG)
    data = copy.deepcopy(CONFIG)
    data["customers"][0]["import"]["rtbh"] = True
    new = parse_config(data)
    assert policy_fingerprint(cfg, cfg.customers[0]) != policy_fingerprint(new, new.customers[0])
    assert cfg.customers[0].import_.rtbh is False
