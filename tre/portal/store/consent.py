"""SQL for the consent registry: current state, full history and the registry version.

`consent` holds the current state of each consent (one per organisation and
subject); `consent_version` is append-only and holds every version ever recorded.
Each change gets the next *registry version* (global, monotonic), which is what
nodes use to pull deltas. Changes are applied set-based (one batch of any size,
staged through Arrow), so a bulk import of a million consents is a few queries,
not a million round trips.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_consent"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE consent (
            consent_id VARCHAR PRIMARY KEY,
            organisation VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            purposes VARCHAR[] NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('active', 'withdrawn')),
            valid_from DATE,
            valid_to DATE,
            version INTEGER NOT NULL,
            registry_version BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            created_by VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR NOT NULL,
            UNIQUE (organisation, subject)
        );
        CREATE TABLE consent_version (
            registry_version BIGINT PRIMARY KEY,
            consent_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            organisation VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            purposes VARCHAR[] NOT NULL,
            status VARCHAR NOT NULL,
            valid_from DATE,
            valid_to DATE,
            change VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            note VARCHAR,
            recorded_by VARCHAR NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            audit_seq BIGINT
        );
        CREATE INDEX consent_version_by_consent ON consent_version (consent_id)
        """,
    )
]

INCOMING_SCHEMA = pa.schema([
    ("ord", pa.int64()),
    ("consent_id", pa.string()),
    ("organisation", pa.string()),
    ("subject", pa.string()),
    ("purposes", pa.list_(pa.string())),
    ("status", pa.string()),
    ("valid_from", pa.date32()),
    ("valid_to", pa.date32()),
    ("note", pa.string()),
])

SNAPSHOT_COLUMNS = (
    "consent_id, subject, organisation, purposes, status, valid_from, valid_to,"
    " registry_version AS version"
)


def query_arrow(cur: Cursor, sql: str, params: list[Any]) -> pa.Table:
    """A query's result as an Arrow table, straight from the relation (no row copy)."""
    rel = cur.sql(sql, params=params)
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def consent_count(cur: Cursor) -> int:
    """How many consents the registry holds (each once, in its current version)."""
    return _scalar(cur, "SELECT count(*) FROM consent")


def registry_version(cur: Cursor) -> int:
    return _scalar(cur, "SELECT coalesce(max(registry_version), 0) FROM consent_version")


def _scalar(cur: Cursor, sql: str, params: list[Any] | None = None) -> Any:
    """First column of the one row (fetched to the end: DuckDB 2 refuses to register an
    Arrow table on a cursor whose last result is still open)."""
    return cur.execute(sql, params or []).fetchall()[0][0]


def get_consent(cur: Cursor, consent_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM consent WHERE consent_id = ?", [consent_id])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def find_consent(cur: Cursor, organisation: str, subject: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM consent WHERE organisation = ? AND subject = ?",
                [organisation, subject])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def list_consents(cur: Cursor, *, organisation: str | None = None, subject: str | None = None,
                  status: str | None = None, limit: int = 100, offset: int = 0
                  ) -> tuple[list[dict[str, Any]], int]:
    """One page of current consents and the total that match."""
    where, params = ["TRUE"], []
    for column, value in (("organisation", organisation), ("subject", subject),
                          ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = " AND ".join(where)
    total = _scalar(cur, f"SELECT count(*) FROM consent WHERE {clause}", params)
    cur.execute(f"SELECT * FROM consent WHERE {clause} ORDER BY registry_version"
                " LIMIT ? OFFSET ?", [*params, limit, offset])
    return rows_as_dicts(cur), total


def all_consents(cur: Cursor, organisation: str | None = None) -> list[dict[str, Any]]:
    if organisation is None:
        cur.execute("SELECT * FROM consent ORDER BY organisation, subject")
    else:
        cur.execute("SELECT * FROM consent WHERE organisation = ? ORDER BY subject",
                    [organisation])
    return rows_as_dicts(cur)


def history(cur: Cursor, consent_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM consent_version WHERE consent_id = ? ORDER BY version",
                [consent_id])
    return rows_as_dicts(cur)


def get_version(cur: Cursor, consent_id: str, version: int) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM consent_version WHERE consent_id = ? AND version = ?",
                [consent_id, version])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def incoming_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow batch of consents to apply; `ord` keeps the caller's order (and error paths)."""
    columns: dict[str, list[Any]] = {name: [] for name in INCOMING_SCHEMA.names}
    for i, row in enumerate(rows):
        columns["ord"].append(i)
        for name in INCOMING_SCHEMA.names[1:]:
            columns[name].append(row.get(name))
    return pa.table(columns, schema=INCOMING_SCHEMA)


def id_conflicts(cur: Cursor, incoming: pa.Table) -> list[tuple[int, str]]:
    """(ord, problem) for rows whose given consent id names another subject's consent."""
    cur.register("consent_incoming", incoming)
    try:
        cur.execute(
            "SELECT i.ord, i.consent_id, c.organisation, c.subject FROM consent_incoming i"
            " JOIN consent c ON c.consent_id = i.consent_id"
            " WHERE c.organisation <> i.organisation OR c.subject <> i.subject ORDER BY i.ord"
        )
        found = cur.fetchall()
        cur.execute(
            "SELECT i.ord, i.consent_id, c.consent_id FROM consent_incoming i"
            " JOIN consent c ON c.organisation = i.organisation AND c.subject = i.subject"
            " WHERE i.consent_id IS NOT NULL AND i.consent_id <> c.consent_id ORDER BY i.ord"
        )
        renamed = cur.fetchall()
    finally:
        cur.unregister("consent_incoming")
    problems = [(o, f"consent id {cid} already names another subject's consent")
                for o, cid, _, _ in found]
    problems += [(o, f"this subject's consent is {have} in the registry, not {cid}")
                 for o, cid, have in renamed]
    return sorted(problems)


def apply_batch(cur: Cursor, incoming: pa.Table, *, now: datetime, actor: str, source: str,
                want_ids: bool) -> dict[str, Any]:
    """Record every row of `incoming` as a new version unless it equals the current state.

    New (organisation, subject) pairs become new consents; the rest become new
    versions of the existing consent. Returns counts, the registry version range
    written and, if asked, the consent id of each input row in input order.
    """
    base = registry_version(cur)
    cur.register("consent_incoming", incoming)
    try:
        cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE consent_staged AS
            SELECT i.ord,
                   coalesce(c.consent_id, i.consent_id,
                            'cns-' || substr(replace(gen_random_uuid()::VARCHAR, '-', ''), 1, 16)
                   ) AS consent_id,
                   i.organisation, i.subject, list_sort(list_distinct(i.purposes)) AS purposes,
                   i.status, i.valid_from, i.valid_to, i.note,
                   c.consent_id IS NULL AS is_new,
                   coalesce(c.version, 0) AS prev_version,
                   c.status AS prev_status,
                   c.consent_id IS NOT NULL
                     AND c.purposes = list_sort(list_distinct(i.purposes))
                     AND c.status = i.status
                     AND c.valid_from IS NOT DISTINCT FROM i.valid_from
                     AND c.valid_to IS NOT DISTINCT FROM i.valid_to AS unchanged
            FROM consent_incoming i
            LEFT JOIN consent c ON c.organisation = i.organisation AND c.subject = i.subject
            """
        )
    finally:
        cur.unregister("consent_incoming")
    cur.execute(
        """
        CREATE OR REPLACE TEMP TABLE consent_changed AS
        SELECT *, prev_version + 1 AS version,
               ? + row_number() OVER (ORDER BY ord) AS registry_version,
               CASE WHEN is_new THEN 'record'
                    WHEN status = 'withdrawn' AND prev_status = 'active' THEN 'withdraw'
                    WHEN status = 'active' AND prev_status = 'withdrawn' THEN 'reconsent'
                    ELSE 'update' END AS change
        FROM consent_staged WHERE NOT unchanged
        """,
        [base],
    )
    cur.execute(
        """
        INSERT INTO consent_version
        SELECT registry_version, consent_id, version, organisation, subject, purposes, status,
               valid_from, valid_to, change, ?, note, ?, ?, NULL
        FROM consent_changed
        """,
        [source, actor, now],
    )
    cur.execute(
        """
        UPDATE consent SET purposes = ch.purposes, status = ch.status,
               valid_from = ch.valid_from, valid_to = ch.valid_to, version = ch.version,
               registry_version = ch.registry_version, updated_at = ?, updated_by = ?
        FROM consent_changed ch WHERE consent.consent_id = ch.consent_id AND NOT ch.is_new
        """,
        [now, actor],
    )
    cur.execute(
        """
        INSERT INTO consent
        SELECT consent_id, organisation, subject, purposes, status, valid_from, valid_to,
               version, registry_version, ?, ?, ?, ?
        FROM consent_changed WHERE is_new
        """,
        [now, actor, now, actor],
    )
    counts = cur.execute(
        "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE change = 'withdraw'),"
        " count(*) FILTER (WHERE NOT is_new), max(registry_version) FROM consent_changed"
    ).fetchall()[0]
    unchanged = _scalar(cur, "SELECT count(*) FROM consent_staged WHERE unchanged")
    ids = None
    if want_ids:
        ids = [r[0] for r in cur.execute(
            "SELECT consent_id FROM consent_staged ORDER BY ord").fetchall()]
    cur.execute("DROP TABLE consent_changed")
    cur.execute("DROP TABLE consent_staged")
    created, withdrawn, changed_existing, top = counts
    return {
        "created": created,
        "updated": changed_existing,
        "withdrawn": withdrawn,
        "unchanged": unchanged,
        "from_version": base + 1,
        "to_version": top or base,
        "consent_ids": ids,
    }


def versions_digest(cur: Cursor, lo: int, hi: int) -> str:
    """SHA-256 over the versions lo..hi in a documented text form, so an auditor can
    recompute what one audit entry of a bulk import covers."""
    return _scalar(
        cur,
        """
        SELECT sha256(coalesce(string_agg(concat_ws('|', registry_version, consent_id, version,
                   organisation, subject, array_to_string(purposes, ','), status,
                   coalesce(valid_from::VARCHAR, ''), coalesce(valid_to::VARCHAR, '')),
                   chr(10) ORDER BY registry_version), ''))
        FROM consent_version WHERE registry_version BETWEEN ? AND ?
        """,
        [lo, hi],
    )


def set_audit_seq(cur: Cursor, lo: int, hi: int, seq: int) -> None:
    cur.execute("UPDATE consent_version SET audit_seq = ? WHERE registry_version BETWEEN ? AND ?",
                [seq, lo, hi])


def snapshot(cur: Cursor, since: int) -> pa.Table:
    """Current state of every consent whose latest version is newer than `since`."""
    return query_arrow(
        cur,
        f"SELECT {SNAPSHOT_COLUMNS} FROM consent WHERE registry_version > ?"
        " ORDER BY registry_version",
        [since],
    )


def versions_between(cur: Cursor, organisation: str, start: datetime, end: datetime
                     ) -> list[dict[str, Any]]:
    """Changes an organisation recorded in [start, end), for its activity report."""
    cur.execute(
        "SELECT change, count(*) AS n FROM consent_version WHERE organisation = ?"
        " AND recorded_at >= ? AND recorded_at < ? GROUP BY change ORDER BY change",
        [organisation, start, end],
    )
    return rows_as_dicts(cur)


def state_at(cur: Cursor, organisation: str, at: datetime) -> list[dict[str, Any]]:
    """Per status and purpose, how many of the organisation's subjects stood there at `at`."""
    cur.execute(
        """
        WITH latest AS (
            SELECT * FROM consent_version
            WHERE organisation = ? AND recorded_at < ?
            QUALIFY row_number() OVER (PARTITION BY consent_id ORDER BY version DESC) = 1
        )
        SELECT status, purpose, count(*) AS subjects
        FROM (SELECT status, unnest(purposes) AS purpose FROM latest)
        GROUP BY status, purpose ORDER BY status, purpose
        """,
        [organisation, at],
    )
    return rows_as_dicts(cur)


def subjects_covering(cur: Cursor, organisation: str, purposes: list[str], start: datetime,
                      end: datetime) -> int:
    """Subjects of the organisation whose consent was active for one of `purposes`, in
    force and valid at some moment of [start, end): the consents a permit for those
    purposes, active over that interval, could have drawn on."""
    return _scalar(
        cur,
        """
        WITH v AS (
            SELECT *, lead(recorded_at) OVER (PARTITION BY consent_id ORDER BY version)
                      AS superseded_at
            FROM consent_version WHERE organisation = ?
        )
        SELECT count(DISTINCT consent_id) FROM v
        WHERE status = 'active' AND list_has_any(purposes, ?::VARCHAR[])
          AND recorded_at < ? AND (superseded_at IS NULL OR superseded_at > ?)
          AND (valid_from IS NULL OR valid_from <= ?::DATE)
          AND (valid_to IS NULL OR valid_to >= ?::DATE)
        """,
        [organisation, purposes, end, start, end, start],
    )
