"""The IPv4 fast path of ``parse_prefix`` accepts and rejects exactly what :mod:`ipaddress` does."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import Prefix4, parse_prefix, prefix_key


def reference(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None


def ours(text: str) -> ipaddress.IPv4Network | None:
    try:
        return parse_prefix(text)  # type: ignore[return-value]
    except ValueError:
        return None


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_valid_prefixes_equal_ipaddress(ip: int, plen: int) -> None:
    text = f"{ipaddress.IPv4Address(ip)}/{plen}"
    p = parse_prefix(text)
    assert isinstance(p, Prefix4) and p == reference(text) and hash(p) == hash(reference(text))


@given(st.text(alphabet="0123456789./: x\x00\u0662+_-", max_size=20))
def test_any_text_is_accepted_or_refused_like_ipaddress(text: str) -> None:
    if ":" in text:
        return  # IPv6 goes to ipaddress itself
    assert ours(text) == reference(text)


@pytest.mark.parametrize("text", ["10.0.0.1/24", "01.2.3.4/8", "1.2.3/8", "256.1.1.1/8", "1.2.3.4/33",
                                  "1.2.3.4/", "1.2.3.4", "1.2.3.4/08", " 1.2.3.4/8", "1.2.3.4/8 ",
                                  "1.2.3.00/8", "0x1.2.3.4/8", "1.2.3.4\x00/8", "\u0661.2.3.4/8",
                                  "1.2.3.4/\u0662\u0664", "1.2.3.4/+8", "1.2.3.4/2_4", "1.2.3.4.5/8", "1..2.3/8", "/8"])
def test_edge_cases_match(text: str) -> None:
    assert ours(text) == reference(text)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_prefix4_behaves_like_ipv4network_beside_one(ip: int, plen: int, ip2: int, plen2: int) -> None:
    """The integer Prefix4 (issue 12) mixes with plain ipaddress networks from config and tests: equal,
    the same hash (the int's own), ordered by (network, length) and not by its value."""
    a, ref_a = parse_prefix(f"{ipaddress.IPv4Address(ip)}/{plen}"), ipaddress.IPv4Network((ip, plen), strict=False)
    b, ref_b = parse_prefix(f"{ipaddress.IPv4Address(ip2)}/{plen2}"), ipaddress.IPv4Network((ip2, plen2), strict=False)
    assert str(a) == str(ref_a) and a.prefixlen == ref_a.prefixlen and a.network_address == ref_a.network_address
    assert a.netmask == ref_a.netmask and a.broadcast_address == ref_a.broadcast_address
    assert a.num_addresses == ref_a.num_addresses and a.hostmask == ref_a.hostmask
    assert a.packed == ref_a.network_address.packed and hash(a) == hash(ref_a)
    assert prefix_key(a) == (4, int(ref_a.network_address), plen) and bool(a)
    assert (a == b) == (ref_a == ref_b) and (a == ref_b) == (ref_a == ref_b) and (ref_a == b) == (ref_a == ref_b)
    assert (a != ref_b) == (ref_a != ref_b) and (ref_a != b) == (ref_a != ref_b)
    for x, y in ((a, b), (a, ref_b), (ref_a, b)):
        assert (x < y) == (ref_a < ref_b) and (x <= y) == (ref_a <= ref_b)
        assert (x > y) == (ref_a > ref_b) and (x >= y) == (ref_a >= ref_b)
        assert x.subnet_of(y) == ref_a.subnet_of(ref_b) and x.supernet_of(y) == ref_a.supernet_of(ref_b)
        assert x.overlaps(y) == ref_a.overlaps(ref_b)
    assert (ref_b.network_address in a) == (ref_b.network_address in ref_a)
    assert ({a: 1}.get(ref_a), {ref_a: 1}.get(a)) == (1, 1) and len({a, ref_a}) == 1
    if plen:
        assert a.supernet() == ref_a.supernet() and type(a.supernet()) is Prefix4


def test_prefix4_is_small_and_keeps_the_rest_of_the_api() -> None:
    import pickle
    import sys

    p = parse_prefix("198.51.100.0/24")
    assert not hasattr(p, "__dict__") and sys.getsizeof(p) < 64
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Prefix4
    assert repr(p) == "Prefix4('198.51.100.0/24')" and f"{p}" == "198.51.100.0/24" and f"{p:>16}" == " 198.51.100.0/24"
    assert next(iter(p.subnets())) == ipaddress.ip_network("198.51.100.0/25")  # delegated to IPv4Network
    assert p.is_private is ipaddress.ip_network("198.51.100.0/24").is_private
    assert Prefix4("10.1.2.3/8", strict=False) == ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(ValueError):
        Prefix4("10.1.2.3/8")
    with pytest.raises(TypeError):
        p < ipaddress.ip_network("::/0")  # noqa: B015 - ordering across versions refuses, as ipaddress does
    assert p != ipaddress.ip_network("::/0") and p != "198.51.100.0/24"
    assert p != (198 << 24 | 51 << 16 | 100 << 8) and p != 24  # not the network's integer, nor anything small
    assert list(ipaddress.collapse_addresses([p.as_ipaddress(), parse_prefix("198.51.101.0/24").as_ipaddress()]))
    assert sorted([parse_prefix("10.0.0.0/8"), ipaddress.ip_network("9.0.0.0/8"), parse_prefix("10.0.0.0/7")]) == [
        ipaddress.ip_network("9.0.0.0/8"), ipaddress.ip_network("10.0.0.0/7"), ipaddress.ip_network("10.0.0.0/8")]
