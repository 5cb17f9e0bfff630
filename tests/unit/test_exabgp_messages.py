"""ExaBGP JSON parsing against lines captured from ExaBGP 5.0.15 talking to BIRD 2.0.12."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import Origin
from routing.exabgp import messages as m

FIX = Path(__file__).parent / "fixtures"
A = ipaddress.ip_address
N = ipaddress.ip_network


def lines(name: str) -> list[bytes]:
    return (FIX / name).read_bytes().splitlines()


def test_session_capture() -> None:
    ev = [m.parse_line(x) for x in lines("exabgp_session.jsonl")]
    assert ev[0] == m.StateEvent(A("10.0.1.2"), A("10.0.1.1"), "connected")
    # FRR's default: the capability with a restart time and no family: a helper, nothing to help.
    assert ev[1] == m.OpenEvent(A("10.0.1.2"), ipaddress.IPv4Address("10.255.0.2"), 64512, 240,
                                m.GracefulRestart(120, frozenset(), frozenset(), False))
    assert isinstance(ev[2], m.StateEvent) and ev[2].state == "up"
    u = ev[3]
    assert isinstance(u, m.UpdateEvent)
    assert u.attrs.as_path == (64512,) and u.attrs.origin is Origin.IGP
    got = [(str(p), str(nh)) for p, nh, _ in u.announce]
    assert got == [("198.51.100.0/24", "10.0.1.2"), ("10.99.0.0/16", "10.0.1.2")]
    # Listed under the global and the link-local next hop: only the global one is kept.
    u6 = ev[4]
    assert isinstance(u6, m.UpdateEvent)
    assert [(str(p), str(nh)) for p, nh, _ in u6.announce] == [("2001:db8:100::/48", "2001:db8:1::2")]
    assert ev[5] == m.EorEvent(A("10.0.1.2"), "ipv4", "unicast")


@pytest.mark.parametrize(("restart", "fams", "want_fwd"), [
    (False, [("ipv4", 0x80), ("ipv6", 0x00)], {"ipv4"}),
    (True, [("ipv4", 0x00)], set()),
])
def test_graceful_restart_capability_as_exabgp_prints_it(restart: bool, fams: list, want_fwd: set) -> None:
    """Printed by ExaBGP's own serializer (which labels the F bit "restart" and the R bit
    "forwarding"): the bits are what we read."""
    from exabgp.bgp.message.open.capability.graceful import Graceful
    from exabgp.protocol.family import AFI, SAFI

    cap = Graceful().set(Graceful.RESTART_STATE if restart else 0, 300,
                         [(getattr(AFI, a), SAFI.unicast, f) for a, f in fams])
    line = ('{"exabgp": "5.0.0", "type": "open", "neighbor": {"address": {"local": "10.0.1.1", "peer": "10.0.1.2"}, '
            '"direction": "receive", "open": {"version": 4, "asn": 64512, "hold_time": 90, "router_id": "10.255.0.2", '
            '"capabilities": {"64": ' + cap.json() + '}}}}')
    ev = m.parse_line(line.encode())
    assert isinstance(ev, m.OpenEvent) and ev.graceful_restart is not None
    assert ev.graceful_restart == m.GracefulRestart(300, frozenset(a for a, _f in fams), frozenset(want_fwd), restart)


def test_down_capture() -> None:
    ev = [m.parse_line(x) for x in lines("exabgp_down.jsonl")]
    assert isinstance(ev[0], m.UpdateEvent) and [str(p) for p in ev[0].withdraw] == ["198.51.100.0/24", "10.99.0.0/16"]
    assert ev[1] == m.NotificationEvent(A("10.0.1.2"), 6, 2, "receive")
    assert ev[2] == m.StateEvent(A("10.0.1.2"), A("10.0.1.1"), "down", "notification received (6,2)")
    assert isinstance(ev[-1], m.Shutdown)


def test_acks_and_comments() -> None:
    assert m.parse_line(b"done\n") == m.Ack(True)
    assert m.parse_line(b"error\n") == m.Ack(False)
    assert m.parse_line(b"# relay pid 5\n") is None
    assert m.parse_line(b"\n") is None


def test_attributes_labels_and_sets() -> None:
    line = (
        b'{"exabgp":"5.0.0","type":"update","neighbor":{"address":{"local":"10.0.1.1","peer":"10.0.1.2"},'
        b'"message":{"update":{"attribute":{"origin":"incomplete","med":7,"local-preference":300,'
        b'"as-path":{"0":{"element":"as-sequence","value":[64512,64513]},"1":{"element":"as-set","value":[9,8]}},'
        b'"community":[[64512,1]],"large-community":[[64512,1,2]]},'
        b'"announce":{"ipv4 nlri-mpls":{"10.0.1.2":[{"nlri":"198.51.100.0/24","label":[[100]]}]},'
        b'"l2vpn vpls":{"x":[]}}}}}}'
    )
    u = m.parse_line(line)
    assert isinstance(u, m.UpdateEvent)
    assert u.attrs.as_path == (64512, 64513, 8)
    assert (u.attrs.med, u.attrs.local_pref, u.attrs.origin) == (7, 300, Origin.INCOMPLETE)
    assert u.attrs.communities == ((64512, 1),) and u.attrs.large_communities == ((64512, 1, 2),)
    assert u.announce == ((N("198.51.100.0/24"), A("10.0.1.2"), (100,)),)


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"[1,2]",
        b'{"type":"state"}',
        b'{"type":"state","neighbor":{"address":{"peer":"x","local":"10.0.0.1"},"state":"up"}}',
        b'{"type":"state","neighbor":{"address":{"peer":"10.0.0.2","local":"10.0.0.1"},"state":"bogus"}}',
        b'{"type":"update","neighbor":{"address":{"peer":"10.0.0.2"},"message":{"update":{"attribute":'
        b'{"origin":"weird"}}}}}',
        b'{"type":"update","neighbor":{"address":{"peer":"10.0.0.2"},"message":{"update":{"announce":'
        b'{"ipv4 unicast":{"10.0.0.2":[{"nlri":"300.0.0.0/8"}]}}}}}}',
        b'{"type":"update","neighbor":{"address":{"peer":"10.0.0.2"},"message":{"update":{"attribute":'
        b'{"med":-1}}}}}',
    ],
)
def test_malformed_is_a_typed_error(line: bytes) -> None:
    with pytest.raises(m.MalformedMessage):
        m.parse_line(line)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_unexpected(data: bytes) -> None:
    try:
        m.parse_line(data)
    except m.MalformedMessage:
        pass


@given(json_values, st.sampled_from(["state", "update", "open", "notification", "x"]))
def test_arbitrary_json_shapes_never_raise_unexpected(value, kind) -> None:
    import orjson

    doc = {"type": kind, "neighbor": {"address": {"peer": "10.0.0.2", "local": "10.0.0.1"}, "state": value,
                                      "message": {"update": {"attribute": value, "announce": value,
                                                             "withdraw": value}}, "open": value,
                                      "notification": value}}
    try:
        m.parse_line(orjson.dumps(doc))
    except m.MalformedMessage:
        pass


def test_commands_refuse_non_ascii() -> None:
    assert m.teardown(A("10.0.1.2"), 1) == "neighbor 10.0.1.2 teardown 1"
    with pytest.raises(m.BadCommand):
        m.raw("neighbor 10.0.1.2 announce route 192.0.2.0/24 next-hop self community [65000:1] \u00e9")
    with pytest.raises(m.BadCommand):
        m.raw("neighbor 10.0.1.2 teardown 2\nneighbor 10.0.1.3 teardown 2")
    with pytest.raises(m.BadCommand):
        m.teardown(A("10.0.1.2"), 0)


def test_addresses_are_parsed_once_per_text() -> None:
    """Peer and next-hop addresses are cached by text (issue 12): equal texts give the same object."""
    from routing.exabgp.messages import _addr

    assert _addr("10.0.1.2") is _addr("10.0.1.2")
    assert _addr("fe80::1%eth0") == _addr("fe80::1")


def test_compact_nlri_reads_as_the_object_form() -> None:
    """``exabgp.api.compact`` (set by ``routing/exabgp/conf.py``) prints a plain prefix as a bare
    string: the same UPDATE, captured from ExaBGP in both forms, must give the same event."""
    verbose, compact = (m.parse_line(x) for x in lines("exabgp_compact.jsonl") if not x.startswith(b"#"))
    assert b'"nlri"' not in lines("exabgp_compact.jsonl")[3]
    assert isinstance(verbose, m.UpdateEvent) and verbose == compact
    assert [(str(p), str(nh)) for p, nh, _ in compact.announce] == [("198.51.100.0/24", "10.0.1.2"),
                                                                      ("10.99.0.0/16", "10.0.1.2")]
    assert [str(p) for p in compact.withdraw] == ["203.0.113.0/24"] and compact.attrs.med == 5


def test_generated_environment_asks_for_compact_nlri() -> None:
    from routing.exabgp.conf import environment
    from tests.unit.factories import config

    assert environment(config())["exabgp_api_compact"] == "true"


def test_as_paths_are_shared_between_updates_and_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def upd(med: int, path: list[int]) -> m.UpdateEvent:
        line = ('{"type": "update", "neighbor": {"address": {"local": "10.0.1.1", "peer": "10.0.1.2"}, '
                '"message": {"update": {"attribute": {"origin": "igp", "as-path": {"0": {"element": '
                f'"as-sequence", "value": {path}}}}}, "med": {med}}}, "announce": {{"ipv4 unicast": '
                '{"10.0.1.2": ["198.51.100.0/24"]}}}}}}').encode()
        ev = m.parse_line(line)
        assert isinstance(ev, m.UpdateEvent)
        return ev

    a, b = upd(1, [64512, 3356]), upd(2, [64512, 3356])
    assert a.attrs is not b.attrs and a.attrs.as_path is b.attrs.as_path == (64512, 3356)
    monkeypatch.setattr(m, "AS_PATHS_MAX", 3)
    for k in range(10):
        upd(3, [64512, k])
    assert len(m._AS_PATHS) <= 4
    assert upd(4, [64512, 3356]).attrs.as_path == (64512, 3356)  # cleared, not wrong
