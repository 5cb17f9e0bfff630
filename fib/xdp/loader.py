"""Loading the XDP program and writing its maps, through libbpf (``libbpf.so.1``) via ctypes.

Why ctypes and not a binding: Debian ships libbpf 1.1 as a C library; the Python bindings on PyPI
(e.g. ``libbpf`` wheels) lag it or vendor their own copy. The few calls we need (open, load, find
maps, attach/detach XDP, map update/lookup/delete) are stable libbpf ABI. Pointer returns are
declared ``c_void_p`` (ctypes would truncate them to 32 bits).

Namespaces: an XDP attach and a DEVMAP entry resolve interface indexes in the network namespace of
the *calling thread*, so every call that names an interface runs inside :func:`common.netns.netns`.

Pinning (restart without losing the fast path): with ``pin_dir`` the forwarding maps and the
counters are pinned there (a bpffs, mounted by :func:`ensure_bpffs` if needed). An attached XDP
program stays attached when its process dies, and it holds its maps, so traffic keeps being
forwarded by XDP while the daemon is down. The next start reuses the pinned maps (libbpf's
``bpf_map__set_pin_path`` before load; :attr:`XdpProgram.reused` says so), so the new program starts
with the complete tables, replaces the old one on the interface in one atomic attach, and the mirror
reads the maps back instead of rewriting them. Pinned maps whose layout no longer matches the
program (an upgrade) are unpinned and created afresh, with a warning.

Policy maps (issue 10): a blackhole route is a trie entry with value :data:`BLACKHOLE_GROUP`; source
address validation has its own maps (``sav4``/``sav6`` allowed prefixes keyed by ifindex + address,
``sav_on`` the interfaces that check), pinned like the forwarding maps so a restart keeps filtering.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.libbpf import libbpf
from common.netns import netns as enter_netns

ROOT = Path(__file__).resolve().parents[2]
#: `make` builds it in the checkout; an installed copy (the container image) names it in the environment.
OBJECT = Path(os.environ.get("POP_ROUTER_XDP_OBJECT", ROOT / "build" / "pop_xdp.o"))
SOURCE = Path(__file__).with_name("pop_xdp.c")

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MAX_MEMBERS = 8
MAX_LABELS = 3
NH_VALID = 1
IF_SLOTS = 1024  # counter rows: ingress ifindex mod IF_SLOTS (pop_xdp.c)
#: tx_ports (the DEVMAP) is not among them: see pop_xdp.c; it is refilled from the nexthops.
PINNED_MAPS = ("lpm4", "lpm6", "groups", "nexthops", "stats", "sav4", "sav6", "sav_on")
#: Every map of pop_xdp.c (benchmarks/xdp_gen.c reuses them to drive the same tables).
MAPS = ("lpm4", "lpm6", "groups", "nexthops", "tx_ports", "stats", "sav4", "sav6", "sav_on")
BPF_FS_MAGIC = 0xCAFE4A11
STATS = ("forwarded", "mpls_pushed", "passed_no_route", "passed_ttl", "passed_options", "passed_fragment",
         "passed_not_ip", "passed_neighbour", "passed_no_group", "dropped_malformed", "dropped_redirect",
         "passed_local", "dropped_blackhole", "dropped_spoofed")
LOCAL_GROUP = 0  # trie value of the router's own addresses: hand to the kernel
BLACKHOLE_GROUP = 0xFFFFFFFF  # trie value of a blackhole entry (RTBH): drop (fib.ops.BLACKHOLE_GID)

LPM4_KEY = struct.Struct("=I4s")
LPM6_KEY = struct.Struct("=I16s")
GROUP = struct.Struct("=I8I")
NEXTHOP = struct.Struct("=I6s6sHH3I")
U32 = struct.Struct("=I")
#: Source address validation keys (struct sav4_key / sav6_key): prefixlen counts the ifindex's 32 bits.
SAV4_KEY = struct.Struct("=II4s")
SAV6_KEY = struct.Struct("=II16s")


class XdpError(OSError):
    pass


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def is_bpffs(path: Path) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    st = _Statfs()
    if libc.statfs(str(path).encode(), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_bpffs(mountpoint: Path) -> bool:
    """Mount a bpffs at ``mountpoint`` unless one is there; True if we mounted it. (Not mounted at
    /sys/fs/bpf on these machines; ``mount -t bpf bpf DIR`` done with the syscall.)"""
    if is_bpffs(mountpoint):
        return False
    mountpoint.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(mountpoint).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise XdpError(err, f"cannot mount a bpffs at {mountpoint}: {os.strerror(err)}")
    return True


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc < -1 else ctypes.get_errno()
        raise XdpError(err, f"{what}: {os.strerror(err)}")
    return rc


@dataclass(frozen=True, slots=True)
class Nexthop:
    ifindex: int
    smac: bytes
    dmac: bytes
    valid: bool = True
    labels: tuple[int, ...] = ()


def group_entry(group: int, members: list[int] | tuple[int, ...]) -> tuple[bytes, bytes]:
    """(key, value) of the ``groups`` map for ``group`` (struct group in pop_xdp.c)."""
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise ValueError(f"a group has 1..{MAX_MEMBERS} members")
    return U32.pack(group), GROUP.pack(len(members), *(list(members) + [0] * (MAX_MEMBERS - len(members))))


class XdpProgram:
    """One loaded copy of the program and its maps."""

    def __init__(self, obj_path: Path = OBJECT, pin_dir: Path | None = None) -> None:
        if not obj_path.exists():
            raise XdpError(2, f"{obj_path} not built (make builds it from {SOURCE} with clang)")
        self.lib = libbpf()
        self.obj_path = obj_path
        self.pin_dir = pin_dir
        #: The forwarding maps were pinned by an earlier run and are reused with their content.
        self.reused = False
        try:
            self._load(obj_path)
        except XdpError as exc:
            if pin_dir is None or not any((pin_dir / m).exists() for m in PINNED_MAPS):
                raise
            import logging

            logging.getLogger(__name__).warning(
                "pinned XDP maps in %s do not fit this program (%s): starting with fresh maps", pin_dir, exc)
            for m in PINNED_MAPS:
                (pin_dir / m).unlink(missing_ok=True)
            self._load(obj_path)
        self.count_rows: set[int] = set()
    def _load(self, obj_path: Path) -> None:
        self.obj = self.lib.bpf_object__open_file(str(obj_path).encode(), None)
        if not self.obj:
            raise XdpError(ctypes.get_errno(), f"cannot open {obj_path}")
        if self.pin_dir is not None:
            self.pin_dir.mkdir(parents=True, exist_ok=True)
            self.reused = all((self.pin_dir / m).exists() for m in PINNED_MAPS)
            for m in PINNED_MAPS:
                mp = self.lib.bpf_object__find_map_by_name(self.obj, m.encode())
                _check(self.lib.bpf_map__set_pin_path(mp, str(self.pin_dir / m).encode()), f"pin path of {m}")
        rc = self.lib.bpf_object__load(self.obj)
        if rc < 0:
            self.lib.bpf_object__close(self.obj)
            self.obj = None
            _check(rc, "loading the XDP program")
        self.fds = {name: _check(self.lib.bpf_object__find_map_fd_by_name(self.obj, name.encode()), name)
                    for name in MAPS}
        self.prog_fd = self._prog("pop_xdp")
        self.pass_fd = self._prog("xdp_pass")
        self.attached: list[tuple[str | None, int, int]] = []

    def program_info(self) -> dict:
        """The forwarding program as the kernel knows it (id and tag, as `bpftool prog` shows them)."""
        info: dict = {"object": str(self.obj_path), "name": "pop_xdp"}
        try:
            for line in Path(f"/proc/self/fdinfo/{self.prog_fd}").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("prog_id", "prog_tag"):
                    info[key[5:]] = int(value) if key == "prog_id" else value.strip()
        except OSError:
            pass
        return info

    def _prog(self, name: str) -> int:
        p = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
        if not p:
            raise XdpError(2, f"program {name} not found")
        return _check(self.lib.bpf_program__fd(p), name)

    # --- attach ----------------------------------------------------------------------------------
    def attach(self, ifname: str, netns: str | None = None, *, pass_only: bool = False, fd: int | None = None) -> str:
        """Attach natively, falling back to generic (skb) mode with a warning; returns the mode."""
        fd = fd if fd is not None else (self.pass_fd if pass_only else self.prog_fd)
        with enter_netns(netns):
            ifindex = socket_ifindex(ifname)
            try:
                _check(self.lib.bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, None), f"attach to {ifname}")
                mode = "native"
            except XdpError:
                _check(self.lib.bpf_xdp_attach(ifindex, fd, XDP_FLAGS_SKB_MODE, None), f"attach to {ifname}")
                mode = "generic"
        self.attached.append((netns, ifindex, XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE))
        if not pass_only:
            self.count_rows.add(ifindex)
        return mode

    def close(self, *, detach: bool = True) -> None:
        """Release our handles. ``detach=False`` leaves the program attached (it keeps its maps,
        pinned or not), so the fast path forwards on while the daemon restarts."""
        if detach:
            for netns, ifindex, flags in self.attached:
                with enter_netns(netns):
                    self.lib.bpf_xdp_detach(ifindex, flags, None)
        self.attached.clear()
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None

    # --- maps --------------------------------------------------------------------------------------
    def _update(self, m: str, key: bytes, value: bytes) -> None:
        kb, vb = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        _check(self.lib.bpf_map_update_elem(self.fds[m], kb, vb, 0), f"update {m}")

    def _delete(self, m: str, key: bytes) -> None:
        kb = ctypes.create_string_buffer(key, len(key))
        self.lib.bpf_map_delete_elem(self.fds[m], kb)

    def set_route(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, group: int) -> None:
        if prefix.version == 4:
            self._update("lpm4", LPM4_KEY.pack(prefix.prefixlen, prefix.network_address.packed), U32.pack(group))
        else:
            self._update("lpm6", LPM6_KEY.pack(prefix.prefixlen, prefix.network_address.packed), U32.pack(group))

    def del_route(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        if prefix.version == 4:
            self._delete("lpm4", LPM4_KEY.pack(prefix.prefixlen, prefix.network_address.packed))
        else:
            self._delete("lpm6", LPM6_KEY.pack(prefix.prefixlen, prefix.network_address.packed))

    def set_routes(self, routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]]) -> None:
        """Many routes in one ``bpf_map_update_batch`` call per family and chunk (a full table fills
        several times faster than one syscall per prefix; see benchmarks/xdp.py)."""
        for version, m, st in ((4, "lpm4", LPM4_KEY), (6, "lpm6", LPM6_KEY)):
            items = [(st.pack(p.prefixlen, p.network_address.packed), U32.pack(g)) for p, g in routes
                     if p.version == version]
            for i in range(0, len(items), 65536):
                chunk = items[i: i + 65536]
                keys = b"".join(k for k, _ in chunk)
                vals = b"".join(v for _, v in chunk)
                n = ctypes.c_uint32(len(chunk))
                kb, vb = ctypes.create_string_buffer(keys, len(keys)), ctypes.create_string_buffer(vals, len(vals))
                _check(self.lib.bpf_map_update_batch(self.fds[m], kb, vb, ctypes.byref(n), None), f"batch update {m}")

    # --- source address validation (pop_xdp.c sav4/sav6/sav_on) ------------------------------------
    @staticmethod
    def _sav_key(ifindex: int, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, bytes]:
        st, m = (SAV4_KEY, "sav4") if prefix.version == 4 else (SAV6_KEY, "sav6")
        return m, st.pack(32 + prefix.prefixlen, ifindex, prefix.network_address.packed)

    def sav_allow(self, ifindex: int, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        """Sources in ``prefix`` are allowed on ``ifindex``."""
        m, key = self._sav_key(ifindex, prefix)
        self._update(m, key, U32.pack(1))

    def sav_revoke(self, ifindex: int, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        m, key = self._sav_key(ifindex, prefix)
        self._delete(m, key)

    def sav_enable(self, ifindex: int, on: bool) -> None:
        """Turn the check on or off for ``ifindex`` (its slot holds the ifindex while on: a packet of
        another interface sharing the slot is never checked against this one's set)."""
        slot = U32.pack(ifindex & (IF_SLOTS - 1))
        if not on:
            cur = self._lookup("sav_on", slot, 4)
            if cur is not None and U32.unpack(cur)[0] != ifindex:
                return  # the slot belongs to another interface
        self._update("sav_on", slot, U32.pack(ifindex if on else 0))

    def sav_slot_owner(self, ifindex: int) -> int:
        """The interface whose SAV is on in ``ifindex``'s slot (0: none)."""
        cur = self._lookup("sav_on", U32.pack(ifindex & (IF_SLOTS - 1)), 4)
        return U32.unpack(cur)[0] if cur is not None else 0

    def read_sav(self) -> tuple[set[int], dict[int, set[ipaddress.IPv4Network | ipaddress.IPv6Network]]]:
        """(interfaces with SAV on, allowed prefixes by interface) as the maps hold them (pinned maps
        reused after a restart)."""
        on = {U32.unpack(v)[0] for _k, v in self._items("sav_on", 4, 4)} - {0}
        allowed: dict[int, set[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
        for m, st in (("sav4", SAV4_KEY), ("sav6", SAV6_KEY)):
            for k, _v in self._items(m, st.size, 4):
                plen, ifindex, addr = st.unpack(k)
                allowed.setdefault(ifindex, set()).add(ipaddress.ip_network((int.from_bytes(addr, "big"), plen - 32)))
        return on, allowed

    def _lookup(self, m: str, key: bytes, vsize: int) -> bytes | None:
        kb, vb = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(vsize)
        return vb.raw if self.lib.bpf_map_lookup_elem(self.fds[m], kb, vb) == 0 else None

    def set_group(self, group: int, members: list[int]) -> None:
        """One map write moves every prefix of the group (the XDP half of prefix-independent failover)."""
        self._update("groups", *group_entry(group, members))

    def pinned_map(self, name: str) -> Path | None:
        """Where map ``name`` is pinned (another process opens it there: BFD local repair), if it is."""
        return self.pin_dir / name if self.pin_dir is not None and name in PINNED_MAPS else None

    def set_nexthop(self, nh: int, hop: Nexthop, netns: str | None = None) -> None:
        if len(hop.labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        labels = list(hop.labels) + [0] * (MAX_LABELS - len(hop.labels))
        self._update("nexthops", U32.pack(nh), NEXTHOP.pack(hop.ifindex, hop.smac, hop.dmac,
                                                              NH_VALID if hop.valid else 0, len(hop.labels), *labels))
        self.set_tx_port(hop.ifindex, netns)

    def set_tx_port(self, ifindex: int, netns: str | None = None) -> None:
        with enter_netns(netns):  # DEVMAP entries resolve in the writer thread's namespace
            self._update("tx_ports", U32.pack(ifindex), U32.pack(ifindex))

    def _items(self, m: str, ksize: int, vsize: int) -> list[tuple[bytes, bytes]]:
        fd = self.fds[m]
        out = []
        key = None
        nxt = ctypes.create_string_buffer(ksize)
        val = ctypes.create_string_buffer(vsize)
        while self.lib.bpf_map_get_next_key(fd, key, nxt) == 0:
            k = nxt.raw
            if self.lib.bpf_map_lookup_elem(fd, nxt, val) == 0:
                out.append((k, val.raw))
            key = ctypes.create_string_buffer(k, ksize)
        return out

    def dump(self) -> dict:
        """The maps as the program sees them: {prefix: group id}, groups, nexthops (ifindex, valid,
        labels)."""
        nexthops = {nid: (h.ifindex, h.valid, h.labels) for nid, h in self.read_nexthops().items()}
        return {"routes": self.read_routes(), "groups": self.read_groups(), "nexthops": nexthops}

    def read_routes(self) -> dict:
        routes = {}
        for m, st in (("lpm4", LPM4_KEY), ("lpm6", LPM6_KEY)):
            for k, v in self._items(m, st.size, 4):
                plen, addr = st.unpack(k)
                routes[ipaddress.ip_network((int.from_bytes(addr, "big"), plen))] = U32.unpack(v)[0]
        return routes

    def read_groups(self) -> dict[int, tuple[int, ...]]:
        groups = {}
        for k, v in self._items("groups", 4, GROUP.size):
            n, *members = GROUP.unpack(v)
            groups[U32.unpack(k)[0]] = tuple(members[:n])
        return groups

    def read_nexthops(self) -> dict[int, Nexthop]:
        out = {}
        for k, v in self._items("nexthops", 4, NEXTHOP.size):
            ifindex, smac, dmac, flags, nl, *labels = NEXTHOP.unpack(v)
            out[U32.unpack(k)[0]] = Nexthop(ifindex, smac, dmac, bool(flags & NH_VALID), tuple(labels[:nl]))
        return out

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters of one ingress interface, or summed over every interface we attached to."""
        if ifindex is not None:
            return _counter_row(self.lib, self.fds["stats"], ifindex)
        return sum_counters(self.stats_by_interface().values())

    def stats_by_interface(self) -> dict[int, dict[str, int]]:
        return {i: _counter_row(self.lib, self.fds["stats"], i) for i in sorted(self.count_rows)}

    def shared_counter_rows(self) -> list[tuple[int, int]]:
        """Pairs of attached interfaces whose counters land in the same row (ifindex mod IF_SLOTS)."""
        rows = sorted(self.count_rows)
        return [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:] if a % IF_SLOTS == b % IF_SLOTS]


def _counter_row(lib: ctypes.CDLL, stats_fd: int, ifindex: int) -> dict[str, int]:
    """One ingress interface's row of the per-CPU stats array, summed over CPUs."""
    ncpu = lib.libbpf_num_possible_cpus()
    base = (ifindex & (IF_SLOTS - 1)) * len(STATS)
    out = {}
    vb = ctypes.create_string_buffer(8 * ncpu)
    for i, name in enumerate(STATS):
        kb = ctypes.create_string_buffer(U32.pack(base + i), 4)
        if lib.bpf_map_lookup_elem(stats_fd, kb, vb) == 0:
            out[name] = sum(struct.unpack(f"={ncpu}Q", vb.raw))
    return out


def sum_counters(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(STATS, 0)
    for row in rows:
        for name, n in row.items():
            out[name] += n
    return out


def read_pinned_counters(pin_dir: Path, ifindex: int) -> dict[str, int]:
    """One interface's counters from the pinned stats map, without loading anything: what the fast
    path did while no daemon was running."""
    lib = libbpf()
    fd = _check(lib.bpf_obj_get(str(pin_dir / "stats").encode()), f"open {pin_dir / 'stats'}")
    try:
        return _counter_row(lib, fd, ifindex)
    finally:
        os.close(fd)


def socket_ifindex(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)
