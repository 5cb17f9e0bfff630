"""Generate ExaBGP's configuration and environment from ``pop.yaml``.

Theory of operation
-------------------
ExaBGP is our BGP speaker; everything it knows comes from the text made here, regenerated on every
(re)start and on every reload that changes it (ExaBGP then re-reads it on SIGUSR1) so it can never
drift from the running configuration:

- one ``neighbor`` per configured peer of the customers this process holds (the pool, see
  ``routing/exabgp/pool.py``, gives each process its own file and relay socket), one address family
  per session (an IPv4 session carries ``ipv4 unicast``, an IPv6 session ``ipv6 unicast``), 4-byte
  ASNs, optional TCP-MD5 and GTSM;
- ``adj-rib-in false``: ExaBGP's own Adj-RIB-In costs ~3 KB per route and half its CPU, and we keep
  our own (``routing.rib``);
- customer export policy: the prefixes :func:`routing.policy.export_routes` selects, as ``static``
  routes with ``next-hop self`` and the customer's attributes (our AS prepended, communities;
  :func:`routing.policy.export_attributes`). Being in the configuration, they are re-sent on every
  session establishment and survive an ExaBGP restart without the daemon replaying anything. A
  reload changes them twice over: the daemon announces/withdraws the difference through the API
  (ExaBGP's SIGUSR1 compares static routes by prefix only — ``OutgoingRIB.replace_reload`` — so a
  prefix whose attributes changed would not be re-sent by ExaBGP), and the regenerated file makes the
  next start agree;
- backbone peers (``backbone.peers``, iBGP: ``peer-as`` is our own AS) in the process holding
  :data:`~routing.exabgp.pool.BACKBONE`, with no static routes: what they are sent is the accepted
  customer routes, announced through the API and replayed on every Up (``routing/backbone.py``);
- one ``process`` running the relay (``python -I -S .../routing/exabgp/bridge.py SOCKET``) with the JSON
  encoder, subscribed to state changes, parsed updates, OPEN and NOTIFICATION messages.

The environment keeps ExaBGP in the foreground as root (it would otherwise drop to ``nobody`` and
run the relay as ``nobody`` too, which cannot reach our socket), logs at WARNING (default logging
costs ~26 % CPU, one line per UPDATE), keeps API acks on, disables its CLI pipes, and prints plain
prefixes as bare strings (``exabgp.api.compact``). Under PyPy the young generation is sized by
``exabgp.pypy_nursery_mb`` (``PYPY_GC_NURSERY``), not by the cache size the CPU reports.

Reactor wake-ups (:func:`reactor_poll_s`): ExaBGP 5's reactor is one loop that, on every pass, gives
*every* session a turn (a ``poll(0)`` on its socket, its keepalive and hold timers, its outgoing
queue), then sleeps in ``poll()`` on all sockets and the API pipe for at most ``exabgp.reactor.speed``
/ 100 seconds (``reactor/loop.py``; default 10 ms). Any BGP message or API command ends the sleep
at once, and a pass with work left (routes still to send, a command just read) does not sleep at
all; only the reactor's timer work waits for the timeout: sending a keepalive (ExaBGP's timers
count whole seconds anyway), seeing that an outgoing connect completed (it polls for input only)
and accepting a passive peer's connection. Idle, the 10 ms default is 100 passes a second over
every session: ~25 % of a core with 200 sessions on PyPy, ~37 % on CPython (measured 2026-12-01).
So the timeout is ``exabgp.reactor_poll_s``, and never more than a tenth of the shortest configured
hold time — a keepalive is then at most that much late (with hold 3 s and keepalives every second, a
gap of at most ~2.3 s, ExaBGP's whole-second timers included). The default, 0.1 s, cost ~8 % of a
core idle with 200 sessions; 0.25 s cost ~5.5 % but 1,000 sessions took ~1.5x as long to come up
(21-43 s against 14-29 s): the session set-up steps that wait for the timeout (a connect completing)
come once per session, and a start-up with many sessions is made of them. What remained idle was the
passes woken by the peers' own keepalives (N sessions / (hold / 3) per second, each walking all N
sessions), which no timeout setting changes. ``exabgp.env`` still overrides it.

That walk is what the lean reactor removes (``exabgp.lean_reactor``, on by default;
:mod:`routing.exabgp.lean_reactor`): ExaBGP is started through that launcher, which patches the
reactor so that a pass visits only the sessions with something to do — not yet Established, a
message read from its socket, work queued, or more to do after its last turn — and sweeps every
session on the first pass of each wall-clock second (``exabgp.lean_sweep_s``), which is when ExaBGP's
whole-second keepalive and hold timers can fall due. The timeout above still paces the wake-ups and
the set-up steps; what a wake-up costs no longer grows with the number of idle sessions. Measured
(``benchmarks/RESULTS.md``, "lean reactor", 2026-12-01, PyPy): 200 idle sessions 3.6-4.0 % of a core
in all (2.6 % after a minute), against 6.9-8.7 % without; 1,000 sessions 10.5-10.8 % against ~37 %;
keepalives on time and 1,000 sessions up as fast. What remains is per wake-up (~0.75 ms each under
PyPy, ~17 a second) and the sweep (~8 ms a second for 200 sessions), so the timeout above still
matters: with the lean reactor an unset ``exabgp.reactor_poll_s`` is 0.25 s (200 idle sessions
1.7-1.9 % of a core against 2.3 % at 0.1 s, 1,000 up in 14-18 s), without it 0.1 s (there 0.25 s slowed
the start-up of 1,000 sessions 1.5x). :func:`lean_environment` is what the launcher is told.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

from routing.config import Config, PeerConfig, reveal
from routing.exabgp.lean_reactor import ENV_RAW_UPDATES, ENV_STATS, ENV_SWEEP_S
from routing.exabgp.pool import BACKBONE
from routing.policy import customer_exports
from routing.runtime import MMAP_THRESHOLD

PROCESS = "popd"


def _q(s: str) -> str:
    """Quote a value for ExaBGP's configuration; a :class:`Secret` is written in clear (only here)."""
    plain = reveal(s)
    if not plain.isascii() or any(c in plain for c in '"\\;{}\n'):
        # repr() of a Secret is masked: the error never carries the key itself
        raise ValueError(f"value not allowed in an ExaBGP configuration: {s!r}")
    return f'"{plain}"'


def _family(p: PeerConfig) -> str:
    return "ipv4 unicast;" if p.address.version == 4 else "ipv6 unicast;"


#: The relay, run as a script with ``-I -S`` (isolated, no ``site``): it uses the standard library
#: only, so it needs neither the venv's site-packages nor our package on its path, and skipping them
#: keeps ~2 MB per ExaBGP process (12.6 -> 10.7 MB at start, 2026-12-02).
RELAY_SCRIPT = Path(__file__).resolve().with_name("bridge.py")


def render(config: Config, socket_path: Path, python: str | None = None,
           customers: Collection[str] | None = None) -> str:
    """The configuration text; ``customers``: only their sessions, and the backbone's when it holds
    :data:`~routing.exabgp.pool.BACKBONE` (None: every session)."""
    python = python or sys.executable
    lines = [
        "# Generated by pop-router from its configuration; edits are overwritten on restart.",
        f"process {PROCESS} {{",
        f"    run {python} -I -S {RELAY_SCRIPT} {socket_path};",
        "    encoder json;",
        "}",
        "",
    ]
    r = config.router
    for customer, peer in config.peers():
        if customers is not None and customer.name not in customers:
            continue
        lines += _neighbor(config, peer, customer.name, customer.asn)
        exports = customer_exports(r, customer, peer.address.version)
        if exports:
            lines.append("    static {")
            lines += [f"        route {n} next-hop self{' ' + a if a else ''};" for n, a in exports.items()]
            lines.append("    }")
        lines += ["}", ""]
    if customers is None or BACKBONE in customers:
        for peer in config.backbone.peers:
            # iBGP: peer-as is our own AS. Nothing static: the daemon announces the accepted customer
            # routes through the API and replays them whenever the session comes up (routing/backbone.py).
            lines += _neighbor(config, peer, "backbone", r.asn)
            lines += ["}", ""]
    return "\n".join(lines)


def _neighbor(config: Config, peer: PeerConfig, description: str, peer_as: int) -> list[str]:
    """A neighbour block up to (not including) its static routes and closing brace."""
    r = config.router
    hold = peer.hold_time_s or r.hold_time_s
    lines = [
        f"neighbor {peer.address} {{",
        f"    description {_q(description)};",
        f"    router-id {r.router_id};",
        f"    local-address {peer.local_address};",
        f"    local-as {r.asn};",
        f"    peer-as {peer_as};",
        f"    hold-time {hold};",
        "    adj-rib-in false;",
        "    group-updates true;",
    ]
    if peer.passive:
        lines.append("    passive true;")
    if peer.md5_password:
        lines.append(f"    md5-password {_q(peer.md5_password)};")
    if peer.ttl_security:
        lines += ["    outgoing-ttl 255;", "    incoming-ttl 255;"]
    lines += [
        f"    family {{ {_family(peer)} }}",
        "    capability { asn4 enable; "
        + (f"graceful-restart {r.graceful_restart_s}; " if r.graceful_restart_s else "") + "}",
        f"    api {{ processes [ {PROCESS} ]; neighbor-changes; "
        "receive { parsed; update; notification; open; } }",
    ]
    return lines


#: The reactor's timeout is at most this fraction of the shortest hold time (see the module docstring).
HOLD_FRACTION = 0.1
#: ``exabgp.reactor_poll_s`` when unset, with and without the lean reactor (``benchmarks/RESULTS.md``,
#: "the reactor timeout with the lean reactor": 200 idle sessions 1.7-1.9 % of a core at 0.25 s
#: against 2.3 % at 0.1 s, 1,000 sessions up in 14-18 s; without it 0.25 s slowed that start-up 1.5x).
DEFAULT_POLL_LEAN_S = 0.25
DEFAULT_POLL_S = 0.1


def reactor_poll_s(config: Config) -> float:
    """Seconds ExaBGP's reactor may sleep with nothing to do: ``exabgp.reactor_poll_s``, capped at
    :data:`HOLD_FRACTION` of the shortest hold time configured for any session, so the keepalives
    it sends (every hold / 3) are late by at most that much."""
    holds = [p.hold_time_s or config.router.hold_time_s
             for p in [p for _c, p in config.peers()] + list(config.backbone.peers)]
    shortest = min(holds, default=config.router.hold_time_s)
    wanted = config.exabgp.reactor_poll_s
    if wanted is None:
        wanted = DEFAULT_POLL_LEAN_S if config.exabgp.lean_reactor else DEFAULT_POLL_S
    return min(wanted, shortest * HOLD_FRACTION)


#: PyPy's nursery size (read by PyPy only: CPython and the relay ignore it). PyPy's default is half
#: the last-level cache it finds, which a VM may report as hundreds of MiB (``exabgp.pypy_nursery_mb``).
PYPY_NURSERY_ENV = "PYPY_GC_NURSERY"
#: PyPy starts a major collection when its heap reaches this multiple of what the last one kept (its
#: default: 1.82). ExaBGP's heap is mostly transient (messages parsed, encoded, dropped), so 1.3 cost
#: no CPU measurably and lowered its peak by ~7 MB per process at a 1M-prefix session (108 -> 101 MB,
#: 2026-12-02, benchmarks/RESULTS.md "PyPy's nursery").
PYPY_MAJOR_ENV, PYPY_MAJOR_COLLECT = "PYPY_GC_MAJOR_COLLECT", "1.3"


def environment(config: Config) -> dict[str, str]:
    """ExaBGP's settings for one of our processes (``exabgp.env`` applied last, so it wins)."""
    env = {
        "exabgp.daemon.user": "root",
        "exabgp.daemon.daemonize": "false",
        "exabgp.daemon.drop": "false",
        "exabgp.log.level": config.exabgp.log_level,
        "exabgp.log.destination": "stdout",
        "exabgp.api.ack": "true",
        "exabgp.api.cli": "false",
        "exabgp.api.respawn": "true",
        "exabgp.api.encoder": "json",
        # A plain prefix printed as a bare string instead of {"nlri": ...}: about a third fewer bytes
        # per prefix to encode, relay and parse (issue 12). Prefixes with a label or a path id keep
        # the object form; messages.py reads both.
        "exabgp.api.compact": "true",
        "exabgp.tcp.bind": "",
        # The reactor sleeps speed / 100 s at most (reactor/loop.py: _sleep_time = speed / 100).
        "exabgp.reactor.speed": f"{reactor_poll_s(config) * 100:g}",
    }
    env.update(config.exabgp.env)
    # ExaBGP reads both `exabgp.a.b` and `exabgp_a_b`; the underscore form survives shells.
    out = {k.replace(".", "_"): v for k, v in env.items()}
    # The relay, which ExaBGP starts with this environment, then returns its large buffers to the
    # kernel when freed (routing/runtime.py: fixed_mmap_threshold says why; the daemon sets its own).
    out.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    if config.exabgp.pypy_nursery_mb is not None:
        out[PYPY_NURSERY_ENV] = f"{config.exabgp.pypy_nursery_mb}MB"
    out[PYPY_MAJOR_ENV] = PYPY_MAJOR_COLLECT
    return out


def lean_environment(config: Config, stats_path: Path) -> dict[str, str]:
    """What :mod:`routing.exabgp.lean_reactor` reads: its sweep period and where to write its report."""
    return {ENV_SWEEP_S: f"{config.exabgp.lean_sweep_s:g}", ENV_STATS: str(stats_path),
            ENV_RAW_UPDATES: "1" if config.exabgp.updates == "raw" else "0"}
