"""The FIB's public face: one object the daemon holds, wiring the dataplane to its providers.

Theory of operation
-------------------
:class:`KernelFib` owns nothing but the wiring (FRR ``zebra_dplane.c`` in shape; DESIGN.md "Lanes"):

- :class:`~fib.table.FibTable` — what we believe the kernel holds, with reference counts;
- :class:`~fib.planner.Planner` — desired entries + table -> typed operations (:mod:`fib.ops`);
- :class:`~fib.dataplane.Dataplane` — the queue and single writer (routing lane) and the synchronous
  group rewrite (failover lane), results matched back to operations;
- providers: :class:`~fib.kernel_provider.KernelProvider` (netlink, the source of truth) and, when
  set as :attr:`KernelFib.mirror`, the XDP map writer (:class:`~fib.xdp.mirror.XdpMirror`), fed the
  same operations in the same order;
- :class:`~fib.monitor.FibMonitor` — drift repair, resync, link down/up.

Kernel objects, all tagged with ``protocol``: one nexthop object per (gateway, interface, labels),
one nexthop group per distinct (primary set, backup set); every route points at its group
(``RTA_NH_ID``). A dead neighbour is therefore :meth:`fail_gateways_now`: the few groups using it
get new members in one netlink message on the loop's own socket, and every route behind them moves
at once — the same time for one prefix or a million. The RIB then converges in the background and
the writer reconciles.

Ownership and restart: :meth:`adopt` reads our routes, groups and nexthops from the kernel; adopted
routes are stale until re-announced (a re-announced route whose group already has the right members
costs no kernel operation); :meth:`sweep_stale` removes the rest. ``nexthop_compat_mode`` is set to
0 in our namespace (:func:`set_compat_mode`): with 1 (the default) replacing a group's member makes
the kernel re-notify every route using it (1-4 s for 1M routes); with 0 it takes 0.1-0.3 ms.

Invariant (integration-tested against ``ip -json route``/``nexthop``): after each completed batch,
``installed`` maps every prefix of ours to the group the kernel route points at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from common.model import FibEntry, IPAddress, IPNetwork
from common.netns import netns as enter_netns
from fib.dataplane import Dataplane, FailedRoute, FailoverResult, Pace
from fib.kernel_provider import KernelProvider
from fib.monitor import FibMonitor
from fib.ops import GroupKey, NhKey, Results, SavOp, group_key
from fib.planner import Planner
from fib.table import FibTable, Group

log = logging.getLogger(__name__)

__all__ = ["FailedRoute", "FailoverResult", "Group", "KernelFib", "Pace", "set_compat_mode"]


def set_compat_mode(netns: str | None = None, value: int = 0) -> bool:
    """Set ``net.ipv4.nexthop_compat_mode`` in our namespace; False if the kernel has no such knob."""
    path = Path("/proc/sys/net/ipv4/nexthop_compat_mode")
    try:
        with enter_netns(netns):
            path.write_text(f"{value}\n")
        return True
    except OSError as exc:
        log.warning("cannot set nexthop_compat_mode=%d: %s", value, exc)
        return False


class KernelFib:
    def __init__(
        self,
        *,
        protocol: int,
        table: int = 254,
        metric: int = 20,
        batch_size: int = 10000,
        metrics: object | None = None,
        clock: Callable[[], float] = time.monotonic,
        netns: str | None = None,
        mpls_encap: bool = False,
        mpls_routing: bool = False,
        local_label_base: int | None = None,
        pace: Pace | None = None,
        writer_cpus: set[int] | None = None,
    ) -> None:
        self.netns = netns
        self.protocol = protocol
        self.table = table  # the kernel routing table id
        self.metric = metric
        self.metrics = metrics
        self.clock = clock
        self.fib_table = FibTable(protocol)
        self.kernel = KernelProvider(protocol=protocol, table=table, metric=metric, netns=netns,
                                     mpls_encap=mpls_encap, writer_cpus=writer_cpus)
        self.planner = Planner(self.fib_table, self.kernel.route_get, mpls_routing=mpls_routing,
                               local_label_base=local_label_base)
        self.dataplane = Dataplane(self.fib_table, self.planner, self.kernel,
                                   pace=pace or Pace(max_routes_per_send=batch_size), clock=clock,
                                   metrics=metrics)
        self.monitor = FibMonitor(self.dataplane, self.fib_table, self.kernel, route_table=table,
                                  metric=metric, metrics=metrics)
        self._mirror: object | None = None

    # --- configuration (set by the daemon after probing the kernel) ------------------------------
    @property
    def mpls_encap(self) -> bool:
        """The kernel imposes labels itself (probed: ``fib.capabilities.probe_mpls``)."""
        return self.kernel.mpls_encap

    @mpls_encap.setter
    def mpls_encap(self, value: bool) -> None:
        self.kernel.mpls_encap = value

    @property
    def mpls_routing(self) -> bool:
        """The kernel has AF_MPLS routes; with a label base, each unlabeled nexthop gets a local label."""
        return self.planner.mpls_routing

    @mpls_routing.setter
    def mpls_routing(self, value: bool) -> None:
        self.planner.mpls_routing = value

    @property
    def local_label_base(self) -> int | None:
        return self.planner.local_label_base

    @local_label_base.setter
    def local_label_base(self, value: int | None) -> None:
        self.planner.local_label_base = value

    @property
    def pace(self) -> Pace:
        """How the routing lane writes (routes per message, pause between messages, planning steps)."""
        return self.dataplane.pace

    @pace.setter
    def pace(self, value: Pace) -> None:
        self.dataplane.pace = value

    @property
    def batch_size(self) -> int:
        return self.dataplane.pace.max_routes_per_send

    @property
    def mirror(self):  # type: ignore[no-untyped-def]
        """Second provider fed by the same operations (the XDP map writer), or None."""
        return self._mirror

    @mirror.setter
    def mirror(self, value) -> None:  # type: ignore[no-untyped-def]
        self._mirror = value
        self.dataplane.mirrors = [value] if value is not None else []

    # --- input -----------------------------------------------------------------------------------
    def submit(self, prefix: IPNetwork, entry: FibEntry | None) -> None:
        self.dataplane.submit(prefix, entry)

    def submit_many(self, items: Iterable[tuple[IPNetwork, FibEntry | None]]) -> None:
        self.dataplane.submit_many(items)

    async def wait_idle(self) -> None:
        await self.dataplane.wait_idle()

    async def run(self) -> None:
        await self.dataplane.run()

    def start_monitor(self) -> None:
        """Follow route, nexthop and link notifications (drift repair, resync, link failover)."""
        self.monitor.start()

    async def resync(self) -> int:
        return await self.monitor.resync()

    def close(self) -> None:
        self.monitor.close()
        self.kernel.close()

    # --- adoption --------------------------------------------------------------------------------
    def adopt(self) -> int:
        """Take over our routes, groups and nexthops already in the kernel (after a restart)."""
        nhs, routes = self.kernel.dump()
        adopted = self.fib_table.adopt(nhs, routes, self.metric)
        self.dataplane.stale.update(adopted)
        self.dataplane._update_gauges()
        return len(self.dataplane.stale)

    def sweep_stale(self) -> int:
        return self.dataplane.sweep_stale()

    # --- the failover lane -------------------------------------------------------------------------
    def fail_gateways_now(self, gws: set[IPAddress], detected_at: float | None = None) -> FailoverResult:
        """Neighbours are dead (BFD Down, link down): rewrite every group using them in one netlink
        message, synchronously on the loop thread (kernel and XDP), before returning."""
        return self.dataplane.fail_gateways_now(set(gws), detected_at)

    def recover_gateways_now(self, gws: set[IPAddress]) -> FailoverResult:
        """Neighbours are back: their groups return to the primaries, in one message."""
        return self.dataplane.recover_gateways_now(set(gws))

    async def fail_gateway(self, gw: IPAddress, detected_at: float | None = None) -> int:
        """A neighbour is dead: move every group off it now. Returns groups rewritten."""
        return self.fail_gateways_now({gw}, detected_at).rewritten

    async def recover_gateway(self, gw: IPAddress) -> int:
        return self.recover_gateways_now({gw}).rewritten

    # --- policy ---------------------------------------------------------------------------------
    def apply_sav(self, ops: Sequence[SavOp]) -> Results:
        """Source address validation changes (per interface: on/off, allowed prefixes) to the XDP
        provider, at once; one result per operation (EOPNOTSUPP for all without XDP)."""
        return self.dataplane.apply_sav(ops)

    # --- views -----------------------------------------------------------------------------------
    @property
    def installed(self) -> dict[IPNetwork, int]:
        """prefix -> group id of every route of ours in the kernel."""
        return self.fib_table.installed

    @property
    def failed(self) -> dict[IPNetwork, FailedRoute]:
        return self.dataplane.failed

    @property
    def stale(self) -> set[IPNetwork]:
        return self.dataplane.stale

    @property
    def group_by_id(self) -> Mapping[int, Group]:
        return self.fib_table.group_by_id

    @property
    def groups(self) -> Mapping[GroupKey, Group]:
        return self.fib_table.groups

    @property
    def nh_key(self) -> Mapping[int, NhKey]:
        return self.fib_table.nh_key

    @property
    def nexthops(self) -> Mapping[NhKey, int]:
        return self.fib_table.nexthops

    @property
    def local_labels(self) -> Mapping[int, int]:
        return self.fib_table.local_labels

    @property
    def dead(self) -> set[IPAddress]:
        return self.fib_table.dead

    @property
    def route_counts(self) -> Mapping[int, int]:
        """Installed routes by IP version (4, 6)."""
        return self.fib_table.count

    @property
    def pending_count(self) -> int:
        """Prefixes submitted and not yet planned (the routing lane's backlog)."""
        return len(self.dataplane.pending)

    @property
    def _pending(self) -> Mapping[IPNetwork, FibEntry | None]:
        """Deprecated: the daemon read the backlog here; it now reads :attr:`pending_count`. Remove
        once no caller is left (`git grep 'fib._pending'`)."""
        return self.dataplane.pending

    @property
    def last_failover_ms(self) -> float | None:
        return self.dataplane.last_failover_ms

    @property
    def failover_errors(self) -> int:
        return self.dataplane.failover_errors

    @property
    def operations(self) -> int:
        return self.dataplane.operations

    @property
    def batches(self) -> int:
        return self.dataplane.batches

    @property
    def drift_repaired(self) -> dict[str, int]:
        return self.monitor.drift_repaired

    @property
    def down_links(self) -> set[int]:
        return self.monitor.down_links

    def gateways(self, gid: int) -> tuple[IPAddress, ...]:
        return self.fib_table.gateways(gid)

    def desired(self, prefix: IPNetwork) -> FibEntry | None:
        """What we installed for ``prefix``, rebuilt from its group's (primary, backup) key."""
        return self.fib_table.desired(prefix)

    def active_gateways(self, entry: FibEntry) -> list[IPAddress]:
        """The gateways the kernel should forward ``entry`` to now (primaries, or backups after a
        failover): what `fib diff` expects to find."""
        return [gw for gw, _labels in self.fib_table.active(group_key(entry))]

    def group_members(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        """(group id, members) of every group in the kernel: the XDP provider's view."""
        return self.fib_table.group_members()
