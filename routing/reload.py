"""Live reconfiguration: what a new configuration would change, computed before anything changes.

Theory of operation
-------------------
A reload is two steps with a boundary between them:

1. **Preview** — :func:`plan_reload(old, new, rib, peers)` is pure: two :class:`~routing.config.Config`
   objects and a read-only look at the RIB in, a :class:`ReloadPlan` out. It never mutates the RIB
   and never sees where the configuration came from (a file, an API body, later etcd), so every
   source goes through the same preview and the same apply. The plan is JSON-serialisable and holds
   no secret: a changed TCP-MD5 or BFD key appears as the *fact* "md5 key changed", never a value.
2. **Apply** — the daemon (``routing/daemon.py``) turns the same two configurations into a
   :class:`routing.core.Reconfigure` event for the routing core (peers added/removed/updated,
   re-evaluation jobs run in slices like flushes), a new BFD session list, export commands, and a
   regenerated exabgp.conf; the outcome is reported next to the plan.

What each change costs (the "nothing reset that need not be" rule; the README has the table):

- **policy only** (prefix lists, local-pref, MPLS labels, bogons, length limits, a customer's name,
  its effective RPKI mode ``customers[].rpki``/``rpki.policy``, or caches added where there were none):
  the stored Adj-RIB-In (every announcement, accepted *and* rejected) is run through the new import
  policy; paths move between accepted and rejected and the Loc-RIB/FIB follow. No session touched.
- ``max_prefixes`` raised or removed: the limit changes; lowered below what the peer already made us
  store: that one session is torn down (cease 1), as if the peer had just exceeded it.
- **session parameters** (customer ASN, local address, TCP-MD5 key, hold time, GTSM, passive, our
  own ASN, router id or graceful-restart capability): ExaBGP must re-open that session: a *reset*,
  with the reasons listed. A peer's address is its identity: a changed address is one session removed and one added.
- **BFD**: new/removed sessions; changed tx/rx intervals are applied in place by the BFD process
  with a Poll Sequence (*retimed*, no flap); a changed multiplier, authentication, min TTL or
  interface re-creates the session (*recreated*: the peer sees it go down).
- **exports** (``router.announce``, ``customers[].export``: prefixes, prepend, communities, default
  route): announced/withdrawn on established sessions without a reset; a prefix whose attributes
  changed is announced again (an UPDATE replaces it).
- ``exabgp.processes``: customers whose ExaBGP process changes (rendezvous hashing moves few of them,
  ``routing/exabgp/pool.py``) are listed as *reset* ("moved from exabgp-0 to exabgp-1"): one process
  drops their sessions and the other opens them; routes stay (stale) until the new End-of-RIB.
  Only the processes whose generated configuration changes are signalled
  (``exabgp_processes_changed``).
- keys the running process cannot change (``api``, ``metrics``, ``fib``, ``exabgp`` but its
  ``processes``, ``bfd.realtime_priority``, ``backbone``) are listed under ``needs_restart`` and keep their running
  values.

FIB preview: for each prefix whose candidate paths change, the best-path chain
(:func:`routing.bestpath.select`) runs on the would-be set of paths and the resulting FIB entry is
compared with the installed one, exactly as :class:`routing.rib.LocRib` will when the job runs.

Re-evaluating an accepted path: the Adj-RIB-In stores accepted paths *after* policy (LOCAL_PREF set,
policy labels pushed). LOCAL_PREF is overwritten by the new policy anyway; a label stack equal to the
old policy's ``set_mpls_label`` is taken to be the policy's and removed first. (A labeled-unicast
route whose own labels equal the old policy's stack is the one case this cannot tell apart.)
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from common.model import FibEntry, IPAddress, IPNetwork, Path, Peer, intern_attrs, prefix_key
from routing.bestpath import select
from routing.bfd_link import session_specs
from routing.config import Config, CustomerConfig, PeerConfig, reveal
from routing.policy import ImportPolicy, Rejection, customer_exports
from routing.rib import Rib, _entry

#: How many example prefixes each section of a plan lists (the counts are always complete).
SAMPLE = 5

#: Prefixes examined per step of :func:`plan_steps` (a few ms of work between two loop turns).
PLAN_STEP = 500

#: Top-level keys the running daemon cannot change: they take effect at the next start.
RESTART_ONLY = ("api", "metrics", "fib", "exabgp", "backbone")


# --- configuration sources ---------------------------------------------------------------------------


def running_config(old: Config, new: Config) -> Config:
    """What runs after applying ``new``: its live keys, the running values of restart-only ones."""
    upd: dict[str, Any] = {k: getattr(old, k) for k in RESTART_ONLY}
    upd["exabgp"] = old.exabgp.model_copy(update={"processes": new.exabgp.processes})
    upd["bfd"] = new.bfd.model_copy(update={"realtime_priority": old.bfd.realtime_priority})
    return new.model_copy(update=upd)


def config_document(config: Config) -> dict[str, Any]:
    """The configuration as JSON (secrets masked by their serialiser): ``GET /config``, ``config diff``.

    Prefix rules are written back as the text an operator writes (``198.51.100.0/22 le 24``).
    """
    doc = config.model_dump(mode="json", by_alias=True)
    for c, d in zip(config.customers, doc["customers"], strict=True):
        d["import"]["prefixes"] = [str(r) for r in c.import_.prefixes]
    return doc


# --- per-peer comparisons ----------------------------------------------------------------------------
def hold_time(config: Config, peer: PeerConfig) -> int:
    return peer.hold_time_s or config.router.hold_time_s


def reset_reasons(old: Config, oc: CustomerConfig, op: PeerConfig,
                  new: Config, nc: CustomerConfig, np: PeerConfig) -> list[str]:
    """Why a kept session must be re-opened (empty: it absorbs the change). Never prints a secret."""
    why: list[str] = []
    if oc.asn != nc.asn:
        why.append(f"customer ASN {oc.asn} -> {nc.asn}")
    if old.router.asn != new.router.asn:
        why.append(f"local ASN {old.router.asn} -> {new.router.asn}")
    if old.router.router_id != new.router.router_id:
        why.append(f"router id {old.router.router_id} -> {new.router.router_id}")
    og, ng = getattr(old.router, "graceful_restart_s", None), getattr(new.router, "graceful_restart_s", None)
    if og != ng:
        why.append(f"graceful restart {og or 'off'} -> {ng or 'off'}")
    if op.local_address != np.local_address:
        why.append(f"local address {op.local_address} -> {np.local_address}")
    if _plain(op.md5_password) != _plain(np.md5_password):
        why.append("md5 key " + ("added" if op.md5_password is None else
                                 "removed" if np.md5_password is None else "changed"))
    if hold_time(old, op) != hold_time(new, np):
        why.append(f"hold time {hold_time(old, op)}s -> {hold_time(new, np)}s")
    if op.ttl_security != np.ttl_security:
        why.append(f"ttl security (GTSM) {'on' if np.ttl_security else 'off'}")
    if op.passive != np.passive:
        why.append(f"passive {'on' if np.passive else 'off'}")
    return why


def _plain(s: str | None) -> str | None:
    return None if s is None else reveal(s)


def policy_fingerprint(config: Config, customer: CustomerConfig) -> tuple:
    """Everything :class:`~routing.policy.ImportPolicy` reads: equal fingerprints, equal verdicts."""
    r, i = config.router, customer.import_
    return (r.asn, tuple(r.bogons), r.max_prefix_length_v4, r.max_prefix_length_v6, customer.name,
            customer.asn, tuple(str(x) for x in i.prefixes), i.local_pref, tuple(i.set_mpls_label),
            i.rtbh, tuple(i.reject_communities), r.rtbh_max_length_v4, r.rtbh_max_length_v6,
            tuple(r.announce) if i.rtbh else (),
            config.customer_rpki(customer))


def original_path(stored: Path, old_policy: ImportPolicy, peer: Peer) -> Path:
    """The announcement as received, from what the Adj-RIB-In stored after policy (see the docstring)."""
    p = stored
    if old_policy.labels and p.attrs.labels == old_policy.labels:
        p = replace(p, attrs=intern_attrs(replace(p.attrs, labels=())))
    if p.peer != peer:
        p = replace(p, peer=peer)
    return p


def reevaluate(rib: Rib, addr: IPAddress, prefix: IPNetwork, policy: ImportPolicy,
               peer: Peer) -> tuple[Path, Path | None, Path | Rejection] | None:
    """(original path, path in the Loc-RIB now or None, new verdict) for one stored prefix."""
    a = rib.adj[addr]
    acc = a.accepted.get(prefix)
    if acc is not None:
        orig = rib.validated(original_path(acc, a.policy, peer), policy)
        return orig, acc, policy.apply(orig)
    rej = a.rejected.get(prefix)
    if rej is None:
        return None
    orig = rib.validated(original_path(rej[0], a.policy, peer), policy)
    return orig, None, policy.apply(orig)


# --- the plan ----------------------------------------------------------------------------------------
@dataclass
class ReloadPlan:
    """What applying a configuration would change; :meth:`to_dict` is the JSON form (no secrets)."""

    sessions_added: list[dict[str, Any]] = field(default_factory=list)
    sessions_removed: list[dict[str, Any]] = field(default_factory=list)
    sessions_reset: list[dict[str, Any]] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)
    prefixes: list[dict[str, Any]] = field(default_factory=list)
    fib: dict[str, Any] = field(default_factory=lambda: {"added": 0, "removed": 0, "changed": 0, "first": []})
    bfd: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"added": [], "removed": [], "retimed": [], "recreated": []})
    exports: list[dict[str, Any]] = field(default_factory=list)
    policy_changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    #: The generated exabgp.conf differs (neighbours or their static routes): ExaBGP must reload it.
    exabgp_config_changed: bool = False
    #: The ExaBGP processes (``exabgp-N``) whose configuration changes, added or removed.
    exabgp_processes_changed: list[str] = field(default_factory=list)
    #: Peers (by address) whose prefixes are re-run through a new policy, and their new policies.
    reevaluate: dict[IPAddress, ImportPolicy] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        d = self.to_dict()
        return not any(d[k] for k in ("sessions_added", "sessions_removed", "sessions_reset", "limits",
                                      "prefixes", "exports", "policy_changed", "needs_restart", "other",
                                      "exabgp_config_changed")) \
            and not any(d["bfd"].values()) and not (d["fib"]["added"] or d["fib"]["removed"] or d["fib"]["changed"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions_added": self.sessions_added, "sessions_removed": self.sessions_removed,
            "sessions_reset": self.sessions_reset, "limits": self.limits, "prefixes": self.prefixes,
            "fib": self.fib, "bfd": self.bfd, "exports": self.exports, "policy_changed": self.policy_changed,
            "needs_restart": self.needs_restart, "other": self.other,
            "exabgp_config_changed": self.exabgp_config_changed,
            "exabgp_processes_changed": self.exabgp_processes_changed,
        }

    def resets(self) -> set[str]:
        return {s["peer"] for s in self.sessions_reset}


class _FibSim:
    """The would-be Loc-RIB for the prefixes a reload touches (read-only over the real one)."""

    def __init__(self, rib: Rib) -> None:
        self.rib = rib
        self.paths: dict[IPNetwork, dict[IPAddress, Path]] = {}

    def _of(self, prefix: IPNetwork) -> dict[IPAddress, Path]:
        ps = self.paths.get(prefix)
        if ps is None:
            ps = self.paths[prefix] = {p.peer.address: p for p in self.rib.loc.paths(prefix)}
        return ps

    def remove(self, prefix: IPNetwork, peer: IPAddress) -> None:
        self._of(prefix).pop(peer, None)

    def set(self, path: Path) -> None:
        self._of(path.prefix)[path.peer.address] = path

    def result(self, out: dict[str, Any], step: int) -> Iterator[None]:
        """Fill ``out`` with the FIB changes, pausing every ``step`` prefixes."""
        first = _Smallest(SAMPLE * 2)
        for i, prefix in enumerate(list(self.paths), 1):
            if i % step == 0:
                yield
            paths = self.paths[prefix]
            sel = select(list(paths.values()))
            new: FibEntry | None = _entry(sel, paths) if sel is not None else None
            old = self.rib.loc.fib_entry(prefix)
            if old == new:
                continue
            kind = "added" if old is None else "removed" if new is None else "changed"
            out[kind] += 1
            first.add(prefix, (kind, old, new))
        out["first"] = [{"prefix": str(prefix), "change": kind,
                         "old": [str(n) for n in old.nexthops] if old else [],
                         "new": [str(n) for n in new.nexthops] if new else []}
                        for prefix, (kind, old, new) in first.items()]


class _Smallest:
    """The ``n`` lowest prefixes seen, with a value each: samples in address order without sorting
    the whole (possibly full-table) set in one step."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._items: list[tuple[tuple[int, int, int], IPNetwork, Any]] = []

    def add(self, prefix: IPNetwork, value: Any) -> None:
        self._items.append((_net_key(prefix), prefix, value))
        if len(self._items) >= 4 * self.n:
            self._trim()

    def _trim(self) -> None:
        self._items.sort(key=lambda x: x[0])
        del self._items[self.n:]

    def items(self) -> list[tuple[IPNetwork, Any]]:
        self._trim()
        return [(p, v) for _k, p, v in self._items]


def _bfd_specs(config: Config) -> dict[tuple[str, str, bool], dict[str, Any]]:
    return {(s["peer"], s["local"], bool(s["multihop"])): s for s in session_specs(config)}


def _bfd_plan(old: Config, new: Config, customers: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    o, n = _bfd_specs(old), _bfd_specs(new)
    out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "retimed": [], "recreated": []}

    def ident(k: tuple[str, str, bool]) -> dict[str, Any]:
        return {"peer": k[0], "customer": customers.get(k[0], ""), "multihop": k[2]}

    for k in sorted(n.keys() - o.keys()):
        out["added"].append(ident(k))
    for k in sorted(o.keys() - n.keys()):
        out["removed"].append(ident(k))
    for k in sorted(o.keys() & n.keys()):
        a, b = o[k], n[k]
        why = [f"{f} {a.get(f)} -> {b.get(f)}" for f in ("mult", "min_ttl", "interface") if a.get(f) != b.get(f)]
        if _auth(a) != _auth(b):
            why.append("authentication changed")
        if why:
            out["recreated"].append({**ident(k), "reasons": why})
        elif (a["tx_ms"], a["rx_ms"]) != (b["tx_ms"], b["rx_ms"]):
            out["retimed"].append({**ident(k), "tx_ms": [a["tx_ms"], b["tx_ms"]], "rx_ms": [a["rx_ms"], b["rx_ms"]]})
    return out


def _auth(spec: dict[str, Any]) -> tuple | None:
    a = spec.get("auth")
    return None if a is None else (a["type"], a["key_id"], reveal(a["secret"]))


def _exabgp_texts(config: Config) -> dict[str, str]:
    """Each ExaBGP process's generated configuration (socket and interpreter left out)."""
    from pathlib import Path as FsPath

    from routing.exabgp.conf import render
    from routing.exabgp.pool import process_count, process_customers

    n = process_count(config)
    return {f"exabgp-{i}": render(config, FsPath("/dev/null"), python="python",
                                  customers=process_customers(config, n, i))
            for i in range(n)}


def plan_reload(old: Config, new: Config, rib: Rib | None = None,
                peers: Mapping[IPAddress, Any] | None = None) -> ReloadPlan:
    """Preview of applying ``new`` over ``old`` (pure: reads ``rib``, never changes it).

    ``peers`` (the core's peer table, optional) says which sessions are Established: exports go out
    only on those, and the plan says so.
    """
    steps = plan_steps(old, new, rib, peers)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def plan_steps(old: Config, new: Config, rib: Rib | None = None, peers: Mapping[IPAddress, Any] | None = None,
               step: int = PLAN_STEP) -> Generator[None, None, ReloadPlan]:
    """:func:`plan_reload` in steps of about ``step`` prefixes: the daemon yields to its event loop
    between them, so previewing a policy change over a full table never holds the failover lane or
    the API. (Routing events processed between steps may make the preview a little older than the
    RIB it is applied to; the apply itself re-evaluates the RIB as it is then.)"""
    rib = rib if rib is not None else Rib()
    plan = ReloadPlan()
    old_peers = {p.address: (c, p) for c, p in old.peers()}
    new_peers = {p.address: (c, p) for c, p in new.peers()}
    customers = {str(a): c.name for a, (c, _) in {**old_peers, **new_peers}.items()}
    sim = _FibSim(rib)

    for section in RESTART_ONLY:
        o, n = getattr(old, section), getattr(new, section)
        if section == "exabgp":  # its process count is applied live
            o, n = o.model_copy(update={"processes": None}), n.model_copy(update={"processes": None})
        if o != n:
            plan.needs_restart.append(section)
    if old.bfd.realtime_priority != new.bfd.realtime_priority:
        plan.needs_restart.append("bfd.realtime_priority")
    if old.log_level != new.log_level:
        plan.other.append(f"log_level {old.log_level} -> {new.log_level}")
    if old.rpki.caches != new.rpki.caches:
        names = [", ".join(f"{c.address}:{c.port}" for c in x.rpki.caches) or "none" for x in (old, new)]
        plan.other.append(f"rpki caches {names[0]} -> {names[1]} (RTR clients replaced; what their VRPs "
                          "change is re-validated, no session reset)")
    old_sav = {c.name: c.sav for c in old.customers}
    for c in new.customers:  # applied live to the XDP maps (routing/policy_dataplane.py)
        if c.name in old_sav and old_sav[c.name] != c.sav:
            plan.other.append(f"customer {c.name}: sav {old_sav[c.name]} -> {c.sav}")

    for addr in sorted(new_peers.keys() - old_peers.keys(), key=_addr_key):
        c, _ = new_peers[addr]
        plan.sessions_added.append({"peer": str(addr), "customer": c.name})
    for addr in sorted(old_peers.keys() - new_peers.keys(), key=_addr_key):
        c, _ = old_peers[addr]
        a = rib.adj.get(addr)
        n = len(a.accepted) if a else 0
        plan.sessions_removed.append({"peer": str(addr), "customer": c.name, "routes_withdrawn": n})
        if a is not None and rib.eligible.get(addr, True):
            for prefix in a.accepted:
                sim.remove(prefix, addr)

    from routing.exabgp.pool import peer_processes

    old_proc = peer_processes(old)
    new_proc = peer_processes(running_config(old, new))
    changed_customers: set[str] = set()
    for addr in sorted(old_peers.keys() & new_peers.keys(), key=_addr_key):
        oc, op = old_peers[addr]
        nc, np = new_peers[addr]
        a = rib.adj.get(addr)
        why = reset_reasons(old, oc, op, new, nc, np)
        if old_proc[addr] != new_proc[addr]:
            why.append(f"moved from exabgp-{old_proc[addr]} to exabgp-{new_proc[addr]} "
                       f"(exabgp.processes {old.exabgp.processes} -> {new.exabgp.processes})")
        if why:
            n = len(a.accepted) if a else 0
            entry = {"peer": str(addr), "customer": nc.name, "reasons": why,
                     "routes_flushed_until_reestablished": n}
            if old_proc[addr] != new_proc[addr]:
                # The old process's "down" is not heard: the routes stay, stale, until the new End-of-RIB.
                entry["routes_flushed_until_reestablished"] = 0
                entry["routes_kept_stale"] = n
            plan.sessions_reset.append(entry)
            continue
        lo, ln = oc.import_.max_prefixes, nc.import_.max_prefixes
        if lo != ln:
            stored = a.received if a else 0
            entry: dict[str, Any] = {"peer": str(addr), "customer": nc.name, "max_prefixes": [lo, ln],
                                     "stored": stored}
            if ln is not None and stored > ln:
                entry["teardown"] = f"max_prefixes {ln} below the {stored} prefixes stored: session torn down (cease 1)"
            plan.limits.append(entry)
        if policy_fingerprint(old, oc) == policy_fingerprint(new, nc):
            continue
        changed_customers.add(nc.name)
        policy = ImportPolicy(new.router, nc, new.customer_rpki(nc))
        plan.reevaluate[addr] = policy
        if a is None:
            continue
        ps = peers.get(addr) if peers is not None else None
        base = ps.peer if ps is not None else Peer(addr, oc.name, oc.asn, old.router.asn)
        peer = Peer(addr, nc.name, nc.asn, new.router.asn, base.router_id)
        eligible = rib.eligible.get(addr, True)
        entry = yield from _reevaluate_peer(rib, addr, nc.name, policy, peer, sim if eligible else None, step)
        plan.prefixes.append(entry)
    plan.policy_changed = sorted(changed_customers)
    plan.prefixes = [p for p in plan.prefixes if p["accepted"] or p["rejected"] or p["changed"]]
    yield from sim.result(plan.fib, step)
    plan.bfd = _bfd_plan(old, new, customers)

    resets = plan.resets()
    for addr in sorted(old_peers.keys() & new_peers.keys(), key=_addr_key):
        if str(addr) in resets:
            continue
        oc, op = old_peers[addr]
        nc, np = new_peers[addr]
        before = customer_exports(old.router, oc, addr.version)
        after = customer_exports(new.router, nc, addr.version)
        if before == after:
            continue
        ps = peers.get(addr) if peers is not None else None
        established = ps is not None and getattr(ps.state, "value", ps.state) == "established"
        # A prefix whose attributes changed (prepend, communities) is announced again: an UPDATE
        # replaces the route, no withdrawal and no session reset.
        plan.exports.append({
            "peer": str(addr), "customer": nc.name, "established": established,
            "announce": [str(n) for n in sorted((n for n in after if before.get(n) != after[n]), key=_net_key)],
            "withdraw": [str(n) for n in sorted(before.keys() - after.keys(), key=_net_key)],
            "attributes": next(iter(after.values()), "")})
    before, after = _exabgp_texts(old), _exabgp_texts(running_config(old, new))
    plan.exabgp_processes_changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    plan.exabgp_config_changed = bool(plan.exabgp_processes_changed)
    return plan


def _reevaluate_peer(rib: Rib, addr: IPAddress, customer: str, policy: ImportPolicy, peer: Peer,
                     sim: _FibSim | None, step: int) -> Generator[None, None, dict[str, Any]]:
    a = rib.adj[addr]
    out: dict[str, Any] = {"peer": str(addr), "customer": customer, "accepted": 0, "rejected": 0, "changed": 0,
                           "first_accepted": [], "first_rejected": []}
    first_acc, first_rej = _Smallest(SAMPLE), _Smallest(SAMPLE)
    for i, prefix in enumerate(list(a.accepted) + list(a.rejected), 1):
        if i % step == 0:
            yield
        if rib.adj.get(addr) is not a:
            break  # the peer went away between steps
        r = reevaluate(rib, addr, prefix, policy, peer)
        if r is None:
            continue
        _orig, current, verdict = r
        if isinstance(verdict, Rejection):
            if current is None:
                continue
            out["rejected"] += 1
            first_rej.add(prefix, verdict)
            if sim is not None:
                sim.remove(prefix, addr)
            continue
        if current is None:
            out["accepted"] += 1
            first_acc.add(prefix, a.rejected[prefix][1].reason.value)
        elif current == verdict:
            continue
        else:
            out["changed"] += 1
        if sim is not None:
            sim.set(verdict)
    out["first_rejected"] = [{"prefix": str(p), "reason": v.reason.value, "detail": v.detail}
                             for p, v in first_rej.items()]
    out["first_accepted"] = [{"prefix": str(p), "was": was} for p, was in first_acc.items()]
    return out


def _addr_key(a: IPAddress) -> tuple[int, int]:
    return a.version, int(a)


_net_key = prefix_key


# --- text rendering (the CLI without --json, the daemon's log) ---------------------------------------
def render_text(doc: dict[str, Any]) -> str:
    """A reload document (plan + outcome) as lines an operator reads, grouped by what changes."""
    plan = doc.get("plan", doc)
    lines: list[str] = []
    for s in plan["sessions_added"]:
        lines.append(f"session added    {s['peer']} ({s['customer']})")
    for s in plan["sessions_removed"]:
        lines.append(f"session removed  {s['peer']} ({s['customer']}): {s['routes_withdrawn']} routes withdrawn")
    for s in plan["sessions_reset"]:
        lines.append(f"session RESET    {s['peer']} ({s['customer']}): {'; '.join(s['reasons'])}"
                     f" ({s['routes_flushed_until_reestablished']} routes flushed until it is back)")
    for s in plan["limits"]:
        lines.append(f"max_prefixes     {s['peer']} ({s['customer']}): {s['max_prefixes'][0]} -> "
                     f"{s['max_prefixes'][1]} ({s['stored']} stored){'; ' + s['teardown'] if 'teardown' in s else ''}")
    for p in plan["prefixes"]:
        lines.append(f"prefixes         {p['peer']} ({p['customer']}): {p['accepted']} become accepted, "
                     f"{p['rejected']} become rejected, {p['changed']} change attributes")
        for x in p["first_accepted"]:
            lines.append(f"    + {x['prefix']} (was {x['was']})")
        for x in p["first_rejected"]:
            lines.append(f"    - {x['prefix']}: {x['reason']}{' (' + x['detail'] + ')' if x['detail'] else ''}")
    f = plan["fib"]
    if f["added"] or f["removed"] or f["changed"]:
        lines.append(f"FIB              {f['added']} added, {f['removed']} removed, {f['changed']} changed")
        for x in f["first"]:
            old, new = ", ".join(x["old"]) or "-", ", ".join(x["new"]) or "-"
            lines.append(f"    {x['change']:8} {x['prefix']}: {old} -> {new}")
    b = plan["bfd"]
    for s in b["added"]:
        lines.append(f"BFD added        {s['peer']} ({s['customer']})")
    for s in b["removed"]:
        lines.append(f"BFD removed      {s['peer']} ({s['customer']})")
    for s in b["retimed"]:
        lines.append(f"BFD retimed      {s['peer']} ({s['customer']}): tx {s['tx_ms'][0]} -> {s['tx_ms'][1]} ms, "
                     f"rx {s['rx_ms'][0]} -> {s['rx_ms'][1]} ms (Poll Sequence, no flap)")
    for s in b["recreated"]:
        lines.append(f"BFD RECREATED    {s['peer']} ({s['customer']}): {'; '.join(s['reasons'])}")
    for e in plan["exports"]:
        when = "" if e["established"] else " (not established: sent when it comes up)"
        lines.append(f"exports          {e['peer']} ({e['customer']}): announce {e['announce'] or '-'}, "
                     f"withdraw {e['withdraw'] or '-'}{when}")
    for k in plan["needs_restart"]:
        lines.append(f"needs a restart  {k} (the running value is kept)")
    for k in plan["other"]:
        lines.append(f"other            {k}")
    if not lines:
        lines.append("no change")
    out = doc.get("outcome")
    if out is not None:
        lines.append("outcome: " + ", ".join(f"{k}={v}" for k, v in out.items() if not isinstance(v, list | dict)))
        for k, v in out.items():
            if isinstance(v, list | dict) and v:
                lines.append(f"    {k}: {v}")
    return "\n".join(lines)
