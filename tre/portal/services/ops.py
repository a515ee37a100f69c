"""Operations: store snapshots, permit-key rotation and retirement, Prometheus metrics."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.core.backup import sha256_file, snapshot
from tre.portal.context import Portal
from tre.portal.errors import Conflict, NotFound
from tre.portal.services import checkpoints


def backup(portal: Portal, principal: Principal) -> dict[str, Any]:
    """Snapshot the live store; the snapshot contains the audit row announcing it."""
    portal.audit.record(actor=principal.username, action=AuditAction.STORE_BACKUP,
                        object_type="store",
                        object_id=portal.db.path.name)
    path = snapshot(portal.db, portal.settings.state_dir / "backups")
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def rotate_permit_key(portal: Portal, principal: Principal) -> dict[str, Any]:
    """New permits are signed with a new key; the JWKS keeps the old ones for verification."""
    with portal.db.transaction() as cur:
        old = portal.keys.active_kid
        new = portal.keys.rotate()
        portal.audit.append(cur, actor=principal.username, action=AuditAction.PERMIT_KEY_ROTATE,
                            object_type="permit_key", object_id=new,
                            details={"previous_kid": old})
    return {"active_kid": new, "previous_kid": old, "jwks": portal.keys.public_jwks()}


def retire_permit_key(portal: Portal, principal: Principal, kid: str) -> dict[str, Any]:
    """Retire a compromised key: its private half is deleted and the key id published as
    retired (permit keys and revocation list), so every node refuses permits and tickets
    it signed. Retiring the active key makes a new one active first."""
    with portal.db.transaction() as cur:
        if kid in portal.keys.retired:
            raise Conflict(f"permit key {kid} is already retired")
        try:
            new = portal.keys.retire(kid)
        except KeyError:
            raise NotFound(f"the portal has no permit key {kid}") from None
        portal.audit.append(cur, actor=principal.username, action=AuditAction.PERMIT_KEY_RETIRE,
                            object_type="permit_key", object_id=kid,
                            details={"new_active_kid": new})
    return {"retired": kid, "active_kid": portal.keys.active_kid,
            "jwks": portal.keys.public_jwks()}


class _PortalCollector:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def collect(self):
        with self.portal.db.reader() as cur:
            requests = cur.execute(
                "SELECT status, count(*) FROM access_request GROUP BY status").fetchall()
            permits = cur.execute("SELECT status, count(*) FROM permit GROUP BY status").fetchall()
            outputs = cur.execute("SELECT status, count(*) FROM output GROUP BY status").fetchall()
            runs = cur.execute("SELECT state, count(*) FROM run GROUP BY state").fetchall()
            days = [r[0] for r in cur.execute(
                "SELECT epoch(decided_at - submitted_at) / 86400.0 FROM access_request "
                "WHERE decided_at IS NOT NULL AND submitted_at IS NOT NULL").fetchall()]
            audit_rows = cur.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        for name, doc, rows in (
            ("tre_requests", "Access requests by state", requests),
            ("tre_permits", "Permits by status", permits),
            ("tre_outputs", "Airlock outputs by status", outputs),
            ("tre_runs", "Federated runs by state", runs),
        ):
            family = GaugeMetricFamily(name, doc, labels=["state"])
            for state, count in rows:
                family.add_metric([state], count)
            yield family
        yield GaugeMetricFamily("tre_median_days_to_decision",
                                "Median days from submission to decision",
                                value=statistics.median(days) if days else float("nan"))
        yield GaugeMetricFamily("tre_audit_rows", "Rows in the portal audit log",
                                value=audit_rows)
        yield from _audit_status_families(checkpoints.audit_status(self.portal))


def _audit_status_families(status: list[dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Per party: the newest signed checkpoint, and the newest independent verification."""
    seq = GaugeMetricFamily("tre_audit_checkpoint_seq",
                            "Row of the newest signed checkpoint of each party", labels=["party"])
    signed_at = GaugeMetricFamily("tre_audit_checkpoint_timestamp_seconds",
                                  "When each party signed its newest checkpoint",
                                  labels=["party"])
    ok = GaugeMetricFamily("tre_audit_verification_ok",
                           "1 if the last independent verification of each party's log found "
                           "it intact, 0 if it found it broken", labels=["party"])
    verified_at = GaugeMetricFamily("tre_audit_verification_timestamp_seconds",
                                    "When each party's log was last verified independently",
                                    labels=["party"])
    for row in status:
        party, checkpoint, verification = row["party"], row["checkpoint"], row["verification"]
        if checkpoint is not None:
            seq.add_metric([party], checkpoint["seq"])
            signed_at.add_metric([party], datetime.fromisoformat(checkpoint["at"]).timestamp())
        if verification is not None:
            ok.add_metric([party], 1 if verification["ok"] else 0)
            verified_at.add_metric([party], verification["verified_at"].timestamp())
    yield from (seq, signed_at, ok, verified_at)


def metrics_text(portal: Portal) -> bytes:
    registry = CollectorRegistry()
    registry.register(_PortalCollector(portal))
    return generate_latest(registry)
