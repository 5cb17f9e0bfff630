"""Counting what the kernel's blackhole routes drop, per ingress interface, with nf_tables.

Theory of operation
-------------------
An ``RTN_BLACKHOLE`` route (RTBH, :mod:`fib.kernel_provider`) drops silently: no counter of the
kernel says how much traffic a blackhole ate, nor where it came in. Packets the XDP fast path drops
are counted there (``dropped_blackhole``); this counts the kernel path: interfaces without XDP, or
whatever XDP handed to the kernel.

One table of our own, ``inet pop_router``: two address sets holding our blackhole prefixes
(``blackholes4``/``blackholes6``) and one prerouting rule per family,
``ip daddr @blackholes4 update @blackhole_drops { iifname }``, feeding a dynamic set with a counter
per ingress interface. Nothing is dropped or accepted here (policy accept): the route drops it after.
(nft's ``fib daddr type`` cannot say "blackhole": it reports the *address* type from the local table;
``fib daddr oif missing`` would count unroutable packets too.)

The address sets follow the FIB: :class:`BlackholeCounter` is a mirror provider
(:class:`~fib.dataplane.MirrorProvider`) fed the same operations as the kernel, with the kernel's
errors; a route operation to or from :data:`~fib.ops.BLACKHOLE_GID` changes the prefix set, and the
family's set is rewritten in one ``nft -f`` transaction (flush + add, overlaps collapsed: an interval
set refuses overlapping elements). RTBH sets are small and change rarely. A packet to a more specific
non-blackhole route inside a blackhole prefix would be counted too (RTBH entries are host routes in
practice).

Lifecycle: :meth:`BlackholeCounter.start` (daemon start, only when some customer has
``import.rtbh``) replaces the table atomically (a table left by a killed daemon is taken over, not
duplicated) and loads the blackholes already installed (adopted routes); :meth:`stop` deletes it.
Only this table is ever named: other tables (firewalls, other daemons) are never touched. Without
``nft`` the daemon logs it and goes on: RTBH still drops, the kernel-path drops are not counted.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from common.model import IPNetwork, as_ipaddress
from fib.ops import BLACKHOLE_GID, Op, Results, RouteDelete, RouteInstall, RouteReplace
from fib.table import FibView

log = logging.getLogger(__name__)

TABLE = "pop_router"
SET = "blackhole_drops"
_RULESET = f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
  set {SET} {{
    type ifname
    flags dynamic
    counter
    size 4096
  }}
  set blackholes4 {{
    type ipv4_addr
    flags interval
  }}
  set blackholes6 {{
    type ipv6_addr
    flags interval
  }}
  chain prerouting {{
    type filter hook prerouting priority -150; policy accept;
    ip daddr @blackholes4 update @{SET} {{ iifname }}
    ip6 daddr @blackholes6 update @{SET} {{ iifname }}
  }}
}}
"""


class BlackholeCounter:
    """The ``inet pop_router`` table in namespace ``netns`` (None: ours)."""

    def __init__(self, netns: str | None = None, nft: str | None = None) -> None:
        self.netns = netns
        self.nft = nft or shutil.which("nft")
        self.active = False
        self.prefixes: set[IPNetwork] = set()

    def _cmd(self, *args: str) -> list[str]:
        assert self.nft is not None
        cmd = [self.nft, *args]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def start(self, view: FibView | None = None) -> bool:
        """Create (or take over) our table with the blackholes ``view`` has installed; False, with the
        reason logged, if it cannot be."""
        if self.nft is None:
            log.warning("nft (nftables) is not installed: packets dropped by RTBH blackhole routes on the "
                        "kernel path are not counted (XDP drops still are); apt-get install nftables")
            return False
        p = subprocess.run(self._cmd("-f", "-"), input=_RULESET, capture_output=True, text=True, timeout=10)
        if p.returncode != 0:
            log.warning("cannot create the nftables table inet %s (%s): kernel-path RTBH drops are not counted",
                        TABLE, p.stderr.strip())
            return False
        self.active = True
        log.info("counting kernel-path RTBH drops per interface in nftables table inet %s", TABLE)
        if view is not None:
            self.prefixes = {p for p, gid in view.installed.items() if gid == BLACKHOLE_GID}
            self._write({4, 6})
        return True

    # --- the mirror provider ---------------------------------------------------------------------
    def apply(self, ops: Sequence[Op], kernel_errors: Mapping[int, int], view: FibView) -> Results:
        changed: set[int] = set()
        for i, op in enumerate(ops):
            if i in kernel_errors:
                continue
            k = type(op)
            if k is RouteInstall or k is RouteReplace:
                if op.gid == BLACKHOLE_GID:  # type: ignore[union-attr]
                    self.prefixes.add(op.prefix)  # type: ignore[union-attr]
                    changed.add(op.prefix.version)  # type: ignore[union-attr]
                elif k is RouteReplace and op.old_gid == BLACKHOLE_GID:  # type: ignore[union-attr]
                    self.prefixes.discard(op.prefix)  # type: ignore[union-attr]
                    changed.add(op.prefix.version)  # type: ignore[union-attr]
            elif k is RouteDelete and op.old_gid == BLACKHOLE_GID:  # type: ignore[union-attr]
                self.prefixes.discard(op.prefix)  # type: ignore[union-attr]
                changed.add(op.prefix.version)  # type: ignore[union-attr]
        if changed and self.active and not self._write(changed):
            return Results(ops, {i: errno.EIO for i, op in enumerate(ops)
                                 if type(op) in (RouteInstall, RouteReplace, RouteDelete) and i not in kernel_errors})
        return Results(ops)

    def touch(self, prefixes: Iterable[IPNetwork]) -> None:
        """Drift repair changes no blackhole by itself: the resubmitted route comes back as an operation."""

    def _write(self, versions: set[int]) -> bool:
        script = ""
        for v in sorted(versions):
            name = "blackholes4" if v == 4 else "blackholes6"
            nets = list(ipaddress.collapse_addresses(as_ipaddress(p) for p in self.prefixes if p.version == v))  # type: ignore[misc]
            script += f"flush set inet {TABLE} {name}\n"
            if nets:
                script += f"add element inet {TABLE} {name} {{ {', '.join(map(str, nets))} }}\n"
        p = subprocess.run(self._cmd("-f", "-"), input=script, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            log.error("updating the blackhole sets of nftables table inet %s failed: %s", TABLE, p.stderr.strip())
            return False
        return True

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        p = subprocess.run(self._cmd("delete", "table", "inet", TABLE), capture_output=True, text=True, timeout=10)
        if p.returncode != 0:
            log.warning("could not delete nftables table inet %s: %s", TABLE, p.stderr.strip())

    def read(self) -> dict[str, int]:
        """Packets dropped by blackhole routes, by ingress interface name (empty when not active)."""
        if not self.active:
            return {}
        p = subprocess.run(self._cmd("-j", "list", "set", "inet", TABLE, SET), capture_output=True, text=True,
                           timeout=10)
        if p.returncode != 0:
            return {}
        return parse_set_counters(p.stdout)


def parse_set_counters(text: str) -> dict[str, int]:
    """``nft -j list set`` output -> element -> packets."""
    out: dict[str, int] = {}
    for item in json.loads(text).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            e = elem.get("elem", elem) if isinstance(elem, dict) else None
            if isinstance(e, dict) and "val" in e:
                out[str(e["val"])] = int(e.get("counter", {}).get("packets", 0))
    return out
