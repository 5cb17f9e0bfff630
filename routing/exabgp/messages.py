"""ExaBGP API lines -> typed events, and typed commands -> API lines.

Theory of operation
-------------------
:func:`parse_line` is pure: bytes in, one event (or None for lines we ignore) out, and
:class:`MalformedMessage` for anything that is not what ExaBGP 5.0's JSON encoder (format
``"exabgp": "5.0.0"``) produces. The caller counts and drops malformed lines; nothing here may
raise anything else, whatever the input (hypothesis-tested).

Facts about the format this relies on (see ``shared/notes/exabgp.md``):

- ``type: state`` with ``state`` ``connected`` | ``up`` | ``down`` (+ ``reason``). A session going
  down is *not* followed by withdrawals; the RIB flushes the peer itself.
- ``type: update`` carries either ``message.update.{attribute,announce,withdraw}`` or
  ``message.eor``. ``announce`` maps family -> next hop -> list of ``{"nlri": P}`` (or bare strings
  with ``exabgp.api.compact``). An IPv6 prefix with a global and a link-local next hop is listed
  under both: link-local next hops are dropped when a global one is present for the same prefix.
- Labeled unicast arrives as ``"ipv4 nlri-mpls"`` with ``"label": [[100]]``.
- ``type: open`` (direction receive) carries the peer's BGP identifier, used as a best-path
  tie-breaker.
- ``type: notification`` with ``"notification": "shutdown"`` means ExaBGP is exiting.
- Acks to our commands are bare ``done`` / ``error`` lines.
- ``U <peer> <hex>`` is not ExaBGP's: the lean reactor launcher writes it for an UPDATE it passed on
  undecoded (``exabgp.updates: raw``); :mod:`routing.exabgp.wire` decodes the body, and its
  :class:`~routing.exabgp.wire.UpdateError` (RFC 7606 treat-as-withdraw or session reset) is the
  one other exception :func:`parse_line` lets through.

Commands are built by functions that refuse anything but ASCII, because one non-ASCII byte makes
ExaBGP kill the API process and drop every unacknowledged command.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
from dataclasses import dataclass
from typing import ClassVar

import orjson

from common.model import (
    Attributes,
    IPAddress,
    IPNetwork,
    Origin,
    fast_constructor,
    intern_attrs,
    parse_address,
    parse_prefix,
)


class MalformedMessage(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool


@dataclass(frozen=True, slots=True)
class StateEvent:
    peer: IPAddress
    local: IPAddress
    state: str  # connected | up | down
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """The peer's graceful-restart capability (RFC 4724 §3) from its OPEN."""

    time_s: int
    #: AFIs ("ipv4", "ipv6") listed in the capability: the ones a helper retains routes for.
    afis: frozenset[str]
    #: AFIs whose Forwarding State bit is set: the peer kept forwarding across its restart.
    forwarding: frozenset[str]
    #: Restart State bit: the peer has just restarted.
    restarting: bool


@dataclass(frozen=True, slots=True)
class OpenEvent:
    peer: IPAddress
    router_id: ipaddress.IPv4Address
    asn: int
    hold_time_s: int
    graceful_restart: GracefulRestart | None = None


@dataclass(frozen=True, slots=True)
class UpdateEvent:
    peer: IPAddress
    attrs: Attributes
    #: (prefix, next hop, labels)
    announce: tuple[tuple[IPNetwork, IPAddress, tuple[int, ...]], ...]
    withdraw: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """Consecutive UPDATEs of one peer, in the order they arrived, read from the relay together: the
    routing core applies them in one step (issue 12: per-event costs — the inbox, the core's dispatch,
    metrics, the FIB hand-off — were paid per UPDATE, ~4 prefixes of a full table). Never holds an
    UPDATE big enough to be sliced (``routing.core.JOB_STEP``)."""

    peer: IPAddress
    updates: tuple[UpdateEvent, ...]

    #: The most prefixes (announced + withdrawn) an UPDATE may carry to join a batch; equal to the
    #: routing core's slice (``routing.core.JOB_STEP``), above which an UPDATE is applied in slices.
    MAX_PREFIXES: ClassVar[int] = 100
    #: The most UPDATEs of one batch (a few ms of routing work: one step of the owner).
    MAX_UPDATES: ClassVar[int] = 8

    @property
    def weight(self) -> int:
        """What it counts for in the inbox's bound (``routing.inbox``): its UPDATEs."""
        return len(self.updates)


#: One per UPDATE (issue 12): :func:`common.model.fast_constructor`.
_new_update = fast_constructor(UpdateEvent)
_new_attributes = fast_constructor(Attributes)


@dataclass(frozen=True, slots=True)
class RelayStats:
    """The relay's own line (never ExaBGP's): how much of ExaBGP's stream waits in its memory because
    the daemon reads at the pace the RIB can take (flow control). Sent at most once a second."""

    backlog_lines: int
    backlog_bytes: int
    max_backlog_lines: int
    max_backlog_bytes: int


RELAY_STATS_TYPE = "pop-relay-stats"


@dataclass(frozen=True, slots=True)
class EorEvent:
    peer: IPAddress
    afi: str
    safi: str


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    peer: IPAddress | None
    code: int
    subcode: int
    direction: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Event = Ack | StateEvent | OpenEvent | UpdateEvent | EorEvent | NotificationEvent | Shutdown | RelayStats

_ORIGIN = {"igp": Origin.IGP, "egp": Origin.EGP, "incomplete": Origin.INCOMPLETE}
_FAMILIES = {"ipv4 unicast", "ipv6 unicast", "ipv4 nlri-mpls", "ipv6 nlri-mpls"}


@functools.lru_cache(maxsize=4096)
def _addr_text(text: str) -> IPAddress:
    """Cached by text: every UPDATE names its peer and next hops again, a handful of distinct values
    (issue 12: ``ipaddress`` parsing was 4 % of the loop thread); bounded, and sessions share the
    objects."""
    return parse_address(text.split("%")[0])


def _addr(v: object) -> IPAddress:
    try:
        return _addr_text(v if type(v) is str else str(v))
    except ValueError:
        raise MalformedMessage(f"bad address {v!r}") from None


def _net(v: object) -> IPNetwork:
    try:
        return parse_prefix(v if type(v) is str else str(v))
    except ValueError:
        raise MalformedMessage(f"bad prefix {v!r}") from None


def _int(v: object, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MalformedMessage(f"bad integer {v!r}")
    return v


def _seg_key(k: object) -> int:
    return int(k) if str(k).isdigit() else 0


def _as_path(v: object) -> tuple[tuple[int, ...], bool]:
    """The AS_PATH as a flat tuple and whether its last segment is a set (RFC 6811 §2: then no single
    origin AS). One pass; a lone segment (what nearly every UPDATE has) skips the sort."""
    if v is None:
        return (), False
    if isinstance(v, list):  # older/compact encoders: a flat list
        return tuple(_int(x) for x in v), False
    if not isinstance(v, dict):
        raise MalformedMessage("bad as-path")
    out: list[int] = []
    is_set = False
    for key in (v if len(v) == 1 else sorted(v, key=_seg_key)):
        seg = v[key]
        if not isinstance(seg, dict) or not isinstance(seg.get("value"), list):
            raise MalformedMessage("bad as-path segment")
        values = [_int(x) for x in seg["value"]]
        element = seg.get("element")
        if element in ("as-set", "confed-set"):
            out.append(min(values) if values else 0)  # a set counts as one hop (RFC 4271 §9.1.2.2)
            is_set = True
        elif element in ("as-sequence", "confed-sequence", None):
            out.extend(values)
            is_set = False
        else:
            raise MalformedMessage(f"unknown as-path element {element!r}")
    return tuple(out), is_set


#: AS paths seen, each once: every UPDATE's attribute set is its own object (a MED, a community
#: differs), but many share the AS path, and each kept its own tuple (48 bytes for one AS, more for
#: longer: 12 MB of a 1M-prefix table at 4 prefixes per UPDATE with one path, issue 12). Bounded by
#: clearing, not by a sweep: a tuple still held by an attribute set stays valid, only sharing is lost.
_AS_PATHS: dict[tuple[int, ...], tuple[int, ...]] = {}
AS_PATHS_MAX = 200_000


def _attributes(a: object) -> Attributes:
    if a is None:
        a = {}
    if not isinstance(a, dict):
        raise MalformedMessage("bad attribute block")
    origin = _ORIGIN.get(str(a.get("origin", "igp")).lower())
    if origin is None:
        raise MalformedMessage(f"bad origin {a.get('origin')!r}")
    med = a.get("med")
    lp = a.get("local-preference")
    comms = a.get("community")
    large = a.get("large-community")
    ext = a.get("extended-community")
    try:
        communities = tuple((_int(c[0], 0, 65535), _int(c[1], 0, 65535)) for c in comms) if comms else ()
        large_communities = tuple((_int(c[0]), _int(c[1]), _int(c[2])) for c in large) if large else ()
        # ExaBGP gives each extended community as {"value": int, "string": "target:..."}; the value is
        # the 8 bytes, type byte first (RFC 4360 §2).
        ext_communities = (tuple(_int(e["value"] if isinstance(e, dict) else e, 0, 2**64 - 1) for e in ext)
                           if ext else ())
    except (TypeError, IndexError, KeyError):
        raise MalformedMessage("bad community") from None
    as_path, set_last = _as_path(a.get("as-path"))
    as_path = _AS_PATHS.setdefault(as_path, as_path)
    if len(_AS_PATHS) > AS_PATHS_MAX:
        _AS_PATHS.clear()
    return intern_attrs(_new_attributes(origin, as_path, None if med is None else _int(med),
                                        None if lp is None else _int(lp), communities, large_communities,
                                        ext_communities, (), set_last))


def _labels(entry: dict) -> tuple[int, ...]:
    raw = entry.get("label")
    if not raw:
        return ()
    flat: list[int] = []
    for x in raw:
        flat.extend(x if isinstance(x, list) else [x])
    return tuple(_int(x, 0, 2**20 - 1) for x in flat)


def _update(peer: IPAddress, upd: dict) -> UpdateEvent:
    attrs = _attributes(upd.get("attribute"))
    announce: list[tuple[IPNetwork, IPAddress, tuple[int, ...]]] = []
    withdraw: list[IPNetwork] = []
    for family, by_nh in (upd.get("announce") or {}).items():
        if family not in _FAMILIES:
            continue  # families we did not negotiate are ignored, not errors
        if not isinstance(by_nh, dict):
            raise MalformedMessage("bad announce block")
        start = len(announce)
        link_local: list[tuple[IPNetwork, IPAddress, tuple[int, ...]]] = []
        for nh_text, entries in by_nh.items():
            nh = _addr(nh_text)
            if not isinstance(entries, list):
                raise MalformedMessage("bad nlri list")
            add = (link_local if nh.is_link_local else announce).append  # once per next hop, not per prefix
            for e in entries:  # once per prefix: the hottest loop of a full-table ingest
                if type(e) is dict:
                    add((_net(e.get("nlri")), nh, _labels(e) if "label" in e else ()))
                elif type(e) is str:
                    add((_net(e), nh, ()))
                else:
                    raise MalformedMessage("bad nlri entry")
        if link_local:
            global_for = {x[0] for x in announce[start:]}
            announce.extend(x for x in link_local if x[0] not in global_for)
    for family, entries in (upd.get("withdraw") or {}).items():
        if family not in _FAMILIES:
            continue
        if not isinstance(entries, list):
            raise MalformedMessage("bad withdraw block")
        for e in entries:
            withdraw.append(_net(e if isinstance(e, str) else (e.get("nlri") if isinstance(e, dict) else None)))
    return _new_update(peer, attrs, tuple(announce), tuple(withdraw))


def parse_line(line: bytes) -> Event | None:
    s = line.strip()
    if s[:2] == b"U ":
        return _raw_update(s)
    if not s or s.startswith(b"#"):
        return None
    if s == b"done":
        return Ack(True)
    if s == b"error":
        return Ack(False)
    try:
        msg = orjson.loads(s)
    except orjson.JSONDecodeError:
        raise MalformedMessage(f"not JSON: {s[:80]!r}") from None
    if not isinstance(msg, dict):
        raise MalformedMessage("not a JSON object")
    try:
        return _event(msg)
    except MalformedMessage:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedMessage(f"unexpected structure: {exc!r}") from None


def _raw_update(s: bytes) -> Event | None:
    parts = s.split(b" ")
    if len(parts) != 3:
        raise MalformedMessage(f"bad raw UPDATE line: {s[:80]!r}")
    try:
        body = binascii.a2b_hex(parts[2])
    except (binascii.Error, ValueError):
        raise MalformedMessage(f"bad hex in raw UPDATE line: {s[:80]!r}") from None
    return wire.parse_update(_addr(parts[1].decode("ascii", "replace")), body)


def _event(msg: dict) -> Event | None:
    kind = msg.get("type")
    if kind == RELAY_STATS_TYPE:
        return RelayStats(_int(msg["backlog_lines"], 0, 2**63), _int(msg["backlog_bytes"], 0, 2**63),
                          _int(msg["max_backlog_lines"], 0, 2**63), _int(msg["max_backlog_bytes"], 0, 2**63))
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown()
    nb = msg.get("neighbor")
    if not isinstance(nb, dict):
        if kind in ("state", "update", "open", "notification"):
            raise MalformedMessage(f"{kind} without neighbor")
        return None
    peer = _addr(nb["address"]["peer"])
    if kind == "state":
        state = nb.get("state")
        if state not in ("connected", "up", "down"):
            raise MalformedMessage(f"unknown state {state!r}")
        return StateEvent(peer, _addr(nb["address"]["local"]), state, str(nb.get("reason", "")))
    if kind == "update":
        m = nb.get("message")
        if not isinstance(m, dict):
            raise MalformedMessage("update without message")
        if "eor" in m:
            return EorEvent(peer, str(m["eor"]["afi"]), str(m["eor"]["safi"]))
        upd = m.get("update")
        if not isinstance(upd, dict):
            raise MalformedMessage("update without update block")
        return _update(peer, upd)
    if kind == "open":
        if nb.get("direction") != "receive":
            return None
        o = nb["open"]
        rid = ipaddress.ip_address(str(o["router_id"]))
        if rid.version != 4:
            raise MalformedMessage("router_id is not IPv4")
        return OpenEvent(peer, rid, _int(o["asn"]), _int(o.get("hold_time", 0), 0, 65535),
                         _graceful_restart(o.get("capabilities")))
    if kind == "notification":
        n = nb["notification"]
        return NotificationEvent(peer, _int(n["code"], 0, 255), _int(n["subcode"], 0, 255), str(nb.get("direction")))
    return None


def _graceful_restart(caps: object) -> GracefulRestart | None:
    """Capability 64 as ExaBGP prints it. ExaBGP swaps the two flag labels in its JSON (exabgp
    ``capability/graceful.py``: a family's Forwarding State bit prints as ``"restart"`` and the
    Restart State bit as ``"forwarding"``); this reads the bits, not the words."""
    if not isinstance(caps, dict):
        return None
    c = caps.get("64")
    if not isinstance(c, dict):
        return None
    afis: set[str] = set()
    fwd: set[str] = set()
    fams = c.get("address-family-flags") or {}
    if not isinstance(fams, dict):
        raise MalformedMessage("graceful restart: address-family-flags is not an object")
    for fam, flags in fams.items():
        afi = str(fam).split("/", 1)[0]
        if afi not in ("ipv4", "ipv6"):
            continue
        afis.add(afi)
        if isinstance(flags, list) and "restart" in flags:  # the F bit (see above)
            fwd.add(afi)
    rflags = c.get("restart-flags") or []
    return GracefulRestart(_int(c.get("time", 0), 0, 4095), frozenset(afis), frozenset(fwd),
                           isinstance(rflags, list) and "forwarding" in rflags)  # the R bit


# --- commands ------------------------------------------------------------------------------------
class BadCommand(ValueError):
    pass


def _ascii(cmd: str) -> str:
    if not cmd.isascii() or "\n" in cmd or "\r" in cmd:
        raise BadCommand(f"refusing to send a non-ASCII or multi-line command to ExaBGP: {cmd!r}")
    return cmd


def teardown(peer: IPAddress, cease_subcode: int) -> str:
    """Close the session with NOTIFICATION Cease/subcode (RFC 4486: 1 = max prefixes, 2 = admin down)."""
    if not 1 <= cease_subcode <= 255:
        raise BadCommand(f"cease subcode {cease_subcode} out of range")
    return _ascii(f"neighbor {peer} teardown {cease_subcode}")


def announce_route(peer: IPAddress, prefix: IPNetwork, attributes: str = "") -> str:
    """Export one of our prefixes to one session, next hop self (as the generated static routes do),
    with ``attributes`` in ExaBGP's route syntax (:func:`routing.policy.attributes_text`)."""
    tail = f" {attributes}" if attributes else ""
    return _ascii(f"neighbor {_ip(peer)} announce route {_net_text(prefix)} next-hop self{tail}")


def announce_attributes(peer: IPAddress, attributes: str, prefixes: list[IPNetwork]) -> str:
    """Announce many prefixes sharing one attribute set in one command (one ack, packed UPDATEs)."""
    nlri = " ".join(_net_text(p) for p in prefixes)
    return _ascii(f"neighbor {_ip(peer)} announce attributes {attributes} next-hop self nlri {nlri}")


def withdraw_attributes(peer: IPAddress, prefixes: list[IPNetwork]) -> str:
    """Withdraw many prefixes in one command."""
    nlri = " ".join(_net_text(p) for p in prefixes)
    return _ascii(f"neighbor {_ip(peer)} withdraw attributes next-hop self nlri {nlri}")


def update_error(peer: IPAddress, subcode: int) -> str:
    """Close the session with NOTIFICATION UPDATE Message Error/subcode (RFC 7606 session reset of an
    UPDATE the daemon decoded): the lean reactor launcher turns this teardown code into that message
    (``routing/exabgp/lean_reactor.py``, raw UPDATEs)."""
    if not 1 <= subcode <= 255:
        raise BadCommand(f"UPDATE Message Error subcode {subcode} out of range")
    return _ascii(f"neighbor {_ip(peer)} teardown {TEARDOWN_UPDATE_ERROR + subcode}")


def withdraw_route(peer: IPAddress, prefix: IPNetwork) -> str:
    """Stop exporting one of our prefixes to one session."""
    return _ascii(f"neighbor {_ip(peer)} withdraw route {_net_text(prefix)}")


def _ip(v: object) -> str:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        raise BadCommand(f"not an IP address: {v!r}") from None


def _net_text(v: object) -> str:
    try:
        return str(ipaddress.ip_network(str(v), strict=True))
    except ValueError:
        raise BadCommand(f"not a network prefix: {v!r}") from None


def raw(cmd: str) -> str:
    return _ascii(cmd)


from routing.exabgp import wire  # noqa: E402 - wire builds this module's events
from routing.exabgp.lean_reactor import TEARDOWN_UPDATE_ERROR  # noqa: E402
