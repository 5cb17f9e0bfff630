"""The CLI on its own: no daemon, no root, no namespace (moved here from tests/integration, where
they failed without root for no reason of theirs)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from routing import cli

ROOT = Path(__file__).parents[2]
HINT = "--socket PATH, or with -c pop.yaml"


def test_check_passes() -> None:
    p = subprocess.run([sys.executable, "-m", "routing.cli", "check", "-c", str(ROOT / "examples" / "pop.yaml")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "OK (1 customers, 2 peers)" in p.stdout


def test_check_fails_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "pop.yaml"
    text = (ROOT / "examples" / "pop.yaml").read_text()
    bad.write_text(text.replace("address: 2001:db8:1::2", "address: 2001:db8:1::zz"))
    p = subprocess.run([sys.executable, "-m", "routing.cli", "check", "-c", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1
    assert f"{bad}: customers[0].peers[1].address: '2001:db8:1::zz' is not an IPv4 or IPv6 address" in p.stderr


def test_show_without_a_daemon_names_the_default_socket_and_how_to_point_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "run" / "api.sock"
    monkeypatch.setattr(cli, "DEFAULT_SOCKET", missing)  # this machine's /run is not the test's business
    assert cli.main(["show", "peers"]) != 0
    err = capsys.readouterr().err
    assert f"at {missing} (the default): No such file or directory" in err and HINT in err


@pytest.mark.parametrize("how", ["--socket", "-c"])
def test_show_names_the_socket_it_tried_and_where_that_came_from(
        how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "api.sock"
    if how == "--socket":
        argv, origin = ["--socket", str(sock)], "from --socket"
    else:
        conf = tmp_path / "pop.yaml"
        conf.write_text((ROOT / "examples" / "pop.yaml").read_text().replace(
            "socket: /run/pop-router/api.sock", f"socket: {sock}"))
        argv, origin = ["-c", str(conf)], f"api.socket of {conf}"
    assert cli.main(["show", "routes", "--json", *argv]) != 0
    err = capsys.readouterr().err
    assert f"at {sock} ({origin}): No such file or directory" in err and HINT in err


def test_a_socket_nobody_listens_on_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "api.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))  # bound, never listening: what a crashed daemon leaves behind
    try:
        assert cli.main(["fib", "diff", "--socket", str(sock)]) != 0
    finally:
        s.close()
    err = capsys.readouterr().err
    assert f"at {sock} (from --socket): Connection refused" in err and HINT in err


def test_reset_without_a_token_names_the_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["reset", "192.0.2.1", "--socket", str(tmp_path / "api.sock")]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'api.token'}: No such file or directory" in err and "--token-file" in err
