"""``make demo``: bring up the default lab, wait for it to converge, show it working.

Steps: (re)start the lab, wait until every BGP session is Established *and has sent End-of-RIB*
for its families and the accepted routes are in the PoP's kernel, print the daemon's view and the
kernel's, prove forwarding with pings between the hosts behind two different customers, and say how
to look around and how to stop.

"Converged" means End-of-RIB (RFC 4724 §2) from every session, not just Established: a session is
Established before its routes arrive, so a dual-homed customer whose second session came up last
showed ``rcvd 0`` in a table printed as converged. Each session carries one family, the unicast
family of its transport address (routing/exabgp/conf.py generates it so), and the daemon's
``show peers --json`` lists the families whose End-of-RIB it has seen (``eor``). The wait polls that
document; it never sleeps a fixed time as a stand-in for convergence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from labs.runner import Lab, LabError
from labs.topology import load_topology


def _in(lab: Lab, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*lab.enter(node), *argv], capture_output=True, text=True,
                          env=lab.node_env(lab.topo.nodes[node]), timeout=60)


def _show(lab: Lab, *what: str) -> subprocess.CompletedProcess[str]:
    return _in(lab, "pop", sys.executable, "-m", "routing.cli", "show", *what)


def session_families(peer: dict) -> set[str]:
    """The address families one session carries: the unicast family of its transport address."""
    return {"ipv6" if ":" in peer["peer"] else "ipv4"}


def convergence(peers: list[dict], kernel_routes: int) -> tuple[bool, str]:
    """(converged?, what is still missing) from ``show peers --json`` and the kernel route count."""
    up = [p for p in peers if p["state"] == "established"]
    waiting = [p["peer"] for p in up if not session_families(p) <= set(p.get("eor") or ())]
    done = bool(peers) and len(up) == len(peers) and not waiting and kernel_routes > 0
    what = (f"{len(up)}/{len(peers)} sessions Established, {len(up) - len(waiting)}/{len(peers)} with "
            f"End-of-RIB, {kernel_routes} routes in the kernel")
    if waiting:
        what += f" (no End-of-RIB yet from {', '.join(waiting)})"
    return done, what


def _wait(lab: Lab, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        p = _show(lab, "peers", "--json")
        if p.returncode == 0:
            fib = json.loads(_show(lab, "fib", "--json").stdout or "[]")
            done, last = convergence(json.loads(p.stdout), len(fib))
            if done:
                print(f"  converged: {last}")
                return
        time.sleep(0.5)  # poll interval between two reads of the daemon's state
    hint = ""
    if "no End-of-RIB yet" in last:
        hint = ("; FRR sends End-of-RIB only to a speaker that advertises the graceful-restart capability "
                "(RFC 4724 §3), so the PoP's ExaBGP neighbors must advertise it")
    raise LabError(f"the lab did not converge within {timeout_s:.0f}s ({last}){hint}; logs in {lab.state}")


def main(argv: list[str]) -> int:
    topo_path = Path(argv[0] if argv else "containerlab/pop-basic.clab.yml")
    lab = Lab(load_topology(topo_path))
    rel = topo_path
    if lab.namespaces():
        print(f"== lab {lab.topo.name} was up: restarting it")
        lab.down()
    print(f"== starting lab {lab.topo.name} on network namespaces")
    lab.up()
    print("== waiting for BGP sessions, End-of-RIB from each, and kernel routes")
    _wait(lab)
    print("\n== pop-router show peers")
    print(_show(lab, "peers").stdout)
    print("== pop-router show routes   (*> best, *= ECMP member; the reason is why the best path won)")
    print(_show(lab, "routes").stdout)
    print("== pop-router show routes --rejected   (mallory's junk, and our own prefixes reflected back)")
    print(_show(lab, "routes", "--rejected").stdout)
    print("== the kernel's view in the PoP: ip route / ip -6 route (proto 200 = pop-router; routes point at")
    print("   nexthop groups, nhid N) and ip nexthop (the groups and their members)")
    print(_in(lab, "pop", "ip", "route").stdout)
    print(_in(lab, "pop", "ip", "-6", "route", "show", "proto", "200").stdout)
    print(_in(lab, "pop", "ip", "nexthop", "show").stdout)
    ok = True
    for dst in ("203.0.113.10", "2001:db8:200::10"):
        print(f"== ping from host1 (behind acme, FRR) to {dst} (host2, behind globex, BIRD)")
        p = _in(lab, "host1", "ping", "-c", "3", "-i", "0.2", "-W", "2", dst)
        print(p.stdout)
        ok &= p.returncode == 0
    print(f"""== look around
  pop-router lab exec {rel} pop pop-router show peers|routes|fib|xdp|status [--json]
  pop-router lab exec {rel} pop pop-router show routes --rejected
  pop-router lab exec {rel} acme vtysh -c 'show bgp summary'
  pop-router lab exec {rel} globex birdc -s /run/bird/bird.ctl show protocols
  pop-router lab exec {rel} pop python3 -c "import urllib.request as u; \\
      print(u.urlopen('http://127.0.0.1:9324/metrics').read().decode())"
  (pop-router is .venv/bin/pop-router; logs: {lab.state})
== stop with: make demo-down
""")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
