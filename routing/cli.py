"""The ``pop-router`` command: run the daemon, check a config, show state, run labs.

The CLI is a thin client of the API's Unix socket (``show``, ``reset``, ``reload``, ``config diff``) so
it shows exactly what the daemon holds; ``--json`` prints the API's document unchanged (tests compare
against it).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import orjson

from routing.config import ConfigError, load_config

DEFAULT_SOCKET = Path("/run/pop-router/api.sock")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def api_call(sock: Path, method: str, path: str, token: str | None = None, body: Any = None,
             timeout: float = 10.0) -> tuple[int, Any]:
    conn = _UnixHTTPConnection(str(sock), timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else orjson.dumps(body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read() or b"null")
    finally:
        conn.close()


def _socket_from(args: argparse.Namespace) -> Path:
    return _socket_and_origin(args)[0]


def _socket_and_origin(args: argparse.Namespace) -> tuple[Path, str]:
    """The API socket to use and where that choice came from (said when it cannot be reached)."""
    if getattr(args, "socket", None):
        return Path(args.socket), "from --socket"
    if getattr(args, "config", None):
        return load_config(args.config).api.socket, f"api.socket of {args.config}"
    return DEFAULT_SOCKET, "the default"


def _unreachable(args: argparse.Namespace, exc: OSError) -> str:
    """Why the API could not be reached, naming the socket tried and how to point elsewhere: a bare
    "No such file or directory" does not say which file, nor that the path can be chosen."""
    sock, origin = _socket_and_origin(args)
    reason = exc.strerror or str(exc)
    hint = ("is the daemon running? Point the CLI at its socket with --socket PATH, or with -c pop.yaml "
            "to read api.socket from the daemon's config")
    return f"cannot reach the daemon's API at {sock} ({origin}): {reason}; {hint}"


# --- rendering ---------------------------------------------------------------------------------------
def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    Console(width=200).print(t)


def render(kind: str, data: Any, args: argparse.Namespace) -> None:
    if kind == "peers":
        _table("BGP peers", ["peer", "customer", "asn", "state", "for", "router-id", "rcvd", "accepted",
                             "rejected", "limit", "last down reason"],
               [[p["peer"], p["customer"], str(p["asn"]), p["state"], f"{p['since_s']:.0f}s", p["router_id"],
                 str(p["received"]), str(p["accepted"]), str(p["rejected"]), str(p["max_prefixes"] or "-"),
                 p["last_down_reason"]] for p in data])
    elif kind == "routes" and getattr(args, "exported", None):
        _table(f"Sent to {args.exported}", ["prefix", "next hop", "origin", "as-path", "lp", "med", "communities"],
               [[r["prefix"], r["nexthop"], r["origin"], " ".join(map(str, r["as_path"])),
                 "" if r["local_pref"] is None else str(r["local_pref"]), "" if r["med"] is None else str(r["med"]),
                 " ".join(r["communities"] + r["large_communities"] + r["ext_communities"])] for r in data])
    elif kind == "routes" and args.rejected:
        _table("Rejected announcements", ["prefix", "peer", "customer", "as-path", "rpki", "reason", "detail"],
               [[r["prefix"], r["peer"], r["customer"], " ".join(map(str, r["as_path"])), r.get("rpki") or "-",
                 r["reason"], r["detail"]] for r in data])
    elif kind == "routes":
        _table("Loc-RIB", ["", "prefix", "next hop", "peer", "customer", "as-path", "lp", "med", "rpki", "communities",
                           "best-path reason"],
               [[("*>" if r["best"] else ("*=" if r["multipath"] else " *")), r["prefix"],
                 "blackhole" if r.get("rtbh") else r["nexthop"], r["peer"],
                 r["customer"], " ".join(map(str, r["as_path"])), str(r["local_pref"]),
                 "" if r["med"] is None else str(r["med"]), r.get("rpki") or "-",
                 " ".join(r.get("communities", []) + r.get("large_communities", []) + r.get("ext_communities", [])),
                 r["reason"]] for r in data])
    elif kind == "rpki":
        _table("RPKI caches (RTR)", ["cache", "pref", "up", "selected", "state", "serial", "VRPs", "last update",
                                     "last error"],
               [[c["cache"], str(c["preference"]), "up" if c["up"] else "down", "yes" if c["selected"] else "",
                 c["state"], "-" if c["serial"] is None else str(c["serial"]), str(c["vrps"]),
                 "-" if c["last_update_s_ago"] is None else f"{c['last_update_s_ago']:.0f}s ago",
                 c["last_error"] or ""] for c in data["caches"]])
        vrps, routes = data.get("vrps") or {}, data["routes"]
        _table("Origin validation", ["key", "value"],
               [["VRPs in effect", ", ".join(f"{k} {v}" for k, v in vrps.items()) or "-"],
                *[[f"paths {k}", str(v)] for k, v in routes.items()]])
    elif kind == "xdp":
        rows = [[k, str(v)] for k, v in data.items() if k not in ("counters", "attached", "counters_by_interface")]
        rows += [[f"attached ifindex {a['ifindex']}", a["mode"]] for a in data.get("attached", [])]
        rows += [[f"packets {k}", str(v)] for k, v in (data.get("counters") or {}).items()]
        for ifname, counters in (data.get("counters_by_interface") or {}).items():
            rows += [[f"packets {ifname} {k}", str(v)] for k, v in counters.items() if v]
        _table("XDP fast path", ["key", "value"], rows)
    elif kind == "bfd":
        _table("BFD sessions", ["peer", "customer", "state", "remote", "diag", "tx ms", "rx ms", "detect ms",
                                "up for", "flaps", "last down", "auth"],
               [[s["peer"] + (" (multihop)" if s["multihop"] else ""), s["customer"], s["state"], s["remote_state"],
                 s["local_diag"], f"{s['tx_interval_ms']:g}", f"{s['rx_interval_ms']:g}",
                 f"{s['detect_time_ms']:g}", f"{s['uptime_s']:.0f}s", str(s["flaps"]), s["last_down_diag"],
                 s["auth"] or "-"] for s in data])
    elif kind == "fib" and args.failed:
        _table("Routes the kernel refused (retried)", ["prefix", "op", "next hops", "error", "attempts"],
               [[r["prefix"], r["op"], ", ".join(r["nexthops"]), r["error"], str(r["attempts"])] for r in data])
    elif kind == "fib":
        _table("Kernel FIB (routes of ours)", ["prefix", "next hops", "stale"],
               [[r["prefix"], ", ".join(r["nexthops"]), "stale" if r["stale"] else ""] for r in data])
    else:
        _table("pop-router", ["key", "value"], [[k, str(v)] for k, v in data.items()])


# --- commands ----------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    try:
        c = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.config}: OK ({len(c.customers)} customers, {len(c.peers())} peers)")
    from fib.capabilities import neighbour_table_warnings

    for w in neighbour_table_warnings(c.peers_by_family()):
        print(f"{args.config}: warning: {w}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    logging.basicConfig(
        level=getattr(logging, config.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # POP_ROUTER_SLOW_STEP_MS=N: diagnostics for a late event loop (pop_router_loop_lag_seconds): the
    # standard loop in debug mode logs every step longer than N ms with the task or callback it ran.
    slow_ms = os.environ.get("POP_ROUTER_SLOW_STEP_MS")
    if not slow_ms:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency, but the daemon runs without it
            pass
    from routing.daemon import Daemon
    from routing.runtime import tune_runtime

    tune_runtime()

    config_path = Path(args.config).resolve()

    async def main() -> None:
        d = Daemon(config, config_path=config_path)
        loop = asyncio.get_running_loop()
        if slow_ms:
            loop.set_debug(True)
            loop.slow_callback_duration = float(slow_ms) / 1000
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        loop.add_signal_handler(signal.SIGHUP, d.on_sighup)
        try:
            await d.run()
        except asyncio.CancelledError:
            logging.getLogger("routing").info("stopping (kernel routes are kept for the next start)")
        finally:
            await d.stop()

    asyncio.run(main())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path = {"peers": "/peers", "routes": "/routes", "fib": "/fib", "status": "/status", "bfd": "/bfd",
            "xdp": "/xdp", "rpki": "/rpki"}[args.what]
    if args.what == "routes" and args.exported:
        path += f"?exported={args.exported}"
    elif args.what == "routes" and args.rejected:
        path += "?rejected=1"
    if args.what == "fib" and args.failed:
        path += "?failed=1"
    data = _get(args, path)
    if data is None:
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(args.what, data, args)
    return 0


def _get(args: argparse.Namespace, path: str) -> Any:
    """GET an API document; None (after saying why on stderr) if the daemon cannot give it."""
    try:
        status, data = api_call(_socket_from(args), "GET", path)
    except ConfigError as exc:
        print(f"cannot read the API socket from the config: {exc}", file=sys.stderr)
        return None
    except OSError as exc:
        print(_unreachable(args, exc), file=sys.stderr)
        return None
    if status != 200:
        print(f"API error {status}: {data}", file=sys.stderr)
        return None
    return data


def _token(args: argparse.Namespace, sock: Path, what: str) -> str | None:
    token_file = Path(args.token_file) if args.token_file else None
    if token_file is None:
        token_file = load_config(args.config).api.token_path if args.config else sock.with_name("api.token")
    try:
        return token_file.read_text().strip()
    except OSError as exc:
        print(f"cannot {what}: the API token {token_file}: {exc.strerror or exc} (--token-file PATH)", file=sys.stderr)
        return None


def cmd_reset(args: argparse.Namespace) -> int:
    sock = _socket_from(args)
    token = _token(args, sock, "reset")
    if token is None:
        return 1
    try:
        status, data = api_call(sock, "POST", f"/peers/{args.peer}/reset", token)
    except OSError as exc:
        print(f"cannot reset: {_unreachable(args, exc)}", file=sys.stderr)
        return 1
    print(orjson.dumps(data).decode())
    return 0 if status == 200 else 1


def cmd_reload(args: argparse.Namespace) -> int:
    """Preview (``--dry-run``) or apply a configuration; without ``-c``, the daemon's own file.

    The file is checked here first, so an invalid one is refused with ``check``'s words before the
    daemon is asked; the daemon reads it again itself (it may run in another mount namespace).
    """
    from routing.reload import render_text

    body = None
    if args.config:
        try:
            load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        body = {"path": str(Path(args.config).resolve())}
    sock = _socket_from(args)
    token = _token(args, sock, "reload")
    if token is None:
        return 1
    try:
        status, data = api_call(sock, "POST", "/config/reload" + ("?dry_run=1" if args.dry_run else ""), token,
                                body=body, timeout=180.0)
    except OSError as exc:
        print(f"cannot reload: {_unreachable(args, exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(data.get("error", data) if isinstance(data, dict) else data, file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(("dry run: nothing changed\n" if args.dry_run else "") + render_text(data))
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    """The running configuration (from the API) against a file, as a unified diff of their YAML."""
    import difflib

    import yaml

    from routing.reload import config_document

    try:
        wanted = config_document(load_config(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    running = _get(args, "/config")
    if running is None:
        return 1
    a = yaml.safe_dump(running, sort_keys=False).splitlines(keepends=True)
    b = yaml.safe_dump(wanted, sort_keys=False).splitlines(keepends=True)
    diff = list(difflib.unified_diff(a, b, "running", args.config))
    if args.json:
        sys.stdout.write(orjson.dumps({"running": running, "file": wanted, "same": not diff}).decode() + "\n")
    else:
        sys.stdout.write("".join(diff) if diff else f"{args.config}: same as the running configuration\n")
    return 3 if diff else 0


def cmd_fib(args: argparse.Namespace) -> int:
    data = _get(args, "/fib/diff")
    if data is None:
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        rows = [[r["prefix"], "missing in kernel", ", ".join(r["rib"]), ""] for r in data["missing"]]
        rows += [[r["prefix"], "extra in kernel", "", ", ".join(r["kernel"])] for r in data["extra"]]
        rows += [[r["prefix"], "different", ", ".join(r["rib"]), ", ".join(r["kernel"])] for r in data["different"]]
        _table(f"RIB vs kernel: {data['in_sync']} in sync, {len(rows)} differences "
               f"({data['pending']} pending, {data['failed']} failed, {data['stale']} stale)",
               ["prefix", "", "RIB", "kernel"], rows)
        x = data.get("xdp")
        if x is not None:
            xrows = [[p, "missing in XDP"] for p in x["missing"]] + [[p, "extra in XDP"] for p in x["extra"]]
            xrows += [[r["prefix"], f"group {r['xdp_group']} {r['xdp_members']} vs kernel {r['kernel_group']} "
                       f"{r['kernel_members']}"] for r in x["different"]]
            xrows += [[f"nexthop {i}", "wrong or missing in XDP"] for i in x["bad_nexthops"]]
            _table(f"kernel vs XDP maps: {x['in_sync']} in sync, {len(xrows)} differences "
                   f"({len(x['unresolved_nexthops'])} nexthops waiting for a neighbour: slow path)",
                   ["prefix", ""], xrows)
    diffs = len(data["missing"]) + len(data["extra"]) + len(data["different"])
    x = data.get("xdp")
    if x is not None:
        diffs += len(x["missing"]) + len(x["extra"]) + len(x["different"]) + len(x["bad_nexthops"])
    return 0 if diffs == 0 else 3


def cmd_lab(args: argparse.Namespace) -> int:
    from labs.runner import lab_main

    return lab_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pop-router", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the daemon in the foreground")
    r.add_argument("-c", "--config", required=True)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check", help="validate a configuration file")
    c.add_argument("-c", "--config", required=True)
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("show", help="show daemon state")
    s.add_argument("what", choices=["peers", "routes", "fib", "bfd", "xdp", "rpki", "status"])
    s.add_argument("--json", action="store_true")
    s.add_argument("--rejected", action="store_true", help="routes: rejected announcements with their reason")
    s.add_argument("--exported", metavar="PEER",
                   help="routes: what session PEER is sent (customer: export policy; backbone: Adj-RIB-Out)")
    s.add_argument("--failed", action="store_true", help="fib: routes the kernel refused")
    s.add_argument("-c", "--config", help="read the API socket path from this config")
    s.add_argument("--socket", help=f"API socket (default {DEFAULT_SOCKET})")
    s.set_defaults(func=cmd_show)
    x = sub.add_parser("reset", help="tear down a BGP session (needs the API token)")
    x.add_argument("peer")
    x.add_argument("-c", "--config")
    x.add_argument("--socket")
    x.add_argument("--token-file")
    x.set_defaults(func=cmd_reset)
    rl = sub.add_parser("reload", help="apply a configuration to the running daemon (needs the API token)")
    rl.add_argument("-c", "--config", help="the configuration to apply (default: the file the daemon started with)")
    rl.add_argument("--dry-run", action="store_true", help="only show what would change")
    rl.add_argument("--json", action="store_true")
    rl.add_argument("--socket")
    rl.add_argument("--token-file")
    rl.set_defaults(func=cmd_reload)
    cf = sub.add_parser("config", help="compare the running configuration with a file")
    cf.add_argument("action", choices=["diff"])
    cf.add_argument("-c", "--config", required=True)
    cf.add_argument("--json", action="store_true")
    cf.add_argument("--socket")
    cf.set_defaults(func=cmd_config_diff)
    f = sub.add_parser("fib", help="compare the RIB with the kernel FIB")
    f.add_argument("action", choices=["diff"])
    f.add_argument("--json", action="store_true")
    f.add_argument("-c", "--config")
    f.add_argument("--socket")
    f.set_defaults(func=cmd_fib)
    lab = sub.add_parser("lab", help="run a containerlab topology on network namespaces")
    lab.add_argument("action", choices=["up", "down", "exec", "status"])
    lab.add_argument("topology")
    lab.add_argument("node", nargs="?", help="exec: the node")
    lab.add_argument("command", nargs=argparse.REMAINDER, help="exec: the command")
    lab.add_argument("--prefix", help="namespace name prefix (default: clab-<lab name>-)")
    lab.set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
