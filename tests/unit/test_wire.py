"""``routing.exabgp.wire``: raw UPDATE bodies -> events, checked against what production does today.

The reference is the JSON path, run in-process: ExaBGP's own decoder (``Update.unpack_message``), its
JSON encoder (``JSON.update``, compact) and :func:`routing.exabgp.messages.parse_line`. Generated valid
UPDATEs must come out of :func:`wire.parse_update` (and of ``parse_line`` on the ``U ...`` line) as the
same event (four-octet sessions without ADD-PATH: the only ones whose UPDATEs the launcher passes
on undecoded); any bytes at all must give an event, None or an :class:`wire.UpdateError`, nothing
else; and the RFC 7606 cases are pinned one by one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.model import Attributes, IPAddress, Origin, Prefix4, Prefix6, parse_address
from routing.exabgp import lean_reactor, messages, wire
from routing.exabgp.messages import EorEvent, UpdateEvent

PEERS = (parse_address("10.0.1.2"), parse_address("2001:db8:ffff::2"))
PEER = PEERS[0]
AS_TRANS = 23456

# path attribute flags and type codes (RFC 4271 4.3, RFC 4760, RFC 6793, RFC 8092)
OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED = 0x80, 0x40, 0x20, 0x10
WELL_KNOWN = TRANSITIVE
OPT_TRANS = OPTIONAL | TRANSITIVE
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR = 1, 2, 3, 4, 5, 6, 7
COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST, MP_REACH, MP_UNREACH, EXT_COMMUNITIES = 8, 9, 10, 14, 15, 16
AS4_PATH, AS4_AGGREGATOR, LARGE_COMMUNITY = 17, 18, 32
AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET = 1, 2, 3, 4

#: The families the routing core takes; EOR of any other is nothing to it (see :func:`routing_view`).
FAMILIES = {("ipv4", "unicast"), ("ipv6", "unicast"), ("ipv4", "nlri-mpls"), ("ipv6", "nlri-mpls")}

Event = UpdateEvent | EorEvent | None


# --------------------------------------------------------------------------------------------------
# The reference: ExaBGP's decoder + ExaBGP's JSON encoder + messages.parse_line, as production runs
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def exabgp_logging() -> None:
    """ExaBGP's parser logs; its entry point sets logging up before any UPDATE is parsed."""
    from exabgp.environment import getenv
    from exabgp.logger import log

    log.init(getenv())


class Negotiated(lean_reactor.SampleNegotiated):
    """A session as ExaBGP's decoder sees it: ``asn4`` as given, no ADD-PATH, no extended next hop,
    and the families the wire parser reads plus IPv4/IPv6 multicast (negotiated so that ExaBGP decodes
    them, and both paths must then ignore them)."""

    def __init__(self, asn4: bool) -> None:
        from exabgp.protocol.family import AFI, SAFI

        super().__init__()
        self.asn4 = asn4
        self.families = [(afi, safi) for afi in (AFI.ipv4, AFI.ipv6)
                         for safi in (SAFI.unicast, SAFI.nlri_mpls, SAFI.multicast)]


class Neighbor(dict):
    """What ``JSON.update`` reads of ExaBGP's Neighbor: its keys and uid."""

    uid = "test-wire"


def exabgp_decode(body: bytes, asn4: bool) -> Any:
    """ExaBGP's ``Update`` (or ``EOR``) for ``body``, with the NLRI turned into withdrawals when the
    attributes were malformed, as ``reactor/protocol.py`` does before the message goes to the API."""
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.update import Update
    from exabgp.bgp.message.update.attribute import Attribute

    update = Update.unpack_message(body, Direction.IN, Negotiated(asn4))
    # lean_reactor.install_raw_updates patches unpack_message process-wide: then this is no reference
    assert type(update).__module__.startswith("exabgp."), f"ExaBGP's decoder is patched here: {type(update)}"
    if Attribute.CODE.INTERNAL_TREAT_AS_WITHDRAW in update.attributes:
        for nlri in update.nlris:
            nlri.action = Action.WITHDRAW
    return update


def exabgp_line(update: Any, peer: IPAddress) -> bytes:
    """The line ExaBGP writes to the API process for a received UPDATE (``encoder json``, compact)."""
    from exabgp.reactor.api.response.json import JSON

    neighbor = Neighbor({"local-address": "10.0.1.1" if peer.version == 4 else "2001:db8:ffff::1",
                         "peer-address": str(peer), "local-as": 65000, "peer-as": 64512,
                         "router-id": "10.255.0.2"})
    encoder = JSON("5.0.0")
    encoder.compact = True
    return encoder.update(neighbor, "receive", update, None, "", "").encode()


def json_path(body: bytes, asn4: bool, peer: IPAddress = PEER) -> Event:
    """What production makes of ``body`` today."""
    event = messages.parse_line(exabgp_line(exabgp_decode(body, asn4), peer))
    assert event is None or isinstance(event, UpdateEvent | EorEvent)
    return event


def u_line(peer: IPAddress, body: bytes, asn4: bool) -> bytes:
    """The raw path's API line."""
    return b"U %s %s" % (str(peer).encode(), body.hex().encode())


def routing_view(event: Event) -> Event:
    """The event as the routing core acts on it (``routing/core.py``), where the two paths may
    legitimately differ in form:

    - an UPDATE that carries no route of the core's families (attributes alone, or only other
      families' NLRI): ExaBGP's JSON holds its attribute block, so ``parse_line`` makes an event
      without routes; the wire parser returns None. The core applies nothing from either (only its
      count of UPDATEs received differs).
    - the attributes of an UPDATE that announces nothing: the JSON path parses whatever attribute
      block came with the withdrawals, the wire parser leaves ``Attributes()``; the core reads
      ``attrs`` only to build announced paths.
    - End-of-RIB of another family: ExaBGP reports it, the wire parser ignores other families.
    """
    if isinstance(event, EorEvent):
        return event if (event.afi, event.safi) in FAMILIES else None
    if event is None or (not event.announce and not event.withdraw):
        return None
    if not event.announce:
        return replace(event, attrs=Attributes())
    return event


def comparable(event: Event) -> Event:
    """:func:`routing_view`, with each community list in ascending order. Why: ExaBGP sorts standard,
    extended and large communities as it decodes them (``Communities.add``), so the JSON path never
    shows the order they came in; RFC 1997, 4360 and 8092 give that order no meaning. The exact order
    is compared on its own (:func:`test_communities_in_the_order_the_json_path_gives_them`), so that a
    difference there does not hide every other one here."""
    event = routing_view(event)
    if isinstance(event, UpdateEvent) and event.announce:
        a = event.attrs
        event = replace(event, attrs=replace(a, communities=tuple(sorted(a.communities)),
                                             ext_communities=tuple(sorted(a.ext_communities)),
                                             large_communities=tuple(sorted(a.large_communities))))
    return event


# --------------------------------------------------------------------------------------------------
# Building UPDATE bodies
# --------------------------------------------------------------------------------------------------

def attribute(flags: int, code: int, data: bytes, extended: bool = False) -> bytes:
    """One path attribute (RFC 4271 4.3); extended length when asked or needed."""
    if extended or len(data) > 255:
        return bytes([flags | EXTENDED, code]) + len(data).to_bytes(2, "big") + data
    return bytes([flags & ~EXTENDED, code, len(data)]) + data


def body_of(attributes: bytes = b"", nlri: bytes = b"", withdrawn: bytes = b"") -> bytes:
    """An UPDATE body (what follows the 19-byte header)."""
    return lean_reactor.update_wire(attributes, nlri, withdrawn=withdrawn)


def prefix_bytes(plen: int, address: bytes, label_fields: tuple[int, ...] = ()) -> bytes:
    """One NLRI (RFC 4271 4.3, RFC 8277 2): the length in bits of labels + prefix, the 3-byte label
    fields, then as many address bytes as the prefix length needs."""
    return (bytes([24 * len(label_fields) + plen]) + b"".join(f.to_bytes(3, "big") for f in label_fields)
            + address[:(plen + 7) // 8])


def v4(text: str) -> bytes:
    """``"10.0.0.0/8"`` as an NLRI."""
    n = ipaddress.IPv4Network(text)
    return prefix_bytes(n.prefixlen, n.network_address.packed)


def v6(text: str) -> bytes:
    """``"2001:db8::/32"`` as an NLRI."""
    n = ipaddress.IPv6Network(text)
    return prefix_bytes(n.prefixlen, n.network_address.packed)


def segment(kind: int, asns: list[int], width: int) -> bytes:
    """One AS_PATH segment of two- or four-byte ASNs."""
    return bytes([kind, len(asns)]) + b"".join(a.to_bytes(width, "big") for a in asns)


def label_field(label: int, tc: int = 0, bottom: bool = True) -> int:
    """A 3-byte label field (RFC 3032): label, traffic class, bottom-of-stack."""
    return label << 4 | tc << 1 | int(bottom)


ORIGIN_IGP = attribute(WELL_KNOWN, ORIGIN, b"\x00")
PATH_64512 = attribute(WELL_KNOWN, AS_PATH, segment(AS_SEQUENCE, [64512], 4))
NH_10_0_1_2 = attribute(WELL_KNOWN, NEXT_HOP, bytes([10, 0, 1, 2]))
BASE = ORIGIN_IGP + PATH_64512 + NH_10_0_1_2


# --------------------------------------------------------------------------------------------------
# Generated valid UPDATEs
# --------------------------------------------------------------------------------------------------

@dataclass
class Generated:
    """A valid UPDATE body and what it says, to check the reference before comparing with it."""

    body: bytes
    asn4: bool
    peer: IPAddress
    #: (prefix, next hop, labels) of the core's families, in wire order
    announce: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, IPAddress, tuple[int, ...]]] = \
        field(default_factory=list)
    withdraw: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    #: the AS path the core should see, when known here (None: only compared between the two paths)
    as_path: tuple[int, ...] | None = None


@st.composite
def prefix(draw: st.DrawFn, bits: int) -> tuple[int, bytes]:
    """(length, address bytes): any length (the usual ones often), host bits set or not."""
    plen = draw(st.integers(0, bits) | st.sampled_from([bits, bits // 2 + 8, bits // 2, bits // 4 + 1]))
    addr = draw(st.integers(0, 2**bits - 1))
    if draw(st.booleans()):
        addr &= ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return plen, addr.to_bytes(bits // 8, "big")


def network(plen: int, address: bytes) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The prefix an NLRI names: the address bytes it carries, host bits cleared."""
    kept = address[:(plen + 7) // 8] + bytes(len(address) - (plen + 7) // 8)
    return ipaddress.ip_network((kept, plen), strict=False)


PREFIX = {32: prefix(32), 128: prefix(128)}
U32 = st.integers(0, 2**32 - 1)
ASN4 = st.integers(1, 2**32 - 1)  # no AS 0 (RFC 7607)
#: A 3-byte label field's label and traffic class: 16 and up (0-15 are reserved), and not 0x80000, whose
#: field without bottom-of-stack is 0x800000, the withdrawal compatibility value that ends a stack.
LABEL = st.tuples(st.integers(16, 2**20 - 1).filter(lambda label: label != 0x80000), st.integers(0, 7))


@st.composite
def labeled_nlri(draw: st.DrawFn, bits: int) -> tuple[bytes, Any, tuple[int, ...]]:
    """A labeled unicast NLRI (RFC 8277): one or more labels, bottom-of-stack on the last.

    ExaBGP reads a stack the RFC 8277 2.2 way (no Multiple Labels Capability: the S bit is ignored on
    a one-label stack and its *length* says where it ends), so when the bits after the first label
    could be a prefix of this family (``0 < 24 * (labels - 1) + length <= bits``) it stops after one
    label and takes the rest as the prefix. Such multi-label stacks (RFC 3107 style) are left out."""
    labels = draw(st.lists(LABEL, min_size=1, max_size=3))
    plen, addr = draw(PREFIX[bits])
    if len(labels) > 1 and 0 < 24 * (len(labels) - 1) + plen <= bits:
        labels = labels[:1]
    fields = tuple(label_field(lab, tc, i == len(labels) - 1) for i, (lab, tc) in enumerate(labels))
    return prefix_bytes(plen, addr, fields), network(plen, addr), tuple(lab for lab, _tc in labels)


LABELED = {32: labeled_nlri(32), 128: labeled_nlri(128)}


Segments = list[tuple[int, list[int]]]


def segment_list(kinds: list[int], asn: st.SearchStrategy[int], min_size: int = 0) -> st.SearchStrategy[Segments]:
    """AS_PATH / AS4_PATH segments of the given types, 1-5 ASNs each (a segment of none is left out:
    RFC 6793 6 calls it malformed)."""
    return st.lists(st.tuples(st.sampled_from(kinds), st.lists(asn, min_size=1, max_size=5)),
                    min_size=min_size, max_size=4)


def encode(segs: Segments, width: int) -> bytes:
    """Segments as an AS_PATH / AS4_PATH value of two- or four-byte ASNs."""
    return b"".join(segment(k, a, width) for k, a in segs)


def flat(segs: Segments) -> tuple[int, ...]:
    """A path as the core holds it (``messages._as_path``): a set (or confederation set) is one hop,
    its lowest member."""
    out: list[int] = []
    for kind, asns in segs:
        if kind in (AS_SET, AS_CONFED_SET):
            out.append(min(asns))
        else:
            out.extend(asns)
    return tuple(out)


#: AS_PATH of a four-octet session. Left out: AS_CONFED_SET, which ExaBGP's JSON names "as-sequence"
#: (``aspath.py``: ``CONFED_SET.NAME``), so the JSON path counts its members as a sequence.
AS_PATH_4 = segment_list([AS_SEQUENCE, AS_SEQUENCE, AS_SET, AS_CONFED_SEQUENCE], ASN4)


def communities(width: int) -> st.SearchStrategy[bytes]:
    """1-4 communities of ``width`` bytes, repeats likely for standard and extended ones (ExaBGP sorts
    those); large ones are distinct (RFC 8092 5: duplicates MUST NOT be sent; see the test below)."""
    one = st.binary(min_size=width, max_size=width) | st.sampled_from([b"\xfd\xe8" + bytes(width - 2), b"\xff" * width])
    return st.lists(one, min_size=1, max_size=4, unique=width == 12).map(b"".join)


COMMUNITY_ATTRS = [(COMMUNITIES, communities(4)), (EXT_COMMUNITIES, communities(8)), (LARGE_COMMUNITY, communities(12))]
V4_NH = st.binary(min_size=4, max_size=4)
#: A global IPv6 next hop (anything outside fe80::/10), and a link-local one.
V6_NH = st.binary(min_size=16, max_size=16).map(
    lambda nh: b"\x20\x01" + nh[2:] if ipaddress.IPv6Address(nh).is_link_local else nh)
LINK_LOCAL = st.binary(min_size=8, max_size=8).map(lambda iid: b"\xfe\x80" + bytes(6) + iid)


@st.composite
def mp_nlri(draw: st.DrawFn, afi: int, safi: int, count: int,
            withdraw: bool) -> list[tuple[bytes, Any, tuple[int, ...]]]:
    """``count`` NLRI of a family for MP_REACH (``withdraw`` False) or MP_UNREACH."""
    bits = 32 if afi == 1 else 128
    out = []
    for _ in range(count):
        if safi == 4:
            raw, net, labels = draw(LABELED[bits])
            if withdraw and draw(st.booleans()):  # RFC 8277 2.4: a 0x800000 compatibility field
                plen = raw[0] - 24 * len(labels)
                raw = bytes([24 + plen]) + (0x800000).to_bytes(3, "big") + raw[1 + 3 * len(labels):]
        else:
            plen, addr = draw(PREFIX[bits])
            raw, net, labels = prefix_bytes(plen, addr), network(plen, addr), ()
        out.append((raw, net, labels))
    return out


@st.composite
def updates(draw: st.DrawFn) -> Generated:
    """A valid UPDATE body: any mix of IPv4 withdrawals and NLRI, MP_REACH_NLRI / MP_UNREACH_NLRI of
    IPv4/IPv6 unicast and labeled unicast (and multicast, which both paths ignore), the attributes the
    core reads and a few it does not, in any order, with extended length or not, with the four unused
    flag bits set or not (RFC 4271 4.3: ignored)."""
    # four-octet sessions only: the launcher passes raw UPDATEs of those alone (lean_reactor.RawUpdates),
    # a two-octet session's AS_PATH / AS4_PATH (RFC 6793 4.2.3) stays ExaBGP's to decode
    asn4 = True
    g = Generated(b"", asn4, draw(st.sampled_from(PEERS)))
    attrs: list[tuple[int, int, bytes]] = []

    withdrawn4 = draw(st.lists(PREFIX[32], max_size=4))
    g.withdraw += [network(p, a) for p, a in withdrawn4]
    announce4 = draw(st.lists(PREFIX[32], max_size=5))
    nh4 = draw(V4_NH)
    g.announce += [(network(p, a), ipaddress.IPv4Address(nh4), ()) for p, a in announce4]

    unreach_family = draw(st.sampled_from([None, (2, 1), (1, 4), (2, 4), (1, 1), (1, 2)]))
    if unreach_family is not None:
        afi, safi = unreach_family
        # empty (an End-of-RIB when alone, often) only if no IPv4 route is in the UPDATE
        count = draw(st.integers(0, 4) | st.just(0)) if not (withdrawn4 or announce4) else draw(st.integers(1, 4))
        nlri = draw(mp_nlri(afi, safi, count, withdraw=True))
        g.withdraw += [net for _raw, net, _labels in nlri if safi != 2]
        attrs.append((OPTIONAL, MP_UNREACH, bytes([0, afi, safi]) + b"".join(raw for raw, _n, _l in nlri)))

    reach_family = draw(st.sampled_from([None, None, (2, 1), (1, 4), (2, 4), (1, 1), (2, 2)]))
    if reach_family is not None:
        afi, safi = reach_family
        if afi == 1:
            nh = draw(V4_NH)
        else:  # global, or global + link-local (RFC 2545 3): the JSON path keeps the global one
            nh = draw(V6_NH) + (draw(LINK_LOCAL) if draw(st.booleans()) else b"")
        # ExaBGP refuses an MP_REACH_NLRI without NLRI (Notify 3/9)
        nlri = draw(mp_nlri(afi, safi, draw(st.integers(1, 4)), withdraw=False))
        if draw(st.integers(0, 7)) == 0:  # a long one: extended length, and the same prefixes again
            nlri *= 20
        nh_address = ipaddress.ip_address(nh[:4] if afi == 1 else nh[:16])
        g.announce += [(net, nh_address, labels) for _raw, net, labels in nlri if safi != 2]
        attrs.append((OPTIONAL, MP_REACH, bytes([0, afi, safi, len(nh)]) + nh + b"\x00"
                      + b"".join(raw for raw, _n, _l in nlri)))

    present = draw(st.integers(0, 2**12 - 1))  # which of the optional parts below are there, one draw
    if announce4 or reach_family or present & 1:  # ORIGIN and AS_PATH: mandatory with routes only
        attrs.append((WELL_KNOWN, ORIGIN, bytes([draw(st.integers(0, 2))])))
        segs = draw(AS_PATH_4)
        attrs.append((WELL_KNOWN, AS_PATH, encode(segs, 4)))
        g.as_path = flat(segs)
    if announce4 or present & 2:
        attrs.append((WELL_KNOWN, NEXT_HOP, nh4))
    if present & 4:
        attrs.append((OPTIONAL, MED, draw(U32).to_bytes(4, "big")))
    if present & 8:
        attrs.append((WELL_KNOWN, LOCAL_PREF, draw(U32).to_bytes(4, "big")))
    if present & 16:
        attrs.append((WELL_KNOWN, ATOMIC_AGGREGATE, b""))
    if present & 32:
        attrs.append((OPT_TRANS, AGGREGATOR, draw(U32).to_bytes(4, "big") + bytes([10, 0, 0, 9])))
    for bit, (code, values) in zip((64, 128, 256), COMMUNITY_ATTRS, strict=True):
        if present & bit:
            attrs.append((OPT_TRANS | (PARTIAL if present & 2048 else 0), code, draw(values)))
    if present & 512:  # unknown optional attributes, transitive or not: ignored by both
        attrs.append((draw(st.sampled_from([OPT_TRANS, OPTIONAL])), draw(st.sampled_from([99, 201, 254])),
                      draw(st.binary(max_size=6))))
    if present & 1024:
        attrs.append((OPTIONAL, ORIGINATOR_ID, bytes([10, 255, 0, 7])))

    order = draw(st.permutations(range(len(attrs))))
    # per attribute: the four unused flag bits, and the extended length bit one time in four
    bits = draw(st.lists(st.integers(0, 63), min_size=len(attrs), max_size=len(attrs)))
    wire_attrs = b"".join(attribute(attrs[i][0] | b & 15, attrs[i][1], attrs[i][2], extended=b >> 4 == 3)
                          for i, b in zip(order, bits, strict=True))
    g.body = body_of(wire_attrs, b"".join(prefix_bytes(p, a) for p, a in announce4),
                     b"".join(prefix_bytes(p, a) for p, a in withdrawn4))
    return g


def check_reference(ref: Event, g: Generated) -> None:
    """The JSON path read the generated UPDATE as it was meant: the routes, next hops and labels
    (so a shape ExaBGP mangles cannot make both sides agree on something wrong)."""
    if not g.announce and not g.withdraw:
        return
    assert isinstance(ref, UpdateEvent), ref
    assert [(p, nh, labels) for p, nh, labels in ref.announce] == g.announce
    assert list(ref.withdraw) == g.withdraw
    if g.announce and g.as_path is not None:
        assert ref.attrs.as_path == g.as_path


# --------------------------------------------------------------------------------------------------
# 1. Differential: the wire parser against the JSON path
# --------------------------------------------------------------------------------------------------

@settings(max_examples=350, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=updates())
def test_the_wire_parser_reads_what_exabgp_and_the_json_path_read(g: Generated) -> None:
    """Valid UPDATEs of every shape the core reads give the event the JSON path gives today (announce
    and withdraw in the same order: both list base NLRI before MP_REACH_NLRI / MP_UNREACH_NLRI, in wire
    order), and ``parse_line`` on the raw path's ``U`` line gives exactly what ``parse_update`` does."""
    ref = json_path(g.body, g.asn4, g.peer)
    check_reference(ref, g)
    got = wire.parse_update(g.peer, g.body)
    assert comparable(got) == comparable(ref), f"body {g.body.hex()} asn4={g.asn4}"
    assert messages.parse_line(u_line(g.peer, g.body, g.asn4)) == got


# --------------------------------------------------------------------------------------------------
# 2. Hostile input: an event, None or an UpdateError, never anything else
# --------------------------------------------------------------------------------------------------

def outcome(body: bytes, asn4: bool, peer: IPAddress = PEER) -> Event | wire.UpdateError:
    """What the wire parser makes of ``body``, checked for shape; an error is returned, not raised.
    ``parse_line`` on the ``U`` line must come to the same thing."""
    result: Event | wire.UpdateError
    try:
        result = wire.parse_update(peer, body)
    except wire.UpdateError as exc:
        result = exc
    check_shape(result, peer)
    if not body:
        # An empty hex field goes with the whitespace parse_line strips; there is no such line: an
        # UPDATE is at least 23 bytes with its header (RFC 4271 4.3, 6.1), ExaBGP passes no shorter one.
        return result
    try:
        via_line: Event | wire.UpdateError = messages.parse_line(u_line(peer, body, asn4))  # type: ignore[assignment]
    except wire.UpdateError as exc:
        via_line = exc
    assert type(via_line) is type(result)
    if isinstance(result, wire.TreatAsWithdraw):
        assert isinstance(via_line, wire.TreatAsWithdraw) and via_line.event == result.event
    elif isinstance(result, wire.SessionReset):
        assert isinstance(via_line, wire.SessionReset) and via_line.subcode == result.subcode
    else:
        assert via_line == result
    return result


def is_prefix(p: object) -> bool:
    """A prefix as the core keys its tables: the model's types, host bits clear."""
    return isinstance(p, Prefix4 | Prefix6) and str(ipaddress.ip_network(str(p))) == str(p)


def check_shape(result: Event | wire.UpdateError, peer: IPAddress) -> None:
    """Whatever came out is one of the documented things, made of the right types."""
    if isinstance(result, wire.TreatAsWithdraw):
        ev = result.event
        assert isinstance(ev, UpdateEvent) and ev.peer == peer and isinstance(result.why, str)
        assert ev.announce == () and ev.attrs == Attributes()
        assert all(is_prefix(p) for p in ev.withdraw)
    elif isinstance(result, wire.SessionReset):
        assert 1 <= result.subcode <= 11 and isinstance(result.why, str)  # RFC 4271 6.3's subcodes
        # parse_update turns an unexpected exception (a decoder bug) into a session reset so that it
        # never escapes; that reset is a bug all the same (a peer's session dropped for our mistake)
        cause = result.__cause__
        assert cause is None or isinstance(cause, wire.UpdateError), f"decoder bug: {cause!r} ({result.why})"
    elif isinstance(result, EorEvent):
        assert result.peer == peer and (result.afi, result.safi) in FAMILIES
    elif isinstance(result, UpdateEvent):
        assert result.peer == peer and isinstance(result.attrs, Attributes)
        assert isinstance(result.attrs.origin, Origin) and all(0 <= a < 2**32 for a in result.attrs.as_path)
        assert all(is_prefix(p) for p in result.withdraw)
        for p, nh, labels in result.announce:
            assert is_prefix(p) and isinstance(nh, ipaddress.IPv4Address | ipaddress.IPv6Address)
            assert all(0 <= label < 2**20 for label in labels)
    else:
        assert result is None


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120), asn4=st.booleans())
def test_any_bytes_give_an_event_none_or_an_update_error(body: bytes, asn4: bool) -> None:
    """Random bytes (mostly inconsistent lengths) never raise IndexError, ValueError, struct.error..."""
    outcome(body, asn4)


hostile_codes = st.sampled_from([ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR,
                                 COMMUNITIES, MP_REACH, MP_UNREACH, EXT_COMMUNITIES, AS4_PATH, AS4_AGGREGATOR,
                                 LARGE_COMMUNITY, 0, 11, 40, 99, 128, 255])


@st.composite
def mp_value(draw: st.DrawFn) -> bytes:
    """An MP_REACH_NLRI / MP_UNREACH_NLRI value with a known or unknown family and random rest."""
    afi, safi = draw(st.sampled_from([(1, 1), (2, 1), (1, 4), (2, 4), (1, 2), (3, 1), (2, 128)]))
    head = afi.to_bytes(2, "big") + bytes([safi])
    if draw(st.booleans()):  # MP_REACH-like: next hop length, next hop, reserved
        nh_len = draw(st.sampled_from([4, 16, 32, 0, 12, 255]))
        head += bytes([nh_len]) + draw(st.binary(min_size=0, max_size=nh_len + 1))
    return head + draw(st.binary(max_size=40))


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Bodies whose framing is mostly right (so the parser gets past the length checks) and whose
    attributes have any flags, codes and values: deep into every attribute's decoder."""
    attrs = b""
    for _ in range(draw(st.integers(0, 6))):
        code = draw(hostile_codes)
        mp = code in (MP_REACH, MP_UNREACH) and draw(st.booleans())
        value = draw(mp_value()) if mp else draw(st.binary(max_size=30))
        attrs += attribute(draw(st.integers(0, 255)), code, value, extended=draw(st.booleans()))
    nlri = draw(st.binary(max_size=20))
    withdrawn = draw(st.binary(max_size=12))
    return body_of(attrs, nlri, withdrawn)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_bodies(), asn4=st.booleans())
def test_well_framed_garbage_gives_an_event_none_or_an_update_error(body: bytes, asn4: bool) -> None:
    """Attributes of any flags, type and length, MP attributes of any family and next-hop length."""
    outcome(body, asn4)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid generated UPDATE with bytes overwritten, inserted, deleted or the end cut off."""
    g = draw(updates())
    body = bytearray(g.body)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["set", "set", "flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if how == "set" and body:
            body[at] = draw(st.integers(0, 255))
        elif how == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del body[at:at + draw(st.integers(1, 4))]
        else:
            del body[at:]
    return bytes(body), g.asn4


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_damaged_valid_updates_give_an_event_none_or_an_update_error(case: tuple[bytes, bool]) -> None:
    outcome(*case)


# --------------------------------------------------------------------------------------------------
# 3. RFC 7606 cases, one by one
# --------------------------------------------------------------------------------------------------

#: An UPDATE with routes everywhere they can be: withdrawn routes, IPv6 in MP_REACH, IPv4 NLRI.
WITHDRAWN = v4("203.0.113.0/24")
MP_V6 = attribute(OPTIONAL, MP_REACH, b"\x00\x02\x01\x10" + ipaddress.IPv6Address("2001:db8::1").packed + b"\x00"
                  + v6("2001:db8:1::/48"))
NLRI = v4("10.0.0.0/8") + v4("192.0.2.0/24")
CARRIED = {"203.0.113.0/24", "2001:db8:1::/48", "10.0.0.0/8", "192.0.2.0/24"}


def routes_with(extra: bytes, base: bytes = BASE) -> bytes:
    """That UPDATE with ``extra`` among its attributes."""
    return body_of(base + extra + MP_V6, NLRI, WITHDRAWN)


def treated_as_withdraw(body: bytes) -> wire.TreatAsWithdraw:
    result = outcome(body, asn4=True)
    assert isinstance(result, wire.TreatAsWithdraw), result
    return result


def session_reset(body: bytes, asn4: bool = True) -> wire.SessionReset:
    result = outcome(body, asn4)
    assert isinstance(result, wire.SessionReset), result
    return result


def test_the_well_formed_update_announces_and_withdraws_everything() -> None:
    """The base of the cases below, as the JSON path reads it."""
    body = routes_with(b"")
    ev = outcome(body, asn4=True)
    assert ev == json_path(body, asn4=True)
    assert isinstance(ev, UpdateEvent) and {str(p) for p, _nh, _l in ev.announce} | {str(p) for p in ev.withdraw} \
        == CARRIED


@pytest.mark.parametrize("origin", [attribute(WELL_KNOWN, ORIGIN, b"\x00\x00"), attribute(WELL_KNOWN, ORIGIN, b"\x03")],
                         ids=["length-2", "value-3"])
def test_a_malformed_origin_withdraws_every_prefix_the_update_carried(origin: bytes) -> None:
    """RFC 7606 7.1: treat-as-withdraw; the event withdraws exactly what the UPDATE carried (RFC 7606
    2: announced prefixes and withdrawn ones alike), each once, and announces nothing."""
    exc = treated_as_withdraw(routes_with(origin, base=PATH_64512 + NH_10_0_1_2))
    assert sorted(str(p) for p in exc.event.withdraw) == sorted(CARRIED)


def test_communities_of_six_bytes_are_treat_as_withdraw() -> None:
    """RFC 7606 7.8: a length that is not a non-zero multiple of 4."""
    exc = treated_as_withdraw(routes_with(attribute(OPT_TRANS, COMMUNITIES, b"\xfd\xe8\x00\x01\x00\x02")))
    assert sorted(str(p) for p in exc.event.withdraw) == sorted(CARRIED)


def test_a_med_of_three_bytes_is_treat_as_withdraw() -> None:
    """RFC 7606 7.4: MULTI_EXIT_DISC of a length other than 4."""
    exc = treated_as_withdraw(routes_with(attribute(OPTIONAL, MED, b"\x00\x00\x07")))
    assert sorted(str(p) for p in exc.event.withdraw) == sorted(CARRIED)


def test_an_ipv4_prefix_longer_than_32_bits_resets_the_session() -> None:
    """RFC 7606 3 (j) / RFC 4271 6.3: the NLRI cannot be parsed; Invalid Network Field."""
    assert session_reset(body_of(BASE, bytes([33, 10, 0, 0, 1, 0]))).subcode == 10
    assert session_reset(body_of(b"", withdrawn=bytes([33, 10, 0, 0, 1, 0]))).subcode == 10


def test_withdrawn_routes_running_past_the_body_reset_the_session() -> None:
    """RFC 4271 6.3: the Withdrawn Routes Length disagrees with the message; Malformed Attribute List."""
    assert session_reset(b"\x00\x10" + v4("10.0.0.0/8") + b"\x00\x00").subcode == 1
    assert session_reset(b"\x00\x05\x08\x0a").subcode == 1  # not even room for the attribute length


def test_path_attributes_running_past_the_body_reset_the_session() -> None:
    """RFC 4271 6.3: the Total Path Attribute Length disagrees with the message."""
    good = body_of(BASE, NLRI)
    too_long = good[:2] + (len(good)).to_bytes(2, "big") + good[4:]
    assert session_reset(too_long).subcode == 1


def test_an_attribute_running_past_the_attribute_field_resets_the_session() -> None:
    """An attribute's length (or its header) runs past the Total Path Attribute Length: session reset,
    Malformed Attribute List, as ``wire.py`` documents. (RFC 7606 4 itself asks for treat-as-withdraw
    here, locating the NLRI by the Total Path Attribute Length; ExaBGP does that.)"""
    cut = attribute(OPT_TRANS, COMMUNITIES, b"\xfd\xe8\x00\x01")[:-2]  # says 4 bytes, has 2
    body = body_of(BASE + cut, NLRI)
    assert session_reset(body).subcode == 1
    assert session_reset(body_of(BASE + b"\x40\x01", NLRI)).subcode == 1  # a header cut short


def test_a_malformed_aggregator_is_discarded_and_the_routes_announced() -> None:
    """RFC 7606 7.7: AGGREGATOR of the wrong length (5 bytes on a four-octet session): attribute
    discard; the UPDATE is what it is without it, as on the JSON path."""
    without = routes_with(b"")
    body = routes_with(attribute(OPT_TRANS, AGGREGATOR, b"\x00\x00\xfd\xe8\x0a"))
    ev = outcome(body, asn4=True)
    assert isinstance(ev, UpdateEvent) and len(ev.announce) == 3
    assert ev == outcome(without, asn4=True) == json_path(body, asn4=True)


@pytest.mark.parametrize("flags", [OPT_TRANS, OPT_TRANS | PARTIAL, OPTIONAL])
def test_an_unknown_optional_attribute_is_ignored(flags: int) -> None:
    """RFC 4271 5 / 9: an unrecognized optional attribute (transitive or not) is passed over."""
    without = routes_with(b"")
    body = routes_with(attribute(flags, 201, b"\x01\x02\x03\x04\x05"))
    ev = outcome(body, asn4=True)
    assert isinstance(ev, UpdateEvent) and len(ev.announce) == 3
    assert ev == outcome(without, asn4=True) == json_path(body, asn4=True)


@pytest.mark.parametrize(("body", "afi", "safi"), [
    (b"\x00\x00\x00\x00", "ipv4", "unicast"),
    (body_of(attribute(OPTIONAL, MP_UNREACH, b"\x00\x02\x01")), "ipv6", "unicast"),
    (body_of(attribute(OPTIONAL, MP_UNREACH, b"\x00\x01\x01")), "ipv4", "unicast"),
    (body_of(attribute(OPTIONAL, MP_UNREACH, b"\x00\x02\x04")), "ipv6", "nlri-mpls"),
], ids=["ipv4", "ipv6", "ipv4-mp", "ipv6-labeled"])
def test_end_of_rib(body: bytes, afi: str, safi: str) -> None:
    """RFC 4724 2: an empty UPDATE (IPv4 unicast), or one holding only an empty MP_UNREACH_NLRI."""
    for asn4 in (True, False):
        assert outcome(body, asn4) == EorEvent(PEER, afi, safi) == json_path(body, asn4)


# --------------------------------------------------------------------------------------------------
# Where the two paths could part: pinned one by one
# --------------------------------------------------------------------------------------------------

def test_communities_in_the_order_the_json_path_gives_them() -> None:
    """Standard, extended and large communities sent out of order come out as the JSON path gives them
    (ExaBGP sorts each list as it decodes it), so a session's attribute sets are the same objects on
    either path (interned: ``common.model.intern_attrs``) and exported in the same order."""
    comms = attribute(OPT_TRANS, COMMUNITIES, bytes.fromhex("fde80002" "fde80001" "00010000"))
    ext = attribute(OPT_TRANS, EXT_COMMUNITIES, bytes.fromhex("0002fde800000007" "0002fde800000001"))
    large = attribute(OPT_TRANS, LARGE_COMMUNITY, bytes.fromhex("000000020000000100000001" "000000010000000200000003"))
    body = routes_with(comms + ext + large)
    ev = outcome(body, asn4=True)
    assert ev == json_path(body, asn4=True)


def test_repeated_large_communities_are_removed() -> None:
    """RFC 8092 5: "A receiving speaker MUST silently remove redundant BGP Large Community values";
    the JSON path does (ExaBGP's ``LargeCommunities.unpack``)."""
    one = bytes.fromhex("0000fde8" "00000001" "00000002")
    body = routes_with(attribute(OPT_TRANS, LARGE_COMMUNITY, one + one))
    ev = outcome(body, asn4=True)
    assert isinstance(ev, UpdateEvent) and ev.attrs.large_communities == ((65000, 1, 2),)
    assert ev == json_path(body, asn4=True)


def test_an_empty_mp_unreach_beside_other_attributes_is_not_an_end_of_rib() -> None:
    """RFC 4724 2: the End-of-RIB of a family other than IPv4 unicast is an UPDATE that holds *only* an
    empty MP_UNREACH_NLRI. With ORIGIN beside it ExaBGP decodes an UPDATE without routes, which the core
    ignores; an End-of-RIB would end a graceful restart's stale-route hold (``routing/core.py``)."""
    body = body_of(ORIGIN_IGP + attribute(OPTIONAL, MP_UNREACH, b"\x00\x02\x01"))
    assert routing_view(json_path(body, asn4=True)) is None
    assert routing_view(outcome(body, asn4=True)) is None


def test_as4_path_from_a_four_octet_session_is_ignored() -> None:
    """RFC 6793 4.1: an AS4_PATH between NEW speakers MUST be discarded and the UPDATE processed; the
    AS_PATH is the path. (The JSON path merges it anyway: ExaBGP's ``reconcile_four_octet_as`` does
    not look at the session, so this pins the RFC, not the JSON path.)"""
    path = attribute(WELL_KNOWN, AS_PATH, segment(AS_SEQUENCE, [64512, AS_TRANS], 4))
    as4 = attribute(OPT_TRANS, AS4_PATH, segment(AS_SEQUENCE, [70000], 4))
    ev = outcome(body_of(ORIGIN_IGP + path + as4 + NH_10_0_1_2, NLRI), asn4=True)
    assert isinstance(ev, UpdateEvent) and ev.attrs.as_path == (64512, AS_TRANS)


# A two-octet session's AS4_PATH (RFC 6793 4.2.3) is ExaBGP's to merge: the launcher passes raw
# UPDATEs of four-octet sessions only and leaves every other session on ExaBGP's decoder
# (``routing/exabgp/lean_reactor.py``, RawUpdates), which the lab test of raw UPDATEs runs against.


def test_a_decoder_bug_becomes_a_session_reset_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes the decoder by mistake is reported as an UpdateError naming the peer (the
    speaker then resets that session and counts it): the reader of ExaBGP's stream never dies."""
    def broken(*_: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(wire, "_v4_routes", broken)
    with pytest.raises(wire.SessionReset) as info:
        wire.parse_update(PEER, routes_with(b""))
    assert info.value.peer == PEER and "KeyError" in info.value.why
