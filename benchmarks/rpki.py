"""RPKI origin validation cost: per path, and re-validating 1,000,000 paths after a 10,000-VRP change.

Theory of operation
-------------------
Synthetic but shaped like the real tables: VRP prefixes IPv4 /8-/24 (most /24, max length often
equal to the prefix length, some /16-24 ranges; the length mix of the public VRP set), IPv6
/19-/48, about 10 % of the table; paths are
a mix of routes inside VRP prefixes (right origin, wrong origin, too long) and routes outside any
(NotFound), so every branch of the validator is exercised. Paths are the integers a RIB keeps per
path (``afi, address, length, origin``); a separate line measures the ``ipaddress``-object entry
point a caller with :mod:`ipaddress` prefixes would use.

Random path order is the worst case for the index (a cache miss per bisect step on a 400k
table); the same paths in address order, as a RIB walking its prefix trie would pass them, are
measured too.

Reference in the same run: the usual alternative index, one hash table per distinct VRP prefix
length probed from the shortest length up (what a dict-based implementation does); both must give
identical answers.

The 10,000-VRP change withdraws 5,000 VRPs and announces 5,000 new ones on the 400,000-VRP table.
Timed: applying it to the :class:`~rpki.vrp.VrpTable` and rebuilding the index, computing the
affected ranges, re-validating all 1,000,000 paths, and re-validating only the paths inside the
affected ranges (what the RIB integration will do).

Times are CPU seconds of this process (``time.process_time``): on a shared 2-vCPU machine the
wall clock also counts other tenants; the wall-clock total is printed beside it.

Prints a table and a final ``RESULT {json}`` line (``validate_us_per_path``, ``revalidate_1m_s``).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rpki.model import WIDTH, Validity, Vrp
from rpki.vrp import Validator, VrpTable

# Prefix-length mix of the public VRP set (mostly /24 and /48; a handful of /8-/12 and /19-/29).
V4_LENS = [24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 8]
V4_WEIGHTS = [55, 8, 10, 6, 8, 5, 2, 2, 3, 0.3, 0.3, 0.2, 0.15, 0.05, 0.05, 0.02]
V6_LENS = [48, 44, 40, 36, 32, 29, 19]
V6_WEIGHTS = [50, 8, 6, 4, 25, 5, 2]


def make_vrps(n: int, rng: random.Random) -> list[Vrp]:
    out: set[Vrp] = set()
    while len(out) < n:
        if rng.random() < 0.9:
            plen = rng.choices(V4_LENS, V4_WEIGHTS)[0]
            addr = rng.getrandbits(32) & ~((1 << (32 - plen)) - 1)
            ml = plen if rng.random() < 0.7 else min(32, max(plen, 24))
            out.add(Vrp(4, addr, plen, ml, rng.randrange(1, 400_000)))
        else:
            plen = rng.choices(V6_LENS, V6_WEIGHTS)[0]
            addr = (0x2 << 124 | rng.getrandbits(124)) & ~((1 << (128 - plen)) - 1)
            ml = plen if rng.random() < 0.7 else 48
            out.add(Vrp(6, addr, plen, max(ml, plen), rng.randrange(1, 400_000)))
    return list(out)


def make_paths(n: int, vrps: list[Vrp], rng: random.Random) -> list[tuple[int, int, int, int]]:
    paths = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:  # inside a VRP prefix
            v = vrps[rng.randrange(len(vrps))]
            width = WIDTH[v.afi]
            plen = min(width, v.prefix_len + rng.choice([0, 0, 0, 1, 2, 8]))
            addr = (v.prefix | rng.getrandbits(width - v.prefix_len)) & ~((1 << (width - plen)) - 1)
            origin = v.asn if rng.random() < 0.8 else rng.randrange(1, 400_000)
            paths.append((v.afi, addr, plen, origin))
        elif r < 0.9:
            plen = rng.choice([24, 24, 24, 23, 22, 20, 16])
            paths.append((4, rng.getrandbits(32) & ~((1 << (32 - plen)) - 1), plen, rng.randrange(1, 400_000)))
        else:
            plen = rng.choice([48, 48, 32, 40])
            addr = (0x2 << 124 | rng.getrandbits(124)) & ~((1 << (128 - plen)) - 1)
            paths.append((6, addr, plen, rng.randrange(1, 400_000)))
    return paths


class PerLengthReference:
    """The alternative: one dict per distinct VRP length, probed for every length <= the route's."""

    def __init__(self, vrps: list[Vrp]) -> None:
        self.tables: dict[int, list[tuple[int, dict[int, list[tuple[int, int]]]]]] = {}
        by: dict[tuple[int, int], dict[int, list[tuple[int, int]]]] = {}
        for v in vrps:
            by.setdefault((v.afi, v.prefix_len), {}).setdefault(v.prefix, []).append((v.asn, v.max_len))
        for (afi, plen), d in sorted(by.items()):
            self.tables.setdefault(afi, []).append((plen, d))

    def validate_int(self, afi: int, addr: int, plen: int, origin: int | None) -> Validity:
        width = WIDTH[afi]
        covered = False
        for vlen, d in self.tables.get(afi, ()):
            if vlen > plen:
                break
            entries = d.get(addr >> (width - vlen) << (width - vlen))
            if entries:
                covered = True
                for asn, ml in entries:
                    if asn == origin and asn != 0 and plen <= ml:
                        return Validity.VALID
        return Validity.INVALID if covered else Validity.NOT_FOUND


WALL: dict[str, float] = {}  # wall-clock seconds per measure, shown beside the CPU time


def timed(fn, *args, label: str = ""):  # type: ignore[no-untyped-def]
    """CPU seconds of this process (the cost, robust on a shared machine); wall time kept in WALL."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    WALL[label or fn.__name__] = wall
    return out, cpu


def run_all(idx, paths):  # type: ignore[no-untyped-def]
    f = idx.validate_int
    return [f(a, p, ln, o) for a, p, ln, o in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 paths (CI smoke run)")
    args = ap.parse_args()
    n_paths = 100_000 if args.quick else args.paths
    rng = random.Random(8210)
    rows: list[tuple[str, str]] = []
    result: dict[str, float] = {}

    for n_vrps in (10_000, 400_000):
        vrps = make_vrps(n_vrps, rng)
        paths = make_paths(n_paths, vrps, rng)
        idx, t_build = timed(Validator, vrps)
        states, t_val = timed(run_all, idx, paths)
        ref = PerLengthReference(vrps)
        ref_states, t_ref = timed(run_all, ref, paths)
        assert states == ref_states, "validator and reference disagree"
        counts = {s.value: states.count(s) for s in Validity}
        in_order = sorted(paths)  # what a RIB walking its prefix trie hands over
        _, t_sorted = timed(idx.validate_many, in_order)
        rows += [
            (f"{n_vrps:,} VRPs: index build", f"{t_build:.3f} s"),
            (f"{n_vrps:,} VRPs: validate {n_paths:,} paths", f"{t_val:.3f} s  ({t_val / n_paths * 1e6:.2f} us/path)"),
            (f"{n_vrps:,} VRPs: validate_many, paths in address order",
             f"{t_sorted:.3f} s  ({t_sorted / n_paths * 1e6:.2f} us/path)"),
            (f"{n_vrps:,} VRPs: reference (dict per length)",
             f"{t_ref:.3f} s  ({t_ref / n_paths * 1e6:.2f} us/path, x{t_ref / t_val:.1f})"),
            (f"{n_vrps:,} VRPs: states", json.dumps(counts)),
        ]
        result[f"validate_us_per_path_{n_vrps // 1000}k"] = round(t_val / n_paths * 1e6, 3)

    # ipaddress entry point, on the last table
    import ipaddress
    nets = [(ipaddress.ip_network((a, ln)) if af == 4 else ipaddress.IPv6Network((a, ln)), o)
            for af, a, ln, o in paths[:100_000]]
    _, t_obj = timed(lambda: [idx.validate(p, o) for p, o in nets])
    rows.append(("validate(ipaddress prefix, origin), 100,000", f"{t_obj:.3f} s  ({t_obj / len(nets) * 1e6:.2f} us/path)"))

    # a 10,000-VRP change on the 400,000-VRP table
    table = VrpTable()
    table.add_cache("c", 1)
    table.set_up("c", True)
    table.apply("c", vrps, [])
    old_idx = table.validator()
    withdrawn = rng.sample(vrps, 5_000)
    announced = [v for v in make_vrps(5_000, rng) if v not in table.effective][:5_000]
    change, t_apply = timed(table.apply, "c", announced, withdrawn, label="apply")
    new_idx, t_rebuild = timed(table.validator, label="validator")
    rng_aff, t_aff = timed(change.affected)
    new_states, t_full = timed(new_idx.validate_many, paths, label="full")

    def scoped():  # type: ignore[no-untyped-def]
        contains = rng_aff.contains
        inside = [i for i, (a, p, ln, _o) in enumerate(paths) if contains(a, p, ln)]
        return list(zip(inside, new_idx.validate_many([paths[i] for i in inside]), strict=True))

    touched, t_scoped = timed(scoped)
    old_states = run_all(old_idx, paths)
    changed = sum(1 for a, b in zip(old_states, new_states, strict=True) if a != b)
    assert all(new_states[i] == s for i, s in touched)
    inside = {i for i, _ in touched}
    assert all(i in inside for i, (a, b) in enumerate(zip(old_states, new_states, strict=True)) if a != b)
    revalidate = t_apply + t_rebuild + t_full
    rows += [
        ("10,000-VRP change: apply to table", f"{t_apply:.3f} s"),
        ("10,000-VRP change: rebuild index (400k)", f"{t_rebuild:.3f} s"),
        ("10,000-VRP change: affected ranges", f"{t_aff:.3f} s  ({len(rng_aff):,} ranges)"),
        (f"re-validate all {n_paths:,} paths", f"{t_full:.3f} s  ({changed:,} changed state)"),
        ("re-validate only paths in affected ranges", f"{t_scoped:.3f} s  ({len(touched):,} paths checked)"),
        (f"total: change -> all {n_paths:,} re-validated", f"{revalidate:.3f} s CPU"),
        ("wall clock for the same (shared machine)", f"{WALL['apply'] + WALL['validator'] + WALL['full']:.3f} s"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'measure (CPU seconds of this process)':<{w}}  value")
    print(f"{'-' * w}  -----")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    result.update({
        "validate_us_per_path": result["validate_us_per_path_400k"],
        "revalidate_1m_s": round(revalidate * 1_000_000 / n_paths, 3),
        "revalidate_scoped_s": round(t_apply + t_rebuild + t_aff + t_scoped, 3),
        "paths": n_paths,
    })
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
