"""Start a hospital's Flower SuperNode for a node home.

The node home travels as SuperNode node config (`node-home`, `hospital-id`): the
ClientApp reads its store, keys and policy from there, never from the run; so is
the consent filter (`consent-filter`: `snapshot`, the portal's consent registry, by
default; `regime` applies the dataset's regime with no consent records). FABs
are installed under the home (`<home>/flwr`), so what ran is inspectable per node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from federation.node.home import NodeHome
from federation.superlink import flower_env, tool

FLWR_DIR = "flwr"


def supernode_command(home: NodeHome, superlink: str, *, port: int,
                      insecure: bool = True, consent_filter: str = "snapshot",
                      node_key: Path | None = None,
                      root_certificates: Path | None = None) -> list[str]:
    """The `flower-supernode` command line for a node home.

    With `node_key` (the enrolled key, `federation.node.enrol`) the SuperNode does not
    self-register: it activates as the node id its public key was registered under,
    which is how the portal knows it speaks for this hospital. Without TLS
    (`insecure`) a CA certificate (`root_certificates`) verifies the SuperLink."""
    node_config = (f'node-home="{home.path}" hospital-id="{home.config.hospital_id}"'
                   f' consent-filter="{consent_filter}"')
    cmd = [tool("flower-supernode"), "--superlink", superlink, "--port", str(port),
           "--node-config", node_config]
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
    """Start the SuperNode as a child process in its own process group."""
    home = home if isinstance(home, NodeHome) else NodeHome(home)
    home.require()
    # runs this node was part of when it went down: settle their ε before rejoining
    from federation.node.recovery import settle_interrupted

    settle_interrupted(home.path)
    superlink = superlink or home.config.superlink
    flwr_home = home.path / FLWR_DIR
    flwr_home.mkdir(exist_ok=True)
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        supernode_command(home, superlink, port=port, insecure=insecure,
                          consent_filter=consent_filter, node_key=node_key,
                          root_certificates=root_certificates),
        env=flower_env(flwr_home), stdout=out or None, stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )
