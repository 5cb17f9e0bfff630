"""Run a containerlab topology on network namespaces: ``pop-router lab up|down|exec|status``.

Theory of operation
-------------------
A node is what a container would be, minus the image: a network namespace plus a private mount
namespace. For each node ``up``:

1. creates the namespace ``<prefix><node>``, brings ``lo`` up, turns IPv4 and IPv6 forwarding on and
   IPv6 DAD off, then applies the node's ``sysctls`` (which may override those). Forwarding is on
   because that is how a container's namespace behaves on a Docker host (Docker enables forwarding,
   and containerlab's own examples, e.g. three FRR routers with hosts behind them, route between
   their hosts without setting it), while a fresh namespace here starts with it off; DAD is off so
   addresses are usable at once, as containerlab's nodes usually are;
2. creates every link as a veth pair with containerlab's interface names, directly in the two
   namespaces, with TX checksum offload off on both ends as containerlab does (``ethtool -K IF tx
   off`` on each veth it creates): with it on, a TCP/UDP packet a node sends leaves with its
   checksum still to be filled in, which the kernel's forwarding path carries along as metadata but
   an XDP redirect (the PoP's fast path) loses, so the far end would drop it as corrupt;
3. starts a *holder* process: ``nsenter --net`` into the namespace, ``unshare --mount`` with
   private propagation, then mounts a tmpfs on ``/run`` (so ``/run/frr``, ``/run/bird`` and
   ``/run/pop-router`` are per node) and a bpffs of its own on ``/sys/fs/bpf`` (pinned XDP maps
   live as long as the node), and bind-mounts the node's ``binds`` over their targets — only
   inside that mount namespace, so the machine's own ``/etc/frr`` is untouched. The holder then
   sleeps; every process of the node is started with ``nsenter -t HOLDER -m -n`` and so sees the
   node's files;
4. starts the node's role, chosen from its image the way containerlab would run it: FRR
   (``frrinit.sh start`` with the bound ``daemons``/``frr.conf``), BIRD (``bird -c`` the bound
   config), pop-router (``pop-router run -c`` the bound ``pop.yaml``), Prometheus (the
   ``prom/prometheus`` image's command with the bound ``prometheus.yml``), a node ``cmd`` (run as the
   container command), or a plain host;
5. runs the node's ``exec`` commands in order (before the role for everything but FRR, whose own
   configuration sets its addresses and whose exec lines usually need it running); a failing one
   fails ``up``.

``down`` needs no state: it finds the lab's namespaces by their prefix, stops every process inside
them by PID (SIGTERM, then SIGKILL after a grace period), and deletes the namespaces. It therefore
works after a crash, and two labs (different prefixes) never touch each other. Logs and PIDs live
in ``/run/pop-router-labs/<prefix>``.

Caveat: a bind target that does not exist on this machine is created (an empty file or directory),
because a bind mount needs a mount point.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.netns import netns
from labs.topology import Link, Node, Topology, TopologyError, load_topology

STATE_ROOT = Path("/run/pop-router-labs")
#: What every node's namespace starts with, before its own ``sysctls`` (see the module docstring).
CONTAINER_SYSCTLS = {
    "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.default.forwarding": "1",
    "net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
}


class LabError(RuntimeError):
    pass


def _run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if check and p.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p


def _venv_path() -> str:
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"


class Lab:
    def __init__(self, topo: Topology, prefix: str | None = None) -> None:
        self.topo = topo
        self.prefix = prefix if prefix is not None else topo.ns_prefix()
        self.state = STATE_ROOT / self.prefix.rstrip("-")

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def holder_pid(self, node: str) -> int:
        f = self.state / f"{node}.holder"
        if not f.exists():
            raise LabError(f"node {node!r} of lab {self.topo.name!r} is not running (no {f})")
        return int(f.read_text())

    def enter(self, node: str) -> list[str]:
        """Argv prefix that runs a command inside the node (network and mount namespaces)."""
        return ["nsenter", "-t", str(self.holder_pid(node)), "-m", "-n", "--"]

    def node_env(self, node: Node) -> dict[str, str]:
        return {**os.environ, "PATH": _venv_path(), **node.env}

    # --- up --------------------------------------------------------------------------------------------
    def up(self, log: object = print) -> None:
        existing = self.namespaces()
        if existing:
            raise LabError(f"lab already up (namespaces {', '.join(existing)}); run `pop-router lab down` first")
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.topo.nodes.values():
                self._create_ns(node)
            for link in self.topo.links:
                self._create_link(link)
            for node in self.topo.nodes.values():
                self._start_holder(node)
            for node in self.topo.nodes.values():
                # FRR configures its own addresses and its exec lines usually talk to it (vtysh): start
                # it first, as containerlab does. Other daemons bind to addresses that exec lines
                # create (BIRD's BFD sockets fail otherwise), so those lines run before them.
                if node.role == "frr":
                    self._start_role(node)
                    self._exec(node)
                else:
                    self._exec(node)
                    self._start_role(node)
                log(f"  {node.name:<10} {node.role:<10} ns {self.ns(node.name)}")  # type: ignore[operator]
        except BaseException:
            self.down()
            raise

    def _exec(self, node: Node) -> None:
        for cmd in node.exec:
            p = _run([*self.enter(node.name), "sh", "-c", cmd], check=False, env=self.node_env(node))
            if p.returncode != 0:
                raise LabError(f"{node.name}: exec {cmd!r} failed: {(p.stderr or p.stdout).strip()}")

    def _create_ns(self, node: Node) -> None:
        ns = self.ns(node.name)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        sysctls = {**CONTAINER_SYSCTLS, **node.sysctls}
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in sysctls.items())])

    def _create_link(self, link: Link) -> None:
        a, b = link.a, link.b
        _run(["ip", "link", "add", a.interface, "netns", self.ns(a.node), "type", "veth",
              "peer", "name", b.interface, "netns", self.ns(b.node)])
        for ep in (a, b):
            if ep.mac:
                _run(["ip", "-n", self.ns(ep.node), "link", "set", ep.interface, "address", ep.mac])
            if link.mtu:
                mtu = str(link.mtu)
                _run(["ip", "-n", self.ns(ep.node), "link", "set", ep.interface, "mtu", mtu])
            _run(["ip", "-n", self.ns(ep.node), "link", "set", ep.interface, "up"])
            tx_checksum_off(self.ns(ep.node), ep.interface)

    def _start_holder(self, node: Node) -> None:
        # A node's own /run, and its own bpffs (as a container has): XDP maps a node pins never land
        # in the machine's /sys/fs/bpf, and they live as long as the node, across daemon restarts.
        script = ["set -e", "mount -t tmpfs -o mode=755 tmpfs /run",
                  "mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true"]
        if node.role == "frr":
            script += ["mkdir -p /run/frr", "chown frr:frr /run/frr"]
        for d in ("bird", "pop-router", "exabgp", "prometheus"):
            script.append(f"mkdir -p /run/{d}")
        for b in node.binds:
            # A bind needs a mount point: an empty one is created if missing (on the machine, unless
            # it is under the node's private /run).
            t = shlex.quote(b.target)
            if b.source.is_dir():
                script.append(f"mkdir -p {t}")
            else:
                script.append(f"mkdir -p {shlex.quote(str(Path(b.target).parent))}; [ -e {t} ] || touch {t}")
            script.append(f"mount --bind {shlex.quote(str(b.source))} {shlex.quote(b.target)}")
            if b.read_only:
                script.append(f"mount -o remount,bind,ro {shlex.quote(b.target)}")
        script += ["echo ready", "exec sleep infinity"]
        logf = open(self.state / f"{node.name}.holder.log", "w")
        p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns(node.name)}", "--", "unshare", "--mount", "--propagation",
             "private", "--", "sh", "-c", "\n".join(script)],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True, text=True,
        )
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            raise LabError(f"{node.name}: node setup failed: {(self.state / f'{node.name}.holder.log').read_text()}")
        p.stdout.close()
        (self.state / f"{node.name}.holder").write_text(str(p.pid))

    def _background(self, node: Node, argv: list[str], tag: str) -> int:
        logf = open(self.state / f"{node.name}.{tag}.log", "w")
        p = subprocess.Popen([*self.enter(node.name), *argv], stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=self.node_env(node))
        (self.state / f"{node.name}.{tag}.pid").write_text(str(p.pid))
        return p.pid

    def _start_role(self, node: Node) -> None:
        role = node.role
        if role == "frr":
            _run([*self.enter(node.name), "/usr/lib/frr/frrinit.sh", "start"], env=self.node_env(node))
        elif role == "bird":
            b = node.bind_for(".conf")
            conf = b.target if b else "/etc/bird/bird.conf"
            _run([*self.enter(node.name), "bird", "-c", conf, "-s", "/run/bird/bird.ctl", "-P", "/run/bird/bird.pid"])
        elif role == "pop-router":
            b = node.bind_for(".yaml", ".yml")
            conf = b.target if b else "/etc/pop-router/pop.yaml"
            self._background(node, [sys.executable, "-m", "routing.cli", "run", "-c", conf], "pop-router")
        elif role == "prometheus":
            # The prom/prometheus image's own command line, with its data on the node's /run.
            b = node.bind_for("prometheus.yml")
            conf = b.target if b else "/etc/prometheus/prometheus.yml"
            self._background(node, ["prometheus", f"--config.file={conf}", "--storage.tsdb.path=/run/prometheus",
                                    "--web.listen-address=0.0.0.0:9090"], "prometheus")
        elif role == "cmd":
            self._background(node, ["sh", "-c", f"exec {node.cmd}"], "cmd")

    # --- down / status ---------------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        p = _run(["ip", "netns", "list"], check=False)
        names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
        return sorted(n for n in names if n.startswith(self.prefix) and n[len(self.prefix):] in self.topo.nodes)

    def pids(self, ns: str) -> list[int]:
        p = _run(["ip", "netns", "pids", ns], check=False)
        return [int(x) for x in p.stdout.split() if x.isdigit()]

    def down(self, grace_s: float = 5.0) -> list[str]:
        namespaces = self.namespaces()
        # Holders are in the namespaces too; processes that left the namespace are not ours to end.
        # FRR's watchfrr restarts daemons that die, so it goes first; then everything left, read
        # again from the namespaces (a daemon restarted meanwhile is in there too).
        _stop({pid for ns in namespaces for pid in self.pids(ns) if _comm(pid) == "watchfrr"}, grace_s)
        _stop({pid for ns in namespaces for pid in self.pids(ns)}, grace_s)
        for ns in namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        return namespaces

    def exec(self, node: str, argv: list[str]) -> int:
        if node not in self.topo.nodes:
            raise LabError(f"no node {node!r} in {self.topo.path}")
        return subprocess.call([*self.enter(node), *argv], env=self.node_env(self.topo.nodes[node]))


def tx_checksum_off(ns: str, ifname: str) -> None:
    """``ethtool -K IFNAME tx off`` in namespace ``ns`` without needing ethtool: the SIOCETHTOOL ioctl
    (ETHTOOL_STXCSUM) on a socket created in the namespace."""
    import array
    import fcntl
    import socket
    import struct

    value = array.array("I", [0x17, 0])  # struct ethtool_value {ETHTOOL_STXCSUM, off}
    with netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s, 0x8946, struct.pack("16sP", ifname.encode(), value.buffer_info()[0]))  # SIOCETHTOOL
    except OSError as exc:
        raise LabError(f"{ns}: cannot turn TX checksum offload off on {ifname}: {exc}") from exc
    finally:
        s.close()


def _stop(pids: set[int], grace_s: float) -> None:
    """SIGTERM ``pids``, SIGKILL what is still running after ``grace_s``; returns once all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            if not pids:
                return
            time.sleep(0.05)  # poll for the processes to exit


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def lab_main(args: argparse.Namespace) -> int:
    try:
        lab = Lab(load_topology(args.topology), args.prefix)
        if args.action == "up":
            print(f"lab {lab.topo.name}: starting {len(lab.topo.nodes)} nodes, {len(lab.topo.links)} links")
            lab.up()
            print(f"lab {lab.topo.name} is up; logs in {lab.state}")
            return 0
        if args.action == "down":
            gone = lab.down()
            print(f"lab {lab.topo.name}: removed {len(gone)} namespaces")
            return 0
        if args.action == "status":
            for ns in lab.namespaces():
                print(f"{ns}: {len(lab.pids(ns))} processes")
            return 0
        if not args.node or not args.command:
            print("usage: pop-router lab exec TOPOLOGY NODE COMMAND...", file=sys.stderr)
            return 2
        return lab.exec(args.node, args.command)
    except (TopologyError, LabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
