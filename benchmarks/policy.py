"""Route origin validation inside the routing core: per-path cost, and re-validating a 1M-path RIB.

Theory of operation
-------------------
``benchmarks/rpki.py`` measures the validator alone; this measures what the daemon does with it,
through the real classes and no processes: :class:`~routing.rib.Rib`, :class:`~routing.policy.
ImportPolicy` (``reject-invalid``) and :class:`~routing.core.RoutingCore` with its sliced jobs.

1. **Per path**: the RFC 6811 state of a stored path (``routing.rib.validation_state``: origin AS
   from the attributes, the validator's bisect walk) and ``Rib.validated`` (that plus the new
   frozen ``Path``), against the import policy alone on the same paths (the reference: what a path
   cost before RPKI).
2. **A 10,000-VRP change on a 1,000,000-path RIB** (one customer session holding every path; VRPs
   and paths shaped as in ``benchmarks/rpki.py``: 400,000 VRPs, 60 % of the paths inside a VRP
   prefix): 5,000 VRPs withdrawn and 5,000 announced. Timed separately: the daemon's snapshot
   (index rebuild + affected ranges, done in a worker thread by ``routing/rpki_link.py``), and
   **from the ``RpkiChanged`` event to the last slice of the core's re-validation job**, driven as the
   daemon's owner drives it (``core.work(JOB_SLICE)`` until the core is not busy), with the longest
   slice (what the failover lane and the API could wait behind it).

Times are CPU seconds of this process (``time.process_time``) with the wall clock beside them: on a
shared 2-vCPU machine the wall clock counts other tenants.

``--xdp`` also runs ``benchmarks/policy_xdp.py``'s ``run() -> dict`` (``xdp_sav_ratio``, another
engineer's measure) when it can be imported, and merges its keys into the result.

Prints a table and ``RESULT {json}`` (``revalidate_1m_s``, ``validate_us_per_path``, ...).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rpki import make_paths, make_vrps
from common.model import Attributes, Origin, Peer, intern_attrs
from common.model import Path as RoutePath
from routing.config import parse_config
from routing.core import PeerStatus, RoutingCore
from routing.daemon import JOB_SLICE
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy
from routing.rib import Rib, validation_state
from routing.rov import RpkiChanged
from routing.rpki_link import snapshot

CUSTOMER_AS = 64512
PEER = ipaddress.ip_address("10.0.1.2")


def timed(fn, *args):  # type: ignore[no-untyped-def]
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def build(n_paths: int, n_vrps: int, rng: random.Random) -> tuple[Any, ...]:
    config = parse_config({
        "router": {"asn": 65000, "router_id": "192.0.2.1", "bogons": [], "max_prefix_length_v4": 32,
                   "max_prefix_length_v6": 128},
        "rpki": {"caches": [{"address": "127.0.0.1"}]},
        "customers": [{"name": "acme", "asn": CUSTOMER_AS, "import": {"prefixes": ["0.0.0.0/0 le 32", "::/0 le 128"]},
                       "peers": [{"address": str(PEER), "local_address": "10.0.1.1"}]}],
    })
    c = config.customers[0]
    policy = ImportPolicy(config.router, c, config.customer_rpki(c))
    rib = Rib()
    rib.add_peer(PEER, policy, None)
    peer = Peer(PEER, "acme", CUSTOMER_AS, 65000)
    core = RoutingCore(rib, {PEER: PeerStatus(PEER, ipaddress.ip_address("10.0.1.1"), "acme", "ipv4", peer)},
                       stale_timeout_s=120.0)
    core.on_event(msg.StateEvent(PEER, PEER, "up"), 0.0)
    vrps = make_vrps(n_vrps, rng)
    raw = {(a, p, ln): o for a, p, ln, o in make_paths(n_paths, vrps, rng)}  # one path per prefix
    nh = {4: ipaddress.ip_address("10.0.1.2"), 6: ipaddress.ip_address("2001:db8:1::2")}
    attrs: dict[int, Attributes] = {}
    paths = []
    for (a, p, ln), o in raw.items():
        at = attrs.get(o) or attrs.setdefault(o, intern_attrs(Attributes(Origin.IGP, (CUSTOMER_AS, o))))
        net = ipaddress.IPv4Network((p, ln)) if a == 4 else ipaddress.IPv6Network((p, ln))
        paths.append(RoutePath(net, peer, nh[a], at))
    return config, policy, rib, core, vrps, paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--vrps", type=int, default=400_000)
    ap.add_argument("--quick", action="store_true", help="100,000 paths, 40,000 VRPs (smoke run)")
    ap.add_argument("--xdp", action="store_true", help="also run benchmarks/policy_xdp.py (xdp_sav_ratio)")
    args = ap.parse_args()
    n_paths, n_vrps = (100_000, 40_000) if args.quick else (args.paths, args.vrps)
    rng = random.Random(6811)
    rows: list[tuple[str, str]] = []
    result: dict[str, Any] = {"paths": n_paths, "vrps": n_vrps}

    _config, policy, rib, core, vrps, paths = build(n_paths, n_vrps, rng)
    n = len(paths)
    (validator, _), t_snap0, _ = timed(snapshot, frozenset(), frozenset(vrps))
    rib.validator = validator

    # 1. per path
    sample = paths[:200_000]
    _, t_state, _ = timed(lambda: [validation_state(validator, p) for p in sample])
    validated, t_validated, _ = timed(lambda: [rib.validated(p, policy) for p in sample])
    _, t_policy, _ = timed(lambda: [policy.apply(p) for p in validated])
    us = 1e6 / len(sample)
    rows += [
        (f"initial snapshot: {n_vrps:,} VRPs indexed", f"{t_snap0:.3f} s"),
        ("per path: validation_state (origin AS + validator)", f"{t_state * us:.2f} us"),
        ("per path: Rib.validated (state + new Path)", f"{t_validated * us:.2f} us"),
        ("per path: import policy alone (reference)", f"{t_policy * us:.2f} us"),
    ]
    result["validate_us_per_path"] = round(t_state * us, 3)
    result["validated_us_per_path"] = round(t_validated * us, 3)
    result["policy_us_per_path"] = round(t_policy * us, 3)

    # the RIB: every path announced through the core's RIB (validation + policy + Loc-RIB)
    def fill() -> None:
        for i in range(0, n, 10_000):
            rib.announce(PEER, paths[i:i + 10_000])

    _, t_fill, w_fill = timed(fill)
    a = rib.adj[PEER]
    rows.append((f"RIB filled: {n:,} paths announced", f"{t_fill:.1f} s CPU, {w_fill:.1f} s wall "
                 f"({len(a.accepted):,} accepted, {len(a.rejected):,} rejected)"))
    before = {s.value if s else None: c for s, c in a.rpki_states.items()}

    # 2. a 10,000-VRP change
    old = frozenset(vrps)
    withdrawn = set(rng.sample(vrps, 5_000))
    announced = {v for v in make_vrps(5_000, rng) if v not in old}
    new = (old - withdrawn) | announced
    (new_validator, ranges), t_snap, w_snap = timed(snapshot, old, new)
    slices: list[float] = []

    def revalidate() -> None:
        core.on_event(RpkiChanged(new_validator, ranges), 1.0)
        while core.busy:
            t0 = time.perf_counter()
            core.work(JOB_SLICE)
            slices.append(time.perf_counter() - t0)

    _, t_rev, w_rev = timed(revalidate)
    st = core.rov.last
    assert st is not None and st.done
    slices.sort()
    rows += [
        (f"10,000-VRP change: snapshot ({len(new):,} VRPs re-indexed, {len(ranges):,} ranges; worker thread)",
         f"{t_snap:.3f} s CPU, {w_snap:.3f} s wall"),
        (f"re-validation job: {st.examined:,} paths examined, {st.in_ranges:,} in ranges",
         f"{t_rev:.3f} s CPU, {w_rev:.3f} s wall"),
        ("  paths whose state changed / now rejected / now accepted",
         f"{st.changed_state:,} / {st.became_rejected:,} / {st.became_accepted:,}"),
        ("  slices; median / p99 / max slice", f"{len(slices):,}; {slices[len(slices) // 2] * 1e3:.2f} / "
         f"{slices[int(len(slices) * 0.99)] * 1e3:.2f} / {slices[-1] * 1e3:.2f} ms"),
        ("paths by state before -> after", f"{before} -> "
         f"{ {s.value if s else None: c for s, c in a.rpki_states.items()} }"),
    ]
    scale = 1_000_000 / n
    result.update({"revalidate_1m_s": round(t_rev * scale, 3), "revalidate_wall_s": round(w_rev, 3),
                   "snapshot_s": round(t_snap, 3), "max_slice_ms": round(slices[-1] * 1e3, 2),
                   "changed_state": st.changed_state, "in_ranges": st.in_ranges})

    if args.xdp:
        try:
            from benchmarks.policy_xdp import run as run_xdp  # another engineer's benchmark
        except ImportError as exc:
            rows.append(("XDP SAV (benchmarks/policy_xdp.py)", f"skipped: not importable ({exc})"))
        else:
            xdp = run_xdp()
            result.update(xdp)
            rows.append(("XDP SAV (benchmarks/policy_xdp.py)", json.dumps(xdp)))
    else:
        rows.append(("XDP SAV (benchmarks/policy_xdp.py)", "skipped (no --xdp)"))

    w = max(len(r[0]) for r in rows)
    print(f"{'measure (CPU seconds of this process unless said)':<{w}}  value")
    print(f"{'-' * w}  -----")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
