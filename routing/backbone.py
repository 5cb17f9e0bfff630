"""The backbone: iBGP sessions to the provider's route reflectors, what we accept from them and what
we export to them.

Theory of operation
-------------------
``backbone.peers`` are iBGP neighbours (``peer-as`` = ``router.asn``) held by one ExaBGP process of
the pool (:data:`routing.exabgp.pool.BACKBONE`). They are peers of the routing core like customers'
sessions, with two differences: their routes are checked by :class:`BackboneImportPolicy` and are
kept in their Adj-RIB-In only (``show routes`` lists them) unless ``backbone.install`` — the core
gates them out of the Loc-RIB the way BFD strict mode gates a customer (``Rib.eligible``); and they
are *sent* something: every accepted customer route that is the best path.

Export is a channel (BIRD's ``out_filter`` and ``rt_notify``): the Loc-RIB records a best-path
change stream ``(prefix, old best, new best)`` (:attr:`routing.rib.LocRib.best_changes`) and the
core marks those prefixes dirty; :class:`BackboneExport` turns dirty prefixes into commands by
comparing, per Established backbone peer, what the prefix should be sent (:func:`backbone_route` of
the current best path) with what that session has been sent (its Adj-RIB-Out, :attr:`sent`):

- the best path came from a customer (eBGP) and carries no NO_ADVERTISE: announce it with next hop
  self, its ORIGIN, MED, LOCAL_PREF (ours after import policy: the backbone sees the customer's
  action communities' effect), AS_PATH with the customer's AS prepended ``path.prepend`` more times,
  and all its communities (standard, large, extended) as the customer's import policy carries them
  onwards (``ImportPolicy.communities_out``: what the customer sent minus our namespace, plus our
  informational communities of the router, the customer and the session). NO_EXPORT is kept and sent: iBGP is
  inside the AS (RFC 1997). An RTBH path is sent with BLACKHOLE and NO_EXPORT (RFC 7999 §3.2), so
  the whole network can drop the attack and no one passes it on outside;
- the best path came from the backbone (iBGP; only possible with ``install: true``), or there is
  none: withdraw whatever the session was sent. Never iBGP to iBGP (RFC 4271 §9.2: we are not a
  route reflector);
- equal to what was sent: nothing.

Commands are batched: one ``announce attributes ... nlri P1 P2 ...`` per distinct attribute set and
:data:`NLRI_PER_COMMAND` prefixes (checked against ExaBGP 5.0.15's own parser), one ``withdraw
attributes`` per chunk of withdrawals. Dirty prefixes accumulate across core steps and are flushed
when :data:`FLUSH_AT` of them are pending or a short timer fires, so a table arriving in one-prefix
UPDATEs still leaves in packed commands.

Correct across an ExaBGP restart and a session reset
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
ExaBGP keeps no copy we rely on: the backbone neighbours run with its default ``adj-rib-out false``
(a million cached routes would cost it gigabytes), so routes announced through the API are gone
from ExaBGP once the session resets or the process dies. Our Adj-RIB-Out is therefore defined as
*what the current session has been sent*: it is emptied whenever the session leaves Established
(Down, a NOTIFICATION, ExaBGP's death: the core's ``FLUSH`` and ``STALE`` effects), and on the
session's next Up the core runs a replay *job* that walks the Loc-RIB in slices of ``JOB_STEP``
prefixes and announces every exportable best path again — the router at the other end has also
forgotten everything, so an announcement of everything is exactly the difference. While a session
is down no commands are sent for it (ExaBGP would queue them for a session that then starts from
nothing); changes meanwhile are picked up by the replay, which reads the Loc-RIB as it is when it
runs. Routing events wait while a job runs (``RoutingCore.busy``), and a prefix that changes between
the replay's slices is dirty and compared against the Adj-RIB-Out like any other, so the replay and
the stream never disagree. The customer routes themselves survive an ExaBGP restart as stale paths
(the core's graceful-restart handling), so the replay after the restart re-announces them all, and
the route reflector's copy is back as soon as the session is.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from common.model import BLACKHOLE, NO_ADVERTISE, NO_EXPORT, IPAddress, IPNetwork, Path
from routing.config import RouterConfig
from routing.exabgp import messages as msg
from routing.policy import Rejection, RejectReason, _key, _overlaps, _usable_nexthop, attributes_text

#: Prefixes per ``announce attributes`` / ``withdraw attributes`` command (an IPv6 line stays ~10 KB).
NLRI_PER_COMMAND = 400
#: Dirty prefixes that make the core flush at once instead of waiting for the export timer.
FLUSH_AT = 1000
#: How long a dirty prefix may wait for others to share its command.
FLUSH_DELAY_S = 0.05
#: The core's timer name for the export flush.
EXPORT_TIMER = "backbone_export"
#: The ``customer`` label of backbone sessions (peers view, metrics).
BACKBONE_LABEL = "backbone"
#: ``SendCommand.purpose`` of export commands (``pop_router_exabgp_commands_failed_total{purpose}``).
PURPOSE = "backbone_export"


class BackboneImportPolicy:
    """What we accept from a route reflector: sane routes, not the customer rules.

    Our own AS in the AS_PATH is normal in iBGP (routes of other PoPs' customers have an empty or a
    customer AS_PATH; reflected routes from our own AS carry it when they came back from outside),
    the first AS is not a customer's, and there is no prefix list. What remains: no bogon, no longer
    than the configured maxima, a usable next hop of the prefix's family. The default route is
    allowed: a backbone commonly sends one. LOCAL_PREF is the one the backbone sent (100 if none).
    """

    def __init__(self, router: RouterConfig) -> None:
        self.customer = BACKBONE_LABEL
        self.local_asn = router.asn
        self.max_len = {4: router.max_prefix_length_v4, 6: router.max_prefix_length_v6}
        self._bogons = [_key(b) for b in router.bogons]
        self.labels: tuple[int, ...] = ()
        self.local_pref = 100
        #: Origin validation is for what customers send; the backbone's routes were validated where
        #: they entered the network.
        self.rpki = "off"

    def apply(self, path: Path) -> Path | Rejection:
        k = _key(path.prefix)
        if k[2] > 0:
            for b in self._bogons:
                if _overlaps(b, k):
                    return Rejection(RejectReason.BOGON, "from the backbone")
        if k[2] > self.max_len[k[0]]:
            return Rejection(RejectReason.TOO_SPECIFIC, f"longer than /{self.max_len[k[0]]}")
        if not _usable_nexthop(path.nexthop, path.prefix.version):
            return Rejection(RejectReason.INVALID_NEXTHOP, str(path.nexthop))
        lp = path.attrs.local_pref
        return replace(path, local_pref=lp if lp is not None else 100)


@dataclass(frozen=True, slots=True)
class BackboneRoute:
    """What one prefix is sent to the backbone with (next hop self). Hashable: commands are grouped
    by it."""

    origin: str
    as_path: tuple[int, ...]
    med: int | None
    local_pref: int
    communities: tuple[tuple[int, int], ...]
    large_communities: tuple[tuple[int, int, int], ...]
    ext_communities: tuple[int, ...]

    def text(self) -> str:
        return attributes_text(origin=self.origin, as_path=self.as_path, med=self.med, local_pref=self.local_pref,
                               communities=self.communities, large_communities=self.large_communities,
                               ext_communities=self.ext_communities)

    def to_dict(self) -> dict[str, object]:
        return {"nexthop": "self", "origin": self.origin, "as_path": list(self.as_path), "med": self.med,
                "local_pref": self.local_pref, "communities": [f"{a}:{b}" for a, b in self.communities],
                "large_communities": [f"{a}:{b}:{c}" for a, b, c in self.large_communities],
                "ext_communities": [f"0x{v:016x}" for v in self.ext_communities]}


#: A path's standard and large communities as carried onwards (``ImportPolicy.communities_out``).
CommunitiesOut = Callable[[Path], tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]]


def backbone_route(path: Path | None, communities_out: CommunitiesOut | None = None) -> BackboneRoute | None:
    """The export filter towards the backbone (module docstring): the route to send, or None.

    ``communities_out`` is the customer's import policy's view of what the path carries onwards
    (received communities minus our namespace, plus the informational ones); without it, the
    communities as stored.
    """
    if path is None or path.peer.ibgp:
        return None  # nothing, or learned over iBGP: never re-exported to iBGP
    a = path.attrs
    std, large = communities_out(path) if communities_out is not None else (a.communities, a.large_communities)
    if NO_ADVERTISE in std:
        return None
    if path.rtbh:
        std = std + tuple(c for c in (BLACKHOLE, NO_EXPORT) if c not in std)
    as_path = (path.peer.asn,) * path.prepend + a.as_path
    return BackboneRoute(a.origin.name.lower(), as_path, a.med, path.local_pref, std, large, a.ext_communities)


def _chunks(items: list[IPNetwork], n: int = NLRI_PER_COMMAND) -> Iterable[list[IPNetwork]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


@dataclass(slots=True)
class BackboneExport:
    """The Adj-RIB-Out of each backbone session and the commands that keep the session equal to it.

    Pure state: :meth:`reconcile` is given prefixes and a way to read their best path and returns
    ``(peer, command)`` pairs for the core to send.
    """

    #: Backbone session address -> the family (4 or 6) it carries.
    peers: dict[IPAddress, int]
    #: Per backbone session: prefix -> what the session was sent (its Adj-RIB-Out).
    sent: dict[IPAddress, dict[IPNetwork, BackboneRoute]] = field(default_factory=dict)
    #: Prefixes whose best path changed since the last flush.
    dirty: set[IPNetwork] = field(default_factory=set)
    #: Per backbone session: the prefixes of each command not yet acknowledged, in sending order
    #: (one command in flight per ExaBGP process, so acks come back in this order).
    inflight: dict[IPAddress, deque[list[IPNetwork]]] = field(default_factory=dict)
    announced: int = 0
    withdrawn: int = 0

    def __post_init__(self) -> None:
        for p in self.peers:
            self.sent.setdefault(p, {})
            self.inflight.setdefault(p, deque())

    def command_done(self, peer: IPAddress, ok: bool) -> list[IPNetwork]:
        """The oldest command to ``peer`` was answered; its prefixes if it failed (else [])."""
        q = self.inflight.get(peer)
        if not q:
            return []
        prefixes = q.popleft()
        return [] if ok else prefixes

    def withdraw_lines(self, peer: IPAddress, prefixes: list[IPNetwork]) -> list[str]:
        """Withdrawals of prefixes not in the Adj-RIB-Out (a replay after a failed command)."""
        lines = []
        for chunk in _chunks(prefixes):
            self.inflight[peer].append(chunk)
            lines.append(msg.withdraw_attributes(peer, chunk))
        return lines

    def session_reset(self, peer: IPAddress) -> int:
        """The session left Established: the other end forgot what it was sent, and so do we."""
        out = self.sent.get(peer)
        n = len(out) if out else 0
        self.sent[peer] = {}
        return n

    def reconcile(self, peer: IPAddress, prefixes: Iterable[IPNetwork],
                  lookup: Callable[[IPNetwork], Path | None],
                  communities_out: CommunitiesOut | None = None) -> list[str]:
        """Commands that make ``peer``'s Adj-RIB-Out right for ``prefixes``; ``lookup(prefix)`` gives
        the current best path (or None)."""
        version = self.peers[peer]
        sent = self.sent[peer]
        announce: dict[BackboneRoute, list[IPNetwork]] = {}
        withdraw: list[IPNetwork] = []
        for prefix in prefixes:
            if prefix.version != version:
                continue
            want = backbone_route(lookup(prefix), communities_out)
            have = sent.get(prefix)
            if want == have:
                continue
            if want is None:
                del sent[prefix]
                withdraw.append(prefix)
            else:
                sent[prefix] = want
                announce.setdefault(want, []).append(prefix)
        lines: list[str] = self.withdraw_lines(peer, withdraw)
        for route, ps in announce.items():
            text = route.text()
            for chunk in _chunks(ps):
                self.inflight[peer].append(chunk)
                lines.append(msg.announce_attributes(peer, text, chunk))
        self.announced += sum(len(v) for v in announce.values())
        self.withdrawn += len(withdraw)
        return lines

    def rows(self, peer: IPAddress) -> list[dict[str, object]]:
        """``show routes --exported PEER`` for a backbone session: its Adj-RIB-Out."""
        out = [{"prefix": str(p), **r.to_dict()} for p, r in self.sent.get(peer, {}).items()]
        return sorted(out, key=lambda r: _sort_key(str(r["prefix"])))


def _sort_key(prefix: str) -> tuple[int, int, int]:
    n = ipaddress.ip_network(prefix)
    return n.version, int(n.network_address), n.prefixlen
