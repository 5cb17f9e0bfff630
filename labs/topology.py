"""Reading containerlab topology files: the subset that runs on network namespaces.

Theory of operation
-------------------
A topology is parsed once into plain dataclasses. Node settings are merged the way containerlab
merges them: ``topology.defaults`` < ``topology.kinds[kind]`` < ``topology.groups[group]`` < the node
itself, where lists (``binds``, ``exec``) and maps (``env``, ``sysctls``) of the more specific
level replace the less specific one. Links are accepted in both containerlab forms: the short one
(``endpoints: ["a:eth1", "b:eth1"]``) and the brief veth one (``type: veth`` with endpoint
objects). Bind sources are resolved relative to the topology file, as containerlab does.

Node roles come from the image (see ``labs/runner.py``). Anything we do not run (mgmt networks,
other link types) is rejected with a message naming the key, not silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TopologyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Bind:
    source: Path
    target: str
    read_only: bool = False


@dataclass(slots=True)
class Node:
    name: str
    kind: str = "linux"
    image: str = ""
    binds: list[Bind] = field(default_factory=list)
    exec: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    cmd: str | None = None
    group: str | None = None

    @property
    def role(self) -> str:
        img = self.image.lower()
        if self.cmd:
            return "cmd"
        if "frrouting/frr" in img or img.split("/")[-1].startswith("frr"):
            return "frr"
        if "bird" in img:
            return "bird"
        if "pop-router" in img:
            return "pop-router"
        if "prometheus" in img:
            return "prometheus"
        return "host"

    def bind_for(self, *suffixes: str) -> Bind | None:
        for b in self.binds:
            if b.target.endswith(suffixes):
                return b
        return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    node: str
    interface: str
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(slots=True)
class Topology:
    name: str
    path: Path
    prefix: str | None
    nodes: dict[str, Node]
    links: list[Link]
    raw: dict[str, Any]

    def namespace(self, node: str, prefix: str | None = None) -> str:
        p = prefix if prefix is not None else self.ns_prefix()
        return f"{p}{node}"

    def ns_prefix(self) -> str:
        # containerlab names containers `<prefix>-<lab>-<node>` with prefix "clab" by default, and
        # just `<node>` with `prefix: ""`. We keep the lab name even then, so two labs never collide.
        if self.prefix is None:
            return f"clab-{self.name}-"
        return f"{self.prefix}-{self.name}-" if self.prefix else f"{self.name}-"


_MERGE_KEYS = ("kind", "image", "binds", "exec", "env", "sysctls", "cmd")


def _merge(*levels: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level in levels:
        for k, v in (level or {}).items():
            if k in _MERGE_KEYS and v is not None:
                out[k] = v
    return out


def _bind(spec: str, base: Path, where: str) -> Bind:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].startswith("/"):
        raise TopologyError(f"{where}: bind {spec!r} must be SOURCE:/ABSOLUTE/TARGET[:ro]")
    src = Path(parts[0])
    if not src.is_absolute():
        src = (base / src).resolve()
    if not src.exists():
        raise TopologyError(f"{where}: bind source {src} does not exist")
    return Bind(src, parts[1], len(parts) == 3 and parts[2] == "ro")


def _endpoint(e: Any, where: str) -> Endpoint:
    if isinstance(e, str):
        node, sep, ifname = e.partition(":")
        if not sep or not node or not ifname:
            raise TopologyError(f"{where}: endpoint {e!r} must be NODE:INTERFACE")
        return Endpoint(node, ifname)
    if isinstance(e, dict) and "node" in e and "interface" in e:
        return Endpoint(str(e["node"]), str(e["interface"]), e.get("mac"))
    raise TopologyError(f"{where}: bad endpoint {e!r}")


def load_topology(path: str | Path) -> Topology:
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or "name" not in raw or "topology" not in raw:
        raise TopologyError(f"{path}: a containerlab topology needs 'name' and 'topology'")
    topo = raw["topology"] or {}
    defaults = topo.get("defaults") or {}
    kinds = topo.get("kinds") or {}
    groups = topo.get("groups") or {}
    nodes: dict[str, Node] = {}
    for name, spec in (topo.get("nodes") or {}).items():
        spec = spec or {}
        where = f"{path}: topology.nodes.{name}"
        kind = spec.get("kind") or (groups.get(spec.get("group") or "", {}) or {}).get("kind") or defaults.get("kind")
        merged = _merge(defaults, kinds.get(kind or "", {}), groups.get(spec.get("group") or "", {}), spec)
        kind = merged.get("kind", "linux")
        if kind not in ("linux",):
            raise TopologyError(f"{where}.kind: {kind!r} cannot run on namespaces (only 'linux')")
        if len(name) > 15 or not name.replace("-", "").replace("_", "").isalnum():
            raise TopologyError(f"{where}: node names here must be at most 15 letters, digits, '-' or '_'")
        nodes[name] = Node(
            name=name, kind=kind, image=str(merged.get("image", "")),
            binds=[_bind(b, path.parent, f"{where}.binds") for b in merged.get("binds", [])],
            exec=[str(x) for x in merged.get("exec", [])],
            env={str(k): str(v) for k, v in (merged.get("env") or {}).items()},
            sysctls={str(k): str(v) for k, v in (merged.get("sysctls") or {}).items()},
            cmd=merged.get("cmd"), group=spec.get("group"),
        )
    links: list[Link] = []
    for i, link in enumerate(topo.get("links") or []):
        where = f"{path}: topology.links[{i}]"
        ltype = link.get("type", "veth")
        if ltype != "veth":
            raise TopologyError(f"{where}.type: {ltype!r} links are not supported on namespaces (only veth)")
        eps = link.get("endpoints") or []
        if len(eps) != 2:
            raise TopologyError(f"{where}.endpoints: a veth link needs exactly two endpoints")
        a, b = (_endpoint(e, where) for e in eps)
        for ep in (a, b):
            if ep.node not in nodes:
                raise TopologyError(f"{where}: unknown node {ep.node!r}")
            if len(ep.interface) > 15:
                raise TopologyError(f"{where}: interface name {ep.interface!r} is longer than 15 characters")
        links.append(Link(a, b, link.get("mtu")))
    seen: set[tuple[str, str]] = set()
    for link in links:
        for ep in (link.a, link.b):
            if (ep.node, ep.interface) in seen:
                raise TopologyError(f"{path}: interface {ep.node}:{ep.interface} is used by two links")
            seen.add((ep.node, ep.interface))
    return Topology(str(raw["name"]), path, raw.get("prefix"), nodes, links, raw)
