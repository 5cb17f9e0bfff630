"""Netlink messages we build, checked by pyroute2's own parser (an independent implementation)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from common.model import parse_prefix
from fib import netlink as nl
from tests.netlink_reference import encode_route, encode_route_nhid_reference

N = ipaddress.ip_network
A = ipaddress.ip_address


def _parse(msg: bytes) -> rtmsg:
    m = rtmsg(msg)
    m.decode()
    return m


@pytest.mark.parametrize("prefix", ["198.51.100.0/24", "0.0.0.0/0", "2001:db8:100::/48", "10.1.2.3/32"])
@pytest.mark.parametrize("op", [nl.RTM_NEWROUTE, nl.RTM_DELROUTE])
def test_route_nhid_fast_path_equals_reference_and_parses(prefix: str, op: int) -> None:
    p = N(prefix)
    fast = nl.encode_route_nhid(op, 7, p, 4242, protocol=200, table=254, metric=20)
    ref = encode_route_nhid_reference(op, 7, p, 4242, protocol=200, table=254, metric=20)
    assert fast == ref
    m = _parse(fast)
    assert m["header"]["type"] == op and m["header"]["sequence_number"] == 7
    assert m["dst_len"] == p.prefixlen and m["proto"] == 200
    assert m.get_attr("RTA_DST") == str(p.network_address)
    assert m.get_attr("RTA_PRIORITY") == 20 and m.get_attr("RTA_TABLE") == 254
    # pyroute2 0.9.7 does not know RTA_NH_ID (attribute 30) and drops its value (the gap noted in the
    # issue): check its header there and its value in the last 4 bytes; the kernel round trip is in
    # tests/integration/test_fib_kernel.py.
    unknown = [v for k, v in m["attrs"] if k == "UNKNOWN"]
    if op == nl.RTM_NEWROUTE:
        assert [(u["header"]["type"], u["header"]["length"]) for u in unknown] == [(nl.RTA_NH_ID, 8)]
        assert int.from_bytes(fast[-4:], "little") == 4242
    else:
        assert unknown == []


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(1, 2**32 - 1), st.integers(256, 2**31 - 1))
def test_route_nhid_any_values(addr: int, length: int, nhid: int, table: int) -> None:
    p = ipaddress.ip_network((addr, length), strict=False)
    fast = nl.encode_route_nhid(nl.RTM_NEWROUTE, 1, p, nhid, protocol=201, table=table, metric=5)
    assert fast == encode_route_nhid_reference(nl.RTM_NEWROUTE, 1, p, nhid, protocol=201, table=table, metric=5)
    m = _parse(fast)
    assert m.get_attr("RTA_TABLE") == table and m["table"] == nl.RT_TABLE_COMPAT
    parsed = parse_prefix(str(p))  # what the routing core hands the writer: the same bytes
    assert nl.encode_route_nhid(nl.RTM_NEWROUTE, 1, parsed, nhid, protocol=201, table=table, metric=5) == fast


@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(1, 2**32 - 1), st.booleans(),
       st.integers(0, 2**32 - 1), st.sampled_from([254, 1000]))
def test_bound_route_encoder_equals_reference(addr: int, length: int, nhid: int, replace: bool, seq: int,
                                              table: int) -> None:
    """The writer's hot-loop encoder (constants bound once) builds exactly the reference message."""
    for p in (ipaddress.ip_network((addr, length), strict=False),
              ipaddress.ip_network((addr & 0xFFFFFFFF, min(length, 32)), strict=False)):
        enc = nl.route_encoder(protocol=200, table=table, metric=20)
        assert enc(seq, p, nhid, replace) == encode_route_nhid_reference(
            nl.RTM_NEWROUTE, seq, p, nhid, protocol=200, table=table, metric=20, replace=replace)


def test_multipath_route_parses() -> None:
    msg = encode_route(nl.RTM_NEWROUTE, 3, N("203.0.113.0/24"), [A("10.0.0.2"), A("10.0.0.3")],
                       protocol=200, table=254, metric=20)
    m = _parse(msg)
    hops = m.get_attr("RTA_MULTIPATH")
    assert [h.get_attr("RTA_GATEWAY") for h in hops] == ["10.0.0.2", "10.0.0.3"]


def test_mpls_encap_on_route_parses() -> None:
    """MPLS is absent from this kernel, so its messages are checked by pyroute2's parser instead."""
    stack = nl.mpls_label_stack([100, 200])
    assert stack == bytes.fromhex("00064000" "000c8100")  # label 100, then 200 with bottom-of-stack set
    with pytest.raises(ValueError):
        nl.mpls_label_stack([1 << 20])


def test_incoming_label_route_parses() -> None:
    msg = nl.encode_mpls_route(9, 100, [200, 300], A("10.0.0.2"), 3, protocol=200)
    m = _parse(msg)
    assert m["family"] == nl.AF_MPLS and m["proto"] == 200
    dst = m.get_attr("RTA_DST")
    assert [x["label"] for x in dst] == [100]
    newdst = m.get_attr("RTA_NEWDST")
    assert [x["label"] for x in newdst] == [200, 300] and newdst[-1]["bos"] == 1
    via = m.get_attr("RTA_VIA")
    assert via["addr"] == "10.0.0.2" and m.get_attr("RTA_OIF") == 3


def test_nexthop_messages_decode_with_our_decoder() -> None:
    """pyroute2 0.9.7 has no nexthop message class: our decoder is checked against our encoder here and
    against the kernel (`ip -json nexthop`) in tests/integration/test_fib_kernel.py."""
    msg = nl.encode_nexthop(1, 55, A("2001:db8:1::2"), 4, protocol=200, labels=[16, 17])
    nh = nl.decode_nexthop(msg)
    assert nh is not None and (nh.id, nh.oif, str(nh.gateway), nh.labels) == (55, 4, "2001:db8:1::2", (16, 17))
    g = nl.decode_nexthop(nl.encode_group(2, 56, [55, 57], protocol=200))
    assert g is not None and g.group == ((55, 1), (57, 1)) and g.protocol == 200


@pytest.mark.parametrize("prefix", ["::/0", "::1.2.3.4/128", "0.0.0.0/0", "2001:db8::/32"])
def test_decoded_prefix_keeps_the_message_family(prefix: str) -> None:
    """A route's family comes from its header, not from the size of its address: the IPv6 default
    route (no RTA_DST at all) was read back as 0.0.0.0/0 before the decoders were table-driven."""
    p = N(prefix)
    r = nl.decode_route(nl.encode_route_nhid(nl.RTM_NEWROUTE, 1, p, 9, protocol=200, table=254, metric=20))
    assert r is not None and r.prefix == p and r.nhid == 9 and r.metric == 20 and r.table == 254
    no_dst = bytearray(nl.NLMSGHDR.size + nl.RTMSG.size)  # what the kernel sends for a default route
    nl.NLMSGHDR.pack_into(no_dst, 0, len(no_dst), nl.RTM_NEWROUTE, 0, 0, 0)
    nl.RTMSG.pack_into(no_dst, nl.NLMSGHDR.size, 10 if p.version == 6 else 2, 0, 0, 0, 254, 200, 0, nl.RTN_UNICAST, 0)
    d = nl.decode_route(bytes(no_dst))
    assert d is not None and d.prefix == N("::/0" if p.version == 6 else "0.0.0.0/0")


def test_gateway_routes_decode_with_their_oifs_and_sorted_gateways() -> None:
    msg = encode_route(nl.RTM_NEWROUTE, 3, N("203.0.113.0/24"), [A("10.0.0.3"), A("10.0.0.2")],
                       protocol=200, table=254, metric=20)
    r = nl.decode_route(msg)
    assert r is not None and r.nexthops == (A("10.0.0.2"), A("10.0.0.3")) and r.oifs == (0, 0)
    assert nl.decode_route_any(msg[:4] + nl.RTM_DELROUTE.to_bytes(2, "little") + msg[6:]) is not None
    assert nl.decode_route(msg[:4] + nl.RTM_DELROUTE.to_bytes(2, "little") + msg[6:]) is None


def test_address_neighbour_and_link_messages_decode() -> None:
    """The other declarations, on messages laid out as the kernel sends them."""
    def msg(kind: int, header: bytes, *attrs: tuple[int, bytes]) -> bytes:
        body = header + b"".join(nl._rta(k, v) for k, v in attrs)
        return nl.NLMSGHDR.pack(nl.NLMSGHDR.size + len(body), kind, 0, 0, 0) + body

    addr = msg(nl.RTM_NEWADDR, nl.IFADDRMSG.pack(2, 24, 0, 0, 7), (nl.IFA_ADDRESS, bytes([10, 0, 0, 9])),
               (nl.IFA_LOCAL, bytes([10, 0, 0, 1])))
    assert nl._decode_addr(addr) == (A("10.0.0.1"), 7)  # IFA_LOCAL wins (point-to-point peers)
    neigh = msg(nl.RTM_NEWNEIGH, nl.NDMSG.pack(10, 4, 0x02, 0, 1), (nl.NDA_DST, A("2001:db8::2").packed),
                (nl.NDA_LLADDR, bytes.fromhex("020000000001")))
    assert nl.decode_neighbour(neigh) == (A("2001:db8::2"), 4, 0x02, bytes.fromhex("020000000001"))
    gone = nl.RTM_DELNEIGH.to_bytes(2, "little")
    assert nl.decode_neighbour(neigh[:4] + gone + neigh[6:]) == (A("2001:db8::2"), 4, 0, b"")
    link = msg(nl.RTM_NEWLINK, nl.IFINFOMSG.pack(0, 1, 5, nl.IFF_UP | nl.IFF_LOWER_UP, 0),
               (nl.IFLA_ADDRESS, bytes.fromhex("020000000002")))
    assert nl.decode_link_state(link) == (5, True) and nl._decode_link_mac(link) == (5, bytes.fromhex("020000000002"))
    assert nl.decode_link_state(nl.encode_del_nexthop(1, 5)) is None
