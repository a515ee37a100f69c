"""Start a Flower SuperLink: the rendezvous for hospital SuperNodes and the ServerApp.

`flower-superlink` serves its Fleet, Control and Runtime APIs over one HTTP address
and spawns `flower-superexec` / `flwr-serverapp` by name, so the interpreter's
`bin/` goes first on PATH. Runs never install dependencies at run time: the code
they execute is the installed `tre` package (DESIGN §2.3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_env(flwr_home: str | Path | None = None, base: dict[str, str] | None = None
               ) -> dict[str, str]:
    """Environment for Flower processes: our bin/ first on PATH, FLWR_HOME if given."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class TLSFiles:
    """The SuperLink's TLS material (from `tre federation provision`)."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, folder: str | Path) -> TLSFiles:
        d = Path(folder)
        return cls(d / "ca.crt", d / "superlink.crt", d / "superlink.key")


def superlink_command(host: str = "127.0.0.1", port: int = 9093, *, insecure: bool = True,
                      database: str | Path | None = None, tls: TLSFiles | None = None,
                      supernode_auth: bool = False) -> list[str]:
    """The `flower-superlink` command line for one address.

    `tls`: serve Fleet, Control and Runtime APIs over TLS. `supernode_auth`: only
    SuperNodes whose public key was registered (`flwr supernode register`) may
    connect, and each request must be signed with that key."""
    cmd = [tool("flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if tls is not None:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert),
                "--ssl-keyfile", str(tls.key)]
    elif insecure:
        cmd.append("--insecure")
    if supernode_auth:
        cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def start_superlink(
    host: str = "127.0.0.1", port: int = 9093, *, insecure: bool = True,
    flwr_home: str | Path | None = None, database: str | Path | None = None,
    log_path: str | Path | None = None, tls: TLSFiles | None = None,
    supernode_auth: bool = False,
) -> subprocess.Popen:
    """Start the SuperLink as a child process (its own process group, so it can be
    stopped with the ServerApps it spawned)."""
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        superlink_command(host, port, insecure=insecure, database=database, tls=tls,
                          supernode_auth=supernode_auth),
        env=flower_env(flwr_home), stdout=out or None, stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )
