"""Received BGP UPDATE bodies -> the routing core's events, without ExaBGP decoding them (issue 12).

Theory of operation
-------------------
**Why our own decoder.** In a full-table ingest ExaBGP spent more CPU than anything else on the PoP:
decoding each UPDATE into its objects, then encoding them as JSON, which the daemon parsed again
(on this machine, 1M prefixes at 4 per UPDATE, ExaBGP alone to a do-nothing API process: 28.0 s with
``receive { parsed; }``, 10.8 s when it only passes the bytes on; ``benchmarks/RESULTS.md``). With
``exabgp.updates: raw`` the lean reactor launcher (``lean_reactor.py``, :class:`RawUpdates`) hands the
daemon the body of every UPDATE of a session that negotiated four-octet AS numbers and no ADD-PATH as
one line, ``U <peer address> <hex of the body>``; this module turns it into the same
:class:`~routing.exabgp.messages.UpdateEvent` the JSON path builds (``tests/unit/test_wire.py``
checks the two agree on generated UPDATEs). A session without four-octet AS numbers (AS4_PATH
reconstruction, RFC 6793 4.2.3) or with ADD-PATH stays on ExaBGP's decoder and JSON.

**What it reads.** IPv4 and IPv6 unicast (SAFI 1) and labeled unicast (SAFI 4, RFC 8277), in the
base NLRI fields and in MP_REACH_NLRI / MP_UNREACH_NLRI; other families are skipped, as the JSON path
skips them. The attributes the routing core uses: ORIGIN, AS_PATH (flattened as
:func:`routing.exabgp.messages._as_path` does: a set counts as one hop), NEXT_HOP, MED,
LOCAL_PREF, COMMUNITIES, EXTENDED_COMMUNITIES, LARGE_COMMUNITY. Everything else is stepped over.
End-of-RIB (RFC 4724 2): an empty UPDATE (IPv4 unicast) or one holding only an empty
MP_UNREACH_NLRI.

**Errors (RFC 7606), since ExaBGP no longer looks at these bytes.** Nothing but
:class:`UpdateError` leaves :func:`parse_update`, whatever the input (hypothesis-tested).

- *Session reset* (:class:`SessionReset`, with the UPDATE Message Error subcode of RFC 4271 6.3):
  the message's own lengths disagree (withdrawn routes or path attributes running past the body), an
  attribute's header or length runs past the attribute field (the NLRI could no longer be found
  reliably, RFC 7606 4), an NLRI or withdrawn prefix cannot be parsed (RFC 7606 5.3), MP_REACH_NLRI
  or MP_UNREACH_NLRI is malformed or repeated (7.11, 3.g), or an unrecognized well-known attribute
  (RFC 4271 6.3, subcode 2). The speaker asks ExaBGP to send the NOTIFICATION and close.
- *Treat-as-withdraw* (:class:`TreatAsWithdraw`, carrying the withdraw-only event): a malformed
  ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES, EXTENDED_COMMUNITIES or LARGE_COMMUNITY
  (wrong length, value or flags), or a missing ORIGIN, AS_PATH, or NEXT_HOP where base IPv4 NLRI
  needs one (RFC 7606 3.d). Every prefix the UPDATE carried is withdrawn.
- *Attribute discard*: anything else malformed that the core does not use (AGGREGATOR, ATOMIC_AGGREGATE,
  ...) is ignored, as are unknown optional attributes and repeats of an attribute (the first counts).
"""

from __future__ import annotations

from struct import Struct, unpack_from

from common.model import (
    _PLEN_BASE,
    _V4_MASKS,
    Address4,
    Address6,
    Attributes,
    IPAddress,
    IPNetwork,
    Origin,
    Prefix4,
    Prefix6,
    _prefix4_from_int,
    intern_attrs,
)
from routing.exabgp import messages
from routing.exabgp.messages import EorEvent, UpdateEvent

_new_int = int.__new__
_from_bytes = int.from_bytes

# RFC 4271 6.3 UPDATE Message Error subcodes
MALFORMED_ATTRIBUTE_LIST = 1
UNRECOGNIZED_WELL_KNOWN = 2
INVALID_NETWORK_FIELD = 10

# attribute type codes
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES = 1, 2, 3, 4, 5, 8
MP_REACH, MP_UNREACH, EXT_COMMUNITIES, LARGE_COMMUNITY = 14, 15, 16, 32
#: Codes IANA has assigned or reserved below 41, and 128 (ATTR_SET): a known attribute with the
#: optional bit clear is a flag error to discard, not an unrecognized well-known one to reset for.
_ASSIGNED = frozenset(range(41)) | {128}
_OPTIONAL, _TRANSITIVE, _EXTENDED = 0x80, 0x40, 0x10

_ORIGINS = (Origin.IGP, Origin.EGP, Origin.INCOMPLETE)
#: (AFI, SAFI) -> the family names ExaBGP's JSON uses (and the routing core sees in EorEvent).
_FAMILY = {(1, 1): ("ipv4", "unicast"), (2, 1): ("ipv6", "unicast"),
           (1, 4): ("ipv4", "nlri-mpls"), (2, 4): ("ipv6", "nlri-mpls")}
_LABEL_WITHDRAW, _BOTTOM = 0x800000, 1
#: Bytes of address a prefix of n bits needs, by n.
_NBYTES = tuple((n + 7) // 8 for n in range(129))
#: Shift that turns the first k bytes of an IPv4 address into the address, by k.
_SHIFT4 = (32, 24, 16, 8, 0)
_EMPTY_ATTRS = intern_attrs(Attributes())


class UpdateError(Exception):
    """An UPDATE that RFC 7606 says must not be applied as sent; never anything else escapes."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
        #: The session it came from (set by :func:`parse_update`).
        self.peer: IPAddress | None = None


class SessionReset(UpdateError):
    """The session must be reset with NOTIFICATION UPDATE Message Error / ``subcode``."""

    def __init__(self, subcode: int, why: str) -> None:
        super().__init__(why)
        self.subcode = subcode


class TreatAsWithdraw(UpdateError):
    """The UPDATE's prefixes must be withdrawn (RFC 7606 2): ``event`` does that."""

    def __init__(self, event: UpdateEvent, why: str) -> None:
        super().__init__(why)
        self.event = event


class _Withdraw(Exception):
    """Raised inside the attribute walk; the walk finishes the NLRI and then treats as withdraw."""


#: Next hops by their bytes: a handful of distinct values per session, every UPDATE names one again.
_NEXT_HOPS: dict[bytes, IPAddress] = {}
NEXT_HOPS_MAX = 4096


def _next_hop(raw: bytes) -> IPAddress:
    nh = _NEXT_HOPS.get(raw)
    if nh is None:
        nh = Address4(raw) if len(raw) == 4 else Address6(raw)
        if len(_NEXT_HOPS) >= NEXT_HOPS_MAX:
            _NEXT_HOPS.clear()
        _NEXT_HOPS[raw] = nh
    return nh


def _v4_prefixes(b: bytes, i: int, end: int, out: list) -> None:
    """Append the IPv4 prefixes of ``b[i:end]`` (RFC 4271 4.3 NLRI encoding) to ``out``: each a
    :class:`~common.model.Prefix4` (an int) made from the bytes, without any text in between."""
    base, masks, nbytes, shift = _PLEN_BASE, _V4_MASKS, _NBYTES, _SHIFT4
    append = out.append
    while i < end:
        plen = b[i]
        if plen > 32:
            raise SessionReset(INVALID_NETWORK_FIELD, f"IPv4 prefix length {plen}")
        n = nbytes[plen]
        j = i + 1 + n
        if j > end:
            raise SessionReset(INVALID_NETWORK_FIELD, "IPv4 prefix runs past its field")
        mask = masks[plen]
        append(_new_int(Prefix4, base[plen] + (((_from_bytes(b[i + 1:j], "big") << shift[n]) & mask) ^ mask)))
        i = j


def _v4_routes(b: bytes, i: int, end: int, out: list, nh: IPAddress) -> None:
    """:func:`_v4_prefixes` for announcements: ``(prefix, nh, ())`` each. The hottest loop of a
    full-table ingest, hence a copy rather than a second pass over the prefixes."""
    base, masks, nbytes, shift = _PLEN_BASE, _V4_MASKS, _NBYTES, _SHIFT4
    append = out.append
    while i < end:
        plen = b[i]
        if plen > 32:
            raise SessionReset(INVALID_NETWORK_FIELD, f"IPv4 prefix length {plen}")
        n = nbytes[plen]
        j = i + 1 + n
        if j > end:
            raise SessionReset(INVALID_NETWORK_FIELD, "IPv4 prefix runs past its field")
        mask = masks[plen]
        append((_new_int(Prefix4, base[plen] + (((_from_bytes(b[i + 1:j], "big") << shift[n]) & mask) ^ mask)),
                nh, ()))
        i = j


def _prefix(afi: int, plen: int, raw: bytes) -> IPNetwork:
    if afi == 1:
        return _prefix4_from_int(_from_bytes(raw, "big") << (32 - 8 * len(raw)), plen)
    return Prefix6((_from_bytes(raw, "big") << (128 - 8 * len(raw)), plen), strict=False)


def _mp_prefixes(b: bytes, i: int, end: int, afi: int, labeled: bool, withdraw: bool,
                 out: list, labels_out: list | None) -> None:
    """The prefixes of an MP_REACH/MP_UNREACH NLRI field (IPv6, or labeled: RFC 8277 2), with their
    label stacks in ``labels_out`` when given. The label stack rules are ExaBGP's (``nlri/inet.py``):
    the bottom-of-stack bit ends a stack; a one-label stack also ends where the bits left are a prefix
    this family can hold, and at the withdraw (0x800000) and zero compatibility values."""
    bits = 32 if afi == 1 else 128
    while i < end:
        mask = b[i]
        i += 1
        labels: list[int] = []
        if labeled:
            terminated = False
            while mask >= 24:
                if i + 3 > end:
                    raise SessionReset(INVALID_NETWORK_FIELD, "label stack runs past its field")
                label = _from_bytes(b[i:i + 3], "big")
                i += 3
                mask -= 24
                labels.append(label >> 4)
                if label & _BOTTOM:
                    terminated = True
                    break
                if len(labels) > 1:
                    continue
                if 0 < mask <= bits or (label == _LABEL_WITHDRAW and withdraw) or label == 0:
                    terminated = True
                    break
            if labels and not terminated:
                raise SessionReset(INVALID_NETWORK_FIELD, "label stack without bottom of stack")
        if mask > bits:
            raise SessionReset(INVALID_NETWORK_FIELD, f"prefix length {mask} for AFI {afi}")
        n = _NBYTES[mask]
        if i + n > end:
            raise SessionReset(INVALID_NETWORK_FIELD, "prefix runs past its field")
        out.append(_prefix(afi, mask, b[i:i + n]))
        if labels_out is not None:
            labels_out.append(tuple(labels))
        i += n


#: ``unpack_from`` of n four-octet AS numbers, by n (a segment holds at most 255).
_AS_STRUCTS = tuple(Struct(f">{n}I").unpack_from for n in range(256))


def _as_path(b: bytes, i: int, end: int) -> tuple[tuple[int, ...], bool]:
    """Four-octet AS_PATH segments, flattened as the JSON path flattens them (a set or confederation
    set is one hop, its lowest member; sequences and confederation sequences are their members)."""
    out: list[int] = []
    is_set = False
    while i < end:
        if i + 2 > end:
            raise _Withdraw("AS_PATH segment header truncated")
        kind, count = b[i], b[i + 1]
        i += 2
        j = i + 4 * count
        if j > end or kind not in (1, 2, 3, 4) or count == 0:
            raise _Withdraw("malformed AS_PATH segment")
        values = _AS_STRUCTS[count](b, i)
        if kind in (1, 4):
            out.append(min(values))
            is_set = True
        else:
            out.extend(values)
            is_set = False
        i = j
    return tuple(out), is_set


def parse_update(peer: IPAddress, b: bytes) -> UpdateEvent | EorEvent | None:
    """One UPDATE body (the bytes after the 19-byte header) of a session with four-octet AS numbers
    and no ADD-PATH -> its event; None for one that carries nothing the core reads (other families).
    Raises only :class:`UpdateError` (see the module docstring), naming ``peer``."""
    try:
        return _parse(peer, b)
    except UpdateError as exc:
        exc.peer = peer
        raise
    except Exception as exc:  # a decoder bug must not take the session's reader down: reset it, loudly
        err = SessionReset(MALFORMED_ATTRIBUTE_LIST, f"undecodable UPDATE ({type(exc).__name__}: {exc})")
        err.peer = peer
        raise err from exc


def _parse(peer: IPAddress, b: bytes) -> UpdateEvent | EorEvent | None:
    size = len(b)
    if size < 4:
        raise SessionReset(MALFORMED_ATTRIBUTE_LIST, "UPDATE shorter than its two length fields")
    wlen = (b[0] << 8) | b[1]
    if 2 + wlen + 2 > size:
        raise SessionReset(MALFORMED_ATTRIBUTE_LIST, "withdrawn routes run past the message")
    alen = (b[2 + wlen] << 8) | b[3 + wlen]
    astart = 4 + wlen
    aend = astart + alen
    if aend > size:
        raise SessionReset(MALFORMED_ATTRIBUTE_LIST, "path attributes run past the message")
    if size == 4:
        return EorEvent(peer, "ipv4", "unicast")
    withdraw: list[IPNetwork] = []
    if wlen:
        _v4_prefixes(b, 2, 2 + wlen, withdraw)

    origin: Origin | None = None
    as_path: tuple[int, ...] | None = None
    as_set_last = False
    next_hop: IPAddress | None = None
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()
    ext: tuple[int, ...] = ()
    mp_announce: list[tuple[IPNetwork, IPAddress, tuple[int, ...]]] = []
    eor: tuple[str, str] | None = None
    bad: str | None = None
    seen = 0  # bitmap of the attribute codes already read (RFC 7606 3.g: the first one counts)
    i = astart
    try:
        while i < aend:
            flags, code = b[i], b[i + 1]
            if flags & _EXTENDED:
                length = (b[i + 2] << 8) | b[i + 3]
                i += 4
            else:
                length = b[i + 2]
                i += 3
            j = i + length  # a header running past the field leaves i, so j, beyond aend
            if j > aend:
                raise SessionReset(MALFORMED_ATTRIBUTE_LIST, f"attribute {code} runs past the attribute field")
            if seen >> code & 1:
                if code == MP_REACH or code == MP_UNREACH:
                    raise SessionReset(MALFORMED_ATTRIBUTE_LIST, f"attribute {code} repeated")
                i = j
                continue
            seen |= 1 << code
            if code == ORIGIN:
                if length != 1 or b[i] > 2 or flags & _OPTIONAL:
                    bad = bad or "malformed ORIGIN"
                else:
                    origin = _ORIGINS[b[i]]
            elif code == AS_PATH:
                if flags & _OPTIONAL:
                    bad = bad or "AS_PATH flagged optional"
                elif length == 10 and b[i] == 2 and b[i + 1] == 2:  # the usual: one sequence of two
                    as_path = _AS_STRUCTS[2](b, i + 2)
                else:
                    try:
                        as_path, as_set_last = _as_path(b, i, j)
                    except _Withdraw as exc:
                        bad = bad or str(exc)
            elif code == NEXT_HOP:
                if length != 4 or flags & _OPTIONAL:
                    bad = bad or "malformed NEXT_HOP"
                else:
                    next_hop = _next_hop(b[i:j])
            elif code == MED:
                if length != 4 or not flags & _OPTIONAL:
                    bad = bad or "malformed MULTI_EXIT_DISC"
                else:
                    med = _from_bytes(b[i:j], "big")
            elif code == LOCAL_PREF:
                if length != 4 or flags & _OPTIONAL:
                    bad = bad or "malformed LOCAL_PREF"
                else:
                    local_pref = _from_bytes(b[i:j], "big")
            elif code == MP_REACH or code == MP_UNREACH:
                if length < 3:
                    raise SessionReset(MALFORMED_ATTRIBUTE_LIST, f"attribute {code} shorter than AFI/SAFI")
                afi, safi = (b[i] << 8) | b[i + 1], b[i + 2]
                family = _FAMILY.get((afi, safi))
                if code == MP_UNREACH:
                    if family is not None:
                        if length == 3 and i - astart <= 4 and j == aend and wlen == 0 and aend == size:
                            eor = family  # RFC 4724 2: the UPDATE holds this attribute and nothing else
                        else:
                            _mp_prefixes(b, i + 3, j, afi, safi == 4, True, withdraw, None)
                else:
                    if length < 5 or i + 4 + b[i + 3] + 1 > j:
                        raise SessionReset(MALFORMED_ATTRIBUTE_LIST, "MP_REACH_NLRI next hop runs past it")
                    if family is not None:
                        nhlen = b[i + 3]
                        if nhlen not in (4, 16, 32) or (afi == 2 and nhlen == 4):
                            raise SessionReset(MALFORMED_ATTRIBUTE_LIST, f"MP_REACH_NLRI next hop of {nhlen} bytes")
                        nh = _next_hop(b[i + 4:i + 4 + (4 if nhlen == 4 else 16)])
                        prefixes: list[IPNetwork] = []
                        stacks: list[tuple[int, ...]] | None = [] if safi == 4 else None
                        _mp_prefixes(b, i + 4 + nhlen + 1, j, afi, safi == 4, False, prefixes, stacks)
                        if stacks is None:
                            mp_announce.extend((p, nh, ()) for p in prefixes)
                        else:
                            mp_announce.extend((p, nh, s) for p, s in zip(prefixes, stacks, strict=True))
            elif code == COMMUNITIES or code == EXT_COMMUNITIES or code == LARGE_COMMUNITY:
                width = 4 if code == COMMUNITIES else 8 if code == EXT_COMMUNITIES else 12
                if length == 0 or length % width or flags & (_OPTIONAL | _TRANSITIVE) != _OPTIONAL | _TRANSITIVE:
                    bad = bad or f"malformed attribute {code}"
                # Sorted (and large ones deduplicated, RFC 8092 5) as ExaBGP's decoder leaves them, so
                # an attribute set is the same interned object on the JSON and the raw path.
                elif code == COMMUNITIES:
                    v = unpack_from(f">{length // 2}H", b, i)
                    communities = tuple(sorted(zip(v[0::2], v[1::2], strict=True)))
                elif code == EXT_COMMUNITIES:
                    ext = tuple(sorted(unpack_from(f">{length // 8}Q", b, i)))
                else:
                    v = unpack_from(f">{length // 4}I", b, i)
                    large = tuple(sorted(set(zip(v[0::3], v[1::3], v[2::3], strict=True))))
            elif not flags & _OPTIONAL and code not in _ASSIGNED:
                raise SessionReset(UNRECOGNIZED_WELL_KNOWN, f"unrecognized well-known attribute {code}")
            i = j
    except IndexError:  # a header cut by the end of the message
        raise SessionReset(MALFORMED_ATTRIBUTE_LIST, "attribute header runs past the message") from None


    announce: list = []
    if aend < size:  # the IPv4 NLRI field, after the attributes so the next hop is known
        if next_hop is None:
            _v4_prefixes(b, aend, size, announce)
            announce = [(p, None, ()) for p in announce]
            bad = bad or "IPv4 NLRI without NEXT_HOP"
        else:
            _v4_routes(b, aend, size, announce, next_hop)
    if mp_announce:
        announce.extend(mp_announce)
    if announce and bad is None and (origin is None or as_path is None):
        bad = "missing ORIGIN or AS_PATH"
    if bad is not None:
        if not announce and not withdraw:
            if eor is not None:
                return EorEvent(peer, *eor)
            return None  # nothing to withdraw: the malformed attributes describe no route
        event = messages._new_update(peer, _EMPTY_ATTRS, (), tuple(withdraw) + tuple(a[0] for a in announce))
        raise TreatAsWithdraw(event, bad)
    if not announce and not withdraw:
        # End-of-RIB, or attributes alone (nothing for the core: the JSON path made an empty event)
        return EorEvent(peer, *eor) if eor is not None else None
    if announce:
        path = messages._AS_PATHS.setdefault(as_path, as_path)  # type: ignore[arg-type]
        if len(messages._AS_PATHS) > messages.AS_PATHS_MAX:
            messages._AS_PATHS.clear()
        attrs = intern_attrs(messages._new_attributes(origin, path, med, local_pref, communities, large, ext,
                                                      (), as_set_last))
    else:
        attrs = _EMPTY_ATTRS
    return messages._new_update(peer, attrs, tuple(announce), tuple(withdraw))
