"""The SuperLink's Control API, called in process: the portal is its only client.

`flwr run`, `flwr ls`, `flwr stop` and `flwr supernode register` are Flower's CLI
around these same calls; a CLI process per call costs seconds of interpreter start
on every feasibility query and status check. The portal therefore uses Flower's own
Control HTTP client, with a FAB built exactly as `flwr run` builds it (so the hash a
permit pins is the hash the SuperLink and the nodes see).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.build import build_fab_from_disk
from flwr.common.serde import fab_to_proto, run_from_proto, user_config_to_proto
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
    StopRunRequest,
)
from flwr.supercore.constant import NodeStatus
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.fab import Fab
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.primitives.asymmetric import public_key_to_bytes


class ControlError(Exception):
    """The SuperLink refused a Control call or could not be reached; Flower's words."""


@dataclass(frozen=True)
class ControlAPI:
    """One SuperLink's Control API: its address and, with TLS, the federation CA."""

    address: str
    insecure: bool = True
    root_certificates: Path | None = None

    @contextmanager
    def _client(self, what: str) -> Iterator[ControlHttpClient]:
        client = ControlHttpClient.from_server_address(
            server_address=self.address, insecure=self.insecure,
            root_certificates=(None if self.insecure or self.root_certificates is None
                               else Path(self.root_certificates).read_bytes()),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="tre portal")])
        try:
            yield client
        except ControlError:
            raise
        except httpx.HTTPStatusError as exc:  # Flower's reason is in the body
            raise ControlError(f"{what} at {self.address}: {exc.response.status_code} "
                               f"{exc.response.text[:300]}") from exc
        except Exception as exc:  # noqa: BLE001 - Flower raises httpx and its own errors
            raise ControlError(f"{what} at {self.address}: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()

    def start(self, app_dir: Path, run_config: dict[str, Any]) -> int:
        """Submit a run of the FAB built from `app_dir` with these run-config overrides."""
        content = build_fab_from_disk(Path(app_dir))
        fab = Fab(hashlib.sha256(content).hexdigest(), content, {})
        with self._client("starting a run") as client:
            res = client.StartRun(StartRunRequest(
                fab=fab_to_proto(fab), override_config=user_config_to_proto(run_config),
                federation=""))
        if not res.HasField("run_id"):
            raise ControlError(f"the SuperLink at {self.address} started no run")
        return int(res.run_id)

    def status(self, run_id: int) -> str | None:
        """Flower's status of a run as `status[:sub-status]` (e.g. 'finished:completed')."""
        with self._client("reading a run's status") as client:
            res = client.ListRuns(ListRunsRequest(run_id=run_id))
        for proto in res.run_dict.values():
            s = run_from_proto(proto).status
            return f"{s.status}:{s.sub_status}" if s.sub_status else s.status
        return None

    def stop(self, run_id: int) -> None:
        with self._client("stopping a run") as client:
            client.StopRun(StopRunRequest(run_id=run_id))

    def online_nodes(self) -> set[int]:
        """The SuperNodes connected now (sending heartbeats)."""
        with self._client("listing SuperNodes") as client:
            res = client.ListNodes(ListNodesRequest())
        return {int(n.node_id) for n in res.nodes_info if n.status == NodeStatus.ONLINE}

    def register_node(self, public_key: str, *, name: str | None = None) -> int:
        """Register a SuperNode's public key (OpenSSH, NIST EC); returns its node id. A
        SuperNode started with the matching private key activates as exactly this node."""
        try:
            key = serialization.load_ssh_public_key(public_key.encode())
        except ValueError as exc:
            raise ControlError(f"not an OpenSSH public key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ControlError("a SuperNode key must be an elliptic-curve (NIST) key")
        with self._client("registering a SuperNode") as client:
            res = client.RegisterNode(RegisterNodeRequest(public_key=public_key_to_bytes(key),
                                                          name=name or ""))
        if not res.node_id:
            raise ControlError("the SuperLink registered no node")
        return int(res.node_id)
