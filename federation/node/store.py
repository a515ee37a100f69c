"""The node's governance SQL in one place: which consent regime a dataset has, which
subjects it holds, and what the audit log says about feasibility tickets already used.

Kept free of policy: the gate and the consent filter decide, these functions only read.
"""

from __future__ import annotations

from federation.node.home import NodeHome
from federation.node.refusal import Refusal
from tre.core.audit import AuditAction
from tre.core.schemas import ConsentRegime


def _dataset_field(home: NodeHome, dataset_id: str, column: str) -> str:
    """One column of the dataset's row; Refusal `unknown-dataset` when it is not held here."""
    with home.db.reader() as cur:
        row = cur.execute(f"SELECT {column} FROM dataset WHERE dataset_id = ?",
                          [dataset_id]).fetchall()
    if not row:
        raise Refusal("unknown-dataset",
                      f"dataset {dataset_id!r} is not held by {home.config.hospital_id}")
    return str(row[0][0])


def dataset_regime(home: NodeHome, dataset_id: str) -> ConsentRegime:
    """The dataset's consent regime; Refusal `unknown-dataset` when it is not held here."""
    return ConsentRegime(_dataset_field(home, dataset_id, "consent_regime"))


def dataset_kind(home: NodeHome, dataset_id: str) -> str:
    """'imaging' or 'clinical'; Refusal `unknown-dataset` when it is not held here."""
    return _dataset_field(home, dataset_id, "kind")


def dataset_pseudonyms(home: NodeHome, dataset_id: str) -> list[str]:
    """Every subject the dataset holds, imaging or clinical, sorted."""
    with home.db.reader() as cur:
        return [r[0] for r in cur.execute(
            "SELECT pseudonym FROM imaging_study WHERE dataset_id = ?"
            " UNION SELECT pseudonym FROM clinical WHERE dataset_id = ? ORDER BY 1",
            [dataset_id, dataset_id]).fetchall()]


def ticket_answered(home: NodeHome, ticket_id: str) -> int | None:
    """The audit row that answered feasibility ticket `ticket_id` here, if one did."""
    with home.db.reader() as cur:
        row = cur.execute(
            "SELECT seq FROM audit_log WHERE action = ?"
            " AND json_extract_string(details, '$.ticket_id') = ? LIMIT 1",
            [AuditAction.QUERY_FEASIBILITY.value, ticket_id]).fetchone()
    return None if row is None else int(row[0])


def feasibility_queries_since(home: NodeHome, researcher: str, since: str) -> int:
    """How many feasibility queries of `researcher` this node answered since `since`
    (an ISO timestamp, compared with the audit log's)."""
    with home.db.reader() as cur:
        return int(cur.execute(
            "SELECT count(*) FROM audit_log WHERE action = ? AND ts >= ?"
            " AND json_extract_string(details, '$.researcher') = ?",
            [AuditAction.QUERY_FEASIBILITY.value, since, researcher]).fetchone()[0])
