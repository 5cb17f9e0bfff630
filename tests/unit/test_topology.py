"""containerlab topology files: our files validate against containerlab's own schema, and the reader
merges defaults/kinds/groups the way containerlab does and rejects what it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from labs.topology import TopologyError, load_topology

ROOT = Path(__file__).parents[2]
SCHEMA = ROOT.parent / "shared" / "containerlab" / "clab.schema.json"
TOPOLOGIES = sorted((ROOT / "containerlab").glob("*.clab.yml"))


def _schema() -> dict:
    """containerlab's schema, with its Go/ECMA-262 Unicode classes spelled for Python's ``re``.

    ``\\p{N}\\p{L}`` (numbers, letters) is what Python writes as ``\\w`` minus ``_``; the schema
    uses them only inside interface-name patterns, where ``\\w`` is the faithful equivalent.
    """
    if not SCHEMA.exists():
        pytest.fail(f"containerlab's schema is expected at {SCHEMA} (the shared/ folder beside the checkout)")
    text = SCHEMA.read_text().replace("\\\\p{N}\\\\p{L}", "\\\\w").replace("\\\\p{L}", "[^\\\\W\\\\d_]")
    text = text.replace("\\\\p{N}", "\\\\d")
    return json.loads(text)


@pytest.mark.parametrize("path", TOPOLOGIES, ids=[p.name for p in TOPOLOGIES])
def test_topology_validates_against_containerlab_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), _schema())


def test_schema_catches_a_broken_file() -> None:
    bad = {"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "binds": "not-a-list"}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())


def test_default_lab_roles_and_links() -> None:
    t = load_topology(ROOT / "containerlab" / "pop-basic.clab.yml")
    roles = {n.name: n.role for n in t.nodes.values()}
    assert roles == {"pop": "pop-router", "acme": "frr", "globex": "bird", "mallory": "cmd",
                     "prometheus": "prometheus", "host1": "host", "host2": "host"}
    assert t.nodes["acme"].bind_for("/etc/frr/frr.conf") is not None
    assert t.nodes["pop"].sysctls["net.ipv4.ip_forward"] == "1"  # from topology.kinds.linux
    assert len(t.links) == 7
    assert t.ns_prefix() == "clab-pop-basic-"


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "t.clab.yml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_merge_order_defaults_kinds_groups_node(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("")
    doc = {"name": "m", "prefix": "", "topology": {
        "defaults": {"kind": "linux", "env": {"L": "defaults"}, "image": "alpine"},
        "kinds": {"linux": {"env": {"L": "kinds"}}},
        "groups": {"g": {"env": {"L": "group"}, "binds": ["a.conf:/etc/a.conf"]}},
        "nodes": {"n1": {"group": "g"}, "n2": {"env": {"L": "node"}}, "n3": {"group": "g", "env": {"L": "node"}}},
        "links": [{"type": "veth", "endpoints": [{"node": "n1", "interface": "e1"},
                                                 {"node": "n2", "interface": "e1"}]}],
    }}
    t = load_topology(_write(tmp_path, doc))
    assert [t.nodes[n].env["L"] for n in ("n1", "n2", "n3")] == ["group", "node", "node"]
    assert t.nodes["n1"].binds[0].source == tmp_path / "a.conf"
    assert t.ns_prefix() == "m-"
    assert t.links[0].a.interface == "e1"


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        ({"nodes": {"a": {"kind": "nokia_srlinux"}}}, "topology.nodes.a.kind: 'nokia_srlinux' cannot run"),
        ({"nodes": {"a": {"binds": ["missing.conf:/etc/x"]}}}, "bind source"),
        ({"nodes": {"a": {"binds": ["x"]}}}, "must be SOURCE:/ABSOLUTE/TARGET"),
        ({"nodes": {"a": {}}, "links": [{"endpoints": ["a:eth1", "b:eth1"]}]}, "unknown node 'b'"),
        ({"nodes": {"a": {}, "b": {}}, "links": [{"endpoints": ["a:eth1"]}]}, "exactly two endpoints"),
        ({"nodes": {"a": {}, "b": {}}, "links": [{"endpoints": ["a:eth1", "b:eth1"]},
                                                 {"endpoints": ["a:eth1", "b:eth2"]}]}, "used by two links"),
        ({"nodes": {"a": {}}, "links": [{"type": "vxlan", "endpoints": []}]}, "'vxlan' links are not supported"),
    ],
)
def test_bad_topologies(tmp_path: Path, topology: dict, message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_topology(_write(tmp_path, {"name": "bad", "topology": topology}))
