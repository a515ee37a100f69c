"""Start a hospital's federation node: the node runtime and, as its child, the SuperNode.

The node home travels as SuperNode node config (`node-home`, `hospital-id`): the
app reads its store, keys and policy from there, never from the run; so is the
consent filter (`consent-filter`: `snapshot`, the portal's consent registry, by
default; `regime` applies the dataset's regime with no consent records).

The SuperNode runs with `--isolation process`: it executes no app code itself. The
node runtime (`federation.node.runtime`) acquires each message's task and runs only
node-installed apps for approved FAB hashes; a secret in `<home>/flwr` (fresh at
every start, owner-only) lets it, and nothing else, acquire the SuperNode's tasks.
Runtime dependency installation stays off (flwr 1.42's default for SuperNodes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from federation.node.home import NodeHome
from federation.runtime import auth_secret_file
from federation.superlink import flower_env

FLWR_DIR = "flwr"


def supernode_command(home: NodeHome, superlink: str, *, port: int,
                      insecure: bool = True, consent_filter: str = "snapshot",
                      node_key: Path | None = None,
                      root_certificates: Path | None = None,
                      secret_file: Path | None = None) -> list[str]:
    """The SuperNode command line for a node home: `flower-supernode`'s options, run
    through `federation.node.supernode` (Flower's SuperNode with a prompt poll).

    With `node_key` (the enrolled key, `federation.node.enrol`) the SuperNode does not
    self-register: it activates as the node id its public key was registered under,
    which is how the portal knows it speaks for this hospital. Without TLS
    (`insecure`) a CA certificate (`root_certificates`) verifies the SuperLink.
    Its Runtime API (`--port`) listens on loopback only, for the node runtime."""
    node_config = (f'node-home="{home.path}" hospital-id="{home.config.hospital_id}"'
                   f' consent-filter="{consent_filter}"')
    cmd = [sys.executable, "-m", "federation.node.supernode", "--superlink", superlink,
           "--host", "127.0.0.1", "--port", str(port), "--node-config", node_config,
           "--isolation", "process"]
    if secret_file is not None:
        cmd += ["--superexec-auth-secret-file", str(secret_file)]
    if node_key is not None:
        cmd += ["--auth-supernode-private-key", str(node_key)]
    if insecure:
        cmd.append("--insecure")
    elif root_certificates is not None:
        cmd += ["--root-certificates", str(root_certificates)]
    return cmd


def start_supernode(
    home: str | Path | NodeHome, superlink: str | None = None, *, port: int = 9094,
    insecure: bool = True, log_path: str | Path | None = None, consent_filter: str = "snapshot",
    node_key: Path | None = None, root_certificates: Path | None = None,
) -> subprocess.Popen:
    """Start the node runtime (which starts the SuperNode) in its own process group, so
    that stopping the group stops everything the node started."""
    home = home if isinstance(home, NodeHome) else NodeHome(home)
    home.require()
    # runs this node was part of when it went down: settle their ε before rejoining
    from federation.node.recovery import settle_interrupted

    settle_interrupted(home.path)
    superlink = superlink or home.config.superlink
    flwr_home = home.path / FLWR_DIR
    flwr_home.mkdir(exist_ok=True)
    secret = auth_secret_file(flwr_home)
    supernode = supernode_command(home, superlink, port=port, insecure=insecure,
                                  consent_filter=consent_filter, node_key=node_key,
                                  root_certificates=root_certificates, secret_file=secret)
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "federation.node.runtime", "--home", str(home.path),
         "--runtime-address", f"127.0.0.1:{port}", "--secret-file", str(secret),
         "--", *supernode],
        env=flower_env(flwr_home), stdout=out or None, stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )
