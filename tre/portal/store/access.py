"""SQL for access requests, reviews, permits and the approved-app catalogue."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from duckdb import DuckDBPyConnection as Cursor

from tre.core.db import Migration, rows_as_dicts

COMPONENT = "portal_access"
MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE access_request (
            id VARCHAR PRIMARY KEY,
            applicant_sub VARCHAR NOT NULL,
            applicant_username VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            review_round INTEGER NOT NULL DEFAULT 0,
            fields VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            submitted_at TIMESTAMPTZ,
            decided_at TIMESTAMPTZ
        );
        CREATE TABLE review (
            request_id VARCHAR NOT NULL,
            review_round INTEGER NOT NULL,
            reviewer_sub VARCHAR NOT NULL,
            reviewer_username VARCHAR NOT NULL,
            decision VARCHAR NOT NULL,
            rationale VARCHAR NOT NULL,
            conditions VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (request_id, review_round, reviewer_sub)
        );
        CREATE TABLE permit (
            id VARCHAR PRIMARY KEY,
            request_id VARCHAR NOT NULL UNIQUE,
            holder_sub VARCHAR NOT NULL,
            token VARCHAR NOT NULL,
            claims VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            issued_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ,
            revoke_reason VARCHAR
        );
        CREATE TABLE approved_app (
            app_id VARCHAR PRIMARY KEY,
            app_hash VARCHAR NOT NULL,
            description VARCHAR NOT NULL,
            registered_by VARCHAR NOT NULL,
            registered_at TIMESTAMPTZ NOT NULL
        )
        """,
    )
]


def _request_row(row: dict[str, Any]) -> dict[str, Any]:
    fields = json.loads(row.pop("fields"))
    return {**fields, **row}


def insert_request(cur: Cursor, rid: str, sub: str, username: str, fields: dict, now: datetime
                   ) -> None:
    cur.execute(
        "INSERT INTO access_request (id, applicant_sub, applicant_username, status, fields,"
        " created_at, updated_at) VALUES (?, ?, ?, 'draft', ?, ?, ?)",
        [rid, sub, username, json.dumps(fields), now, now],
    )


def get_request(cur: Cursor, rid: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM access_request WHERE id = ?", [rid])
    rows = rows_as_dicts(cur)
    return _request_row(rows[0]) if rows else None


def list_requests(cur: Cursor, applicant_sub: str | None = None) -> list[dict[str, Any]]:
    if applicant_sub is None:
        cur.execute("SELECT * FROM access_request ORDER BY created_at")
    else:
        cur.execute(
            "SELECT * FROM access_request WHERE applicant_sub = ? ORDER BY created_at",
            [applicant_sub],
        )
    return [_request_row(r) for r in rows_as_dicts(cur)]


def request_details(cur: Cursor, rid: str | None = None, applicant_sub: str | None = None
                    ) -> list[dict[str, Any]]:
    """Requests with their permit id and reviews: three plain queries whatever the count
    (correlated JSON subqueries are far slower in DuckDB)."""
    if rid is not None:
        found = get_request(cur, rid)
        rows = [found] if found is not None and applicant_sub in (None, found["applicant_sub"]) \
            else []
    else:
        rows = list_requests(cur, applicant_sub)
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    cur.execute("SELECT request_id, id FROM permit WHERE request_id IN (SELECT unnest(?))",
                [ids])
    permits = dict(cur.fetchall())
    cur.execute("SELECT * FROM review WHERE request_id IN (SELECT unnest(?)) ORDER BY created_at",
                [ids])
    reviews: dict[str, list[dict[str, Any]]] = {}
    for review in rows_as_dicts(cur):
        review["conditions"] = json.loads(review["conditions"]) if review["conditions"] else None
        reviews.setdefault(review["request_id"], []).append(review)
    return [r | {"permit_id": permits.get(r["id"]), "reviews": reviews.get(r["id"], [])}
            for r in rows]


def update_fields(cur: Cursor, rid: str, fields: dict, now: datetime) -> None:
    cur.execute(
        "UPDATE access_request SET fields = ?, updated_at = ? WHERE id = ?",
        [json.dumps(fields), now, rid],
    )


def set_status(cur: Cursor, rid: str, status: str, now: datetime, *,
               submitted: bool = False, decided: bool = False, new_round: bool = False) -> None:
    sets = ["status = ?", "updated_at = ?"]
    params: list[Any] = [status, now]
    if submitted:  # the first submission: a request sent back for changes keeps its clock
        sets.append("submitted_at = coalesce(submitted_at, ?)")
        params.append(now)
    if decided:
        sets.append("decided_at = ?")
        params.append(now)
    if new_round:
        sets.append("review_round = review_round + 1")
    cur.execute(f"UPDATE access_request SET {', '.join(sets)} WHERE id = ?", [*params, rid])


def insert_review(cur: Cursor, rid: str, review_round: int, sub: str, username: str,
                  decision: str, rationale: str, conditions: dict | None, now: datetime) -> None:
    cur.execute(
        "INSERT INTO review VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [rid, review_round, sub, username, decision, rationale,
         json.dumps(conditions) if conditions else None, now],
    )


def reviews_for(cur: Cursor, rid: str, review_round: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM review WHERE request_id = ?"
    params: list[Any] = [rid]
    if review_round is not None:
        sql += " AND review_round = ?"
        params.append(review_round)
    cur.execute(sql + " ORDER BY created_at", params)
    rows = rows_as_dicts(cur)
    for r in rows:
        r["conditions"] = json.loads(r["conditions"]) if r["conditions"] else None
    return rows


def insert_permit(cur: Cursor, pid: str, rid: str, holder: str, token: str, claims: dict,
                  issued: datetime, expires: datetime) -> None:
    cur.execute(
        "INSERT INTO permit (id, request_id, holder_sub, token, claims, status, issued_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
        [pid, rid, holder, token, json.dumps(claims), issued, expires],
    )


def _permit_row(row: dict[str, Any]) -> dict[str, Any]:
    row["claims"] = json.loads(row["claims"])
    return row


def get_permit(cur: Cursor, pid: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM permit WHERE id = ?", [pid])
    rows = rows_as_dicts(cur)
    return _permit_row(rows[0]) if rows else None


def permit_for_request(cur: Cursor, rid: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM permit WHERE request_id = ?", [rid])
    rows = rows_as_dicts(cur)
    return _permit_row(rows[0]) if rows else None


def list_permits(cur: Cursor, holder_sub: str | None = None) -> list[dict[str, Any]]:
    if holder_sub is None:
        cur.execute("SELECT * FROM permit ORDER BY issued_at")
    else:
        cur.execute("SELECT * FROM permit WHERE holder_sub = ? ORDER BY issued_at", [holder_sub])
    return [_permit_row(r) for r in rows_as_dicts(cur)]


def set_permit_status(cur: Cursor, pid: str, status: str, *, revoked_at: datetime | None = None,
                      reason: str | None = None) -> None:
    cur.execute(
        "UPDATE permit SET status = ?, revoked_at = coalesce(?, revoked_at),"
        " revoke_reason = coalesce(?, revoke_reason) WHERE id = ?",
        [status, revoked_at, reason, pid],
    )


def due_permits(cur: Cursor, now: datetime) -> list[str]:
    """Active permits whose expiry has passed (still to be marked expired)."""
    cur.execute("SELECT id FROM permit WHERE status = 'active' AND expires_at <= ? "
                "ORDER BY expires_at", [now])
    return [r[0] for r in cur.fetchall()]


def revoked_permit_ids(cur: Cursor) -> list[str]:
    cur.execute("SELECT id FROM permit WHERE status = 'revoked' ORDER BY revoked_at")
    return [r[0] for r in cur.fetchall()]


def upsert_app(cur: Cursor, app_id: str, app_hash: str, description: str, who: str,
               now: datetime) -> None:
    cur.execute("DELETE FROM approved_app WHERE app_id = ?", [app_id])
    cur.execute("INSERT INTO approved_app VALUES (?, ?, ?, ?, ?)",
                [app_id, app_hash, description, who, now])


def get_app(cur: Cursor, app_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM approved_app WHERE app_id = ?", [app_id])
    rows = rows_as_dicts(cur)
    return rows[0] if rows else None


def list_apps(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM approved_app ORDER BY app_id")
    return rows_as_dicts(cur)


def decisions(cur: Cursor) -> list[dict[str, Any]]:
    """Every decided request: when it was first submitted, when and how it was decided."""
    cur.execute("SELECT id, status, submitted_at, decided_at FROM access_request"
                " WHERE decided_at IS NOT NULL AND submitted_at IS NOT NULL ORDER BY decided_at")
    return rows_as_dicts(cur)


def refusal_reasons(cur: Cursor) -> list[dict[str, Any]]:
    """The rationales of the reviews that refused a request, in the round that decided it."""
    cur.execute("SELECT r.id AS request_id, r.decided_at, v.rationale FROM access_request r"
                " JOIN review v ON v.request_id = r.id AND v.review_round = r.review_round"
                " WHERE r.status = 'rejected' AND v.decision = 'reject'"
                " ORDER BY r.decided_at, v.created_at")
    return rows_as_dicts(cur)


def permit_issues(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute("SELECT id, issued_at FROM permit ORDER BY issued_at")
    return rows_as_dicts(cur)


def permits_in_period(cur: Cursor, start: datetime, end: datetime, now: datetime
                      ) -> list[dict[str, Any]]:
    """Permits in force at some moment of [start, end), with their request's fields and
    when and how each ended (`ended_at`, `ended_how`; None while in force), for the
    consent activity report.

    The table keeps no end time for every case, so the end is derived: a revocation at
    `revoked_at` (unless the permit had expired first); an expiry at `expires_at`, also
    for an active permit past it that `expire_due_permits` has not marked yet; an
    exhaustion when the last run under the permit last changed. `until` is when the
    permit stopped being usable: its end, or its expiry while in force."""
    cur.execute(
        """
        WITH p AS (
            SELECT p.*, r.applicant_username, r.fields,
                   (SELECT max(updated_at) FROM run WHERE run.permit_id = p.id) AS last_run_at
            FROM permit p LEFT JOIN access_request r ON r.id = p.request_id
            WHERE p.issued_at < ?
        ), ended AS (
            SELECT *, CASE
                WHEN status = 'revoked' AND revoked_at < expires_at THEN 'revoked'
                WHEN status = 'exhausted' THEN 'exhausted'
                WHEN status <> 'active' OR expires_at <= ? THEN 'expired'
            END AS ended_how
            FROM p
        ), timed AS (
            SELECT *, CASE ended_how
                WHEN 'revoked' THEN revoked_at
                WHEN 'exhausted' THEN least(coalesce(last_run_at, expires_at), expires_at)
                WHEN 'expired' THEN expires_at
            END AS ended_at
            FROM ended
        )
        SELECT * EXCLUDE (token, last_run_at), coalesce(ended_at, expires_at) AS until
        FROM timed WHERE coalesce(ended_at, expires_at) > ?
        ORDER BY issued_at, id
        """,
        [end, now, start],
    )
    rows = []
    for row in rows_as_dicts(cur):
        fields = json.loads(row.pop("fields")) if row["fields"] is not None else {}
        rows.append(_permit_row(row) | {"request": fields})
    return rows
