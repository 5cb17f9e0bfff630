"""Secrets: read from files or inline, never printed, written only into the 0600 exabgp.conf.

A config holds known TCP-MD5 and BFD keys (inline and from files); every view reachable without a
running daemon is rendered (``repr``/``str`` of the config, ``model_dump`` and its JSON, ``pop-router
check``, config errors about those keys, log records from loading, validating and rendering) and
searched for the key strings. The only place they may appear is the generated exabgp.conf (0600).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import stat
from pathlib import Path

import orjson
import pytest
import yaml

from routing import cli
from routing.config import ConfigError, Secret, load_config, reveal
from routing.exabgp.conf import render
from routing.exabgp.speaker import ExabgpSpeaker
from routing.inbox import Inbox
from tests.unit.factories import CONFIG

MD5_INLINE = "md5-inline-Kq7"
MD5_FILE = "md5-from-file-Zx9"
BFD_INLINE = "bfd-inl-Wr4"
BFD_FILE = "bfd-file-Pm2"
SECRETS = (MD5_INLINE, MD5_FILE, BFD_INLINE, BFD_FILE)


def write_config(tmp_path: Path, mutate=None) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "acme-2.md5").write_text(MD5_FILE + "\n")
    (tmp_path / "keys" / "bfd.key").write_text(BFD_FILE + "\n")
    data = copy.deepcopy(CONFIG)
    peers = data["customers"][0]["peers"]
    peers[0]["md5_password"] = MD5_INLINE
    peers[1]["md5_password_file"] = "keys/acme-2.md5"  # relative to the YAML file
    peers[1]["bfd"] = {"auth": {"type": "keyed-sha1", "secret": BFD_INLINE}}
    data["customers"][1]["bfd"] = {"auth": {"type": "keyed-md5", "secret_file": str(tmp_path / "keys/bfd.key")}}
    if mutate:
        mutate(data)
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_clean(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{where} contains a secret"


def test_secrets_from_files_are_loaded(tmp_path: Path) -> None:
    c = load_config(write_config(tmp_path))
    acme, globex = c.customers
    assert isinstance(acme.peers[0].md5_password, Secret)
    assert reveal(acme.peers[0].md5_password) == MD5_INLINE
    assert reveal(acme.peers[1].md5_password) == MD5_FILE  # trailing newline of the file dropped
    assert reveal(c.peer_bfd(acme, acme.peers[1]).auth.secret) == BFD_INLINE
    assert reveal(c.peer_bfd(globex, globex.peers[0]).auth.secret) == BFD_FILE


def test_no_view_prints_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = write_config(tmp_path)
    c = load_config(path)
    views = {
        "repr(config)": repr(c),
        "str(config)": str(c),
        "f-string of a peer": f"{c.customers[0].peers[0]} {c.customers[0].peers[0].md5_password}",
        "model_dump()": repr(c.model_dump()),
        "model_dump(mode=json)": orjson.dumps(c.model_dump(mode="json")).decode(),
        "model_dump_json()": c.model_dump_json(),
        "%-formatting": "%s %r" % ((c.customers[0].peers[0].md5_password,) * 2),
    }
    assert cli.main(["check", "-c", str(path)]) == 0
    views["pop-router check"] = capsys.readouterr().out + capsys.readouterr().err
    logging.getLogger("test").info("loaded %s with peer %r", c, c.customers[0].peers[0])
    conf = render(c, tmp_path / "exabgp.sock")
    for where, text in views.items():
        assert_clean(text, where)
    assert "**********" in views["model_dump_json()"]
    assert_clean(caplog.text, "log records")
    assert MD5_INLINE in conf and MD5_FILE in conf  # ...the one place they belong


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["customers"][0]["peers"][0].update(md5_password_file="keys/acme-2.md5"),
     "customers[0].peers[0]: md5_password and md5_password_file are mutually exclusive"),
    (lambda d: d["customers"][0]["peers"][2].update(md5_password_file="keys/missing"),
     "customers[0].peers[2].md5_password_file: cannot read {tmp}/keys/missing: No such file or directory"),
    (lambda d: d["customers"][0]["peers"][1]["bfd"]["auth"].update(secret_file="keys/bfd.key"),
     "customers[0].peers[1].bfd.auth: give exactly one of secret and secret_file"),
    (lambda d: d["customers"][0]["peers"][1]["bfd"]["auth"].update(secret=BFD_INLINE * 3),
     "customers[0].peers[1].bfd.auth.secret: String should have at most 20 characters"),
    (lambda d: d["customers"][0]["peers"][0].update(md5_password=MD5_INLINE + '"'),
     "customers[0].peers[0]: md5_password may not contain"),
])
def test_secret_errors_name_file_and_key_but_not_the_secret(tmp_path: Path, mutate, expected: str) -> None:
    path = write_config(tmp_path, mutate)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert f"{path}: {expected.format(tmp=tmp_path)}" in msg
    assert_clean(msg, "the error")


def test_exabgp_conf_is_0600_in_a_0700_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = load_config(write_config(tmp_path))
    run_dir = tmp_path / "run"

    async def write() -> None:
        ExabgpSpeaker(c, run_dir, Inbox()).write_config()

    asyncio.run(write())
    conf = run_dir / "exabgp-0.conf"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert MD5_INLINE in conf.read_text()
    assert [p.name for p in run_dir.iterdir()] == ["exabgp-0.conf"]  # no temporary file left behind
    assert_clean(caplog.text, "log records")
