"""The node side: pull snapshots from the real portal over HTTP with the node's real
service account, cache them in node.duckdb, and filter by regime, purpose and validity."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from federation.node import consent as node_consent
from federation.node.consent import ConsentDecision, ConsentUnavailable, SnapshotConsentFilter
from tests.consent.conftest import add_dataset, make_node, node_client, pseudonym
from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration

P = {k: pseudonym(f"node-{k}") for k in "ABCDEFGH"}


def _post(portal_url, headers, path, body=None):
    import httpx

    resp = httpx.post(f"{portal_url}{path}", headers=headers, json=body, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def seed_registry(live_portal, keycloak) -> dict[str, str]:
    """A: research; B: AI training; C: withdrew research; D: no record; E: statistics;
    F: AI training, expired; G: AI training, not yet valid; H: AI training with org-a but
    objects to research with org-b."""
    today = datetime.now(UTC).date()
    s1, s2 = bearer(keycloak.token("steward1")), bearer(keycloak.token("steward2"))
    url = live_portal.url
    ids = {}
    for key, purposes, extra in [
        ("A", ["scientific_research"], {}),
        ("B", ["ai_training"], {}),
        ("C", ["scientific_research"], {}),
        ("E", ["statistics"], {}),
        ("F", ["ai_training"], {"valid_to": str(today - timedelta(days=1))}),
        ("G", ["ai_training"], {"valid_from": str(today + timedelta(days=30))}),
        ("H", ["ai_training"], {}),
    ]:
        ids[key] = _post(url, s1, "/v1/consents",
                         {"subject": P[key], "purposes": purposes, **extra})["id"]
    _post(url, s1, f"/v1/consents/{ids['C']}/withdraw", {"reason": "changed mind"})
    _post(url, s2, "/v1/consents", {"subject": P["H"], "purposes": ["scientific_research"],
                                    "status": "withdrawn"})
    return ids


@pytest.fixture
def node(live_portal, keycloak, tmp_path):
    home = make_node(tmp_path / "node-a", live_portal.url)
    everyone = [P[k] for k in "ABCDEFGH"]
    add_dataset(home, "ds-in", "opt-in", everyone)
    add_dataset(home, "ds-out", "opt-out", everyone)
    yield home
    home.db.close()


def allowed_keys(decision: ConsentDecision) -> str:
    back = {v: k for k, v in P.items()}
    return "".join(sorted(back[p] for p in decision.allowed))


@pytest.mark.parametrize(
    ("dataset", "purpose", "allowed", "excluded"),
    [
        ("ds-in", "ai_training", "AB", 6),         # research consent covers AI training
        ("ds-out", "ai_training", "ABDEFG", 2),     # C withdrew research; H objected (org-b)
        ("ds-in", "scientific_research", "A", 7),  # AI-training consent does not cover research
        ("ds-out", "scientific_research", "ABDEFG", 2),
        ("ds-in", "statistics", "E", 7),
        ("ds-out", "statistics", "ABCDEFGH", 0),   # nobody objected to statistics
        ("ds-in", "education", "", 8),             # a purpose nobody consented to
    ],
)
def test_opt_in_and_opt_out_by_purpose_and_validity(live_portal, keycloak, node, dataset,
                                                    purpose, allowed, excluded):
    seed_registry(live_portal, keycloak)
    f = SnapshotConsentFilter(node, client=node_client(keycloak, live_portal.url))
    decision = f.filter_dataset(dataset, purpose)
    assert allowed_keys(decision) == allowed
    assert decision.excluded == excluded
    assert f"snapshot v{f.last_state.version}" in decision.basis


def test_withdrawal_reaches_the_node_at_its_next_pull(live_portal, keycloak, node):
    ids = seed_registry(live_portal, keycloak)
    f = SnapshotConsentFilter(node, client=node_client(keycloak, live_portal.url))
    everyone = [P[k] for k in "ABCDEFGH"]
    first = f.filter(dataset_id="ds-in", regime="opt-in", purpose="ai_training",
                     pseudonyms=everyone)
    assert allowed_keys(first) == "AB"
    v1 = f.last_state.version

    _post(live_portal.url, bearer(keycloak.token("steward1")),
          f"/v1/consents/{ids['B']}/withdraw", {"reason": "withdrawn between runs"})
    second = f.filter(dataset_id="ds-in", regime="opt-in", purpose="ai_training",
                      pseudonyms=everyone)
    assert allowed_keys(second) == "A" and second.excluded == 7
    assert f.last_state.version == v1 + 1 and f.last_state.source == "portal"
    # opt-out honours the withdrawal too
    out = f.filter(dataset_id="ds-out", regime=None, purpose="ai_training", pseudonyms=everyone)
    assert "B" not in allowed_keys(out)

    entries = node.audit.entries()
    syncs = [e.details for e in entries if e.action == "consent.sync"]
    assert [(s["kind"], s["received"]) for s in syncs] == [("full", 8), ("delta", 1),
                                                            ("delta", 0)]
    # a delta replaces its consents: the cache holds the portal's 8 throughout
    assert [s["consents"] for s in syncs] == [8, 8, 8]
    filters = [e.details for e in entries if e.action == "consent.filter"]
    assert [(d["allowed"], d["excluded"]) for d in filters[:2]] == [(2, 6), (1, 7)]
    assert filters[1]["snapshot_version"] == v1 + 1
    assert node.audit.verify().ok
    # the cache holds one row per consent and purpose, the latest version only
    with node.db.reader() as cur:
        rows = cur.execute("SELECT status FROM consent_cache WHERE consent_id = ?",
                           [ids["B"]]).fetchall()
    assert rows == [("withdrawn",)]


def test_stale_snapshot_and_unreachable_portal_refuse(live_portal, keycloak, node):
    seed_registry(live_portal, keycloak)
    client = node_client(keycloak, live_portal.url)
    max_age = node.config.consent_max_age_s
    f = SnapshotConsentFilter(node, client=client)
    assert allowed_keys(f.filter_dataset("ds-in", "ai_training")) == "AB"

    live_portal.stop()  # the portal is gone

    # within the maximum age the cached snapshot is used, and that is audited
    soon = SnapshotConsentFilter(node, client=client, clock=lambda: time.time() + 60)
    decision = soon.filter_dataset("ds-in", "ai_training")
    assert allowed_keys(decision) == "AB" and soon.last_state.source == "cache"
    assert "(cache)" in decision.basis
    failed = [e for e in node.audit.entries() if e.action == "consent.sync_failed"]
    assert failed and "cannot reach" in failed[-1].details["problem"]

    # beyond it the node refuses, names why, and audits the refusal
    late = SnapshotConsentFilter(node, client=client,
                                 clock=lambda: time.time() + max_age + 60)
    with pytest.raises(ConsentUnavailable) as err:
        late.filter_dataset("ds-in", "ai_training")
    assert err.value.code == "consent-stale"
    assert "old" in err.value.reason and "cannot be reached" in err.value.reason
    refused = [e for e in node.audit.entries() if e.action == "consent.refused"]
    assert refused[-1].details["code"] == "consent-stale"
    # opt-out is no excuse: without a fresh snapshot nobody's withdrawal can be known
    with pytest.raises(ConsentUnavailable):
        late.filter_dataset("ds-out", "ai_training")


def test_a_node_that_never_pulled_refuses_when_the_portal_is_down(keycloak, tmp_path):
    home = make_node(tmp_path / "node-b", "http://127.0.0.1:9", hospital="hospital-b")
    add_dataset(home, "ds", "opt-out", [P["A"]])
    f = SnapshotConsentFilter(home, client=node_client(keycloak, "http://127.0.0.1:9",
                                                       "hospital-b"))
    with pytest.raises(ConsentUnavailable) as err:
        f.filter_dataset("ds", "statistics")
    assert err.value.code == "consent-unavailable"
    assert node_consent.status(home)["fresh"] is False
    home.db.close()


def test_filter_by_home_path_opens_and_closes_the_store(live_portal, keycloak, node):
    seed_registry(live_portal, keycloak)
    path = node.path
    f = SnapshotConsentFilter(path, client=node_client(keycloak, live_portal.url))
    decision = f.filter(dataset_id="ds-out", regime="opt-out", purpose="ai_training",
                        pseudonyms=[P["A"], P["C"], P["C"], P["D"]])
    assert decision.allowed == [P["A"], P["D"]] and decision.excluded == 1
    status = node_consent.status(node)
    assert status["fresh"] and status["consents"] == 8


def test_a_delta_replaces_rows_found_by_key_even_after_a_rekey(tmp_path):
    """A delta finds the rows it replaces by `consent_key`; a store whose keys were made
    by a different md5_number() (an upgraded DuckDB) is re-keyed when it is opened, so
    a withdrawal still replaces the consent's active rows."""
    import pyarrow as pa

    def table(status: str, version: int) -> pa.Table:
        return pa.table({"consent_id": ["cns-a", "cns-b"], "subject": [P["A"], P["B"]],
                         "organisation": ["org", "org"],
                         "purposes": [["scientific_research", "ai_training"]] * 2,
                         "status": [status, "active"], "valid_from": pa.array([None, None],
                                                                             pa.date32()),
                         "valid_to": pa.array([None, None], pa.date32()),
                         "version": [version, 1]})

    home = make_node(tmp_path / "node", "http://127.0.0.1:9")
    node_consent.apply_snapshot(home, table("active", 1), kind="full", since=0, version=2,
                                portal_url="x", now=time.time())
    with home.db.transaction() as cur:  # as if another md5_number() had keyed the rows
        cur.execute("UPDATE consent_active SET consent_key = 0")
        cur.execute("UPDATE consent_key_probe SET probe = 0")
    home.close()
    home = type(home)(home.path)
    state = node_consent.apply_snapshot(home, table("withdrawn", 2).slice(0, 1), kind="delta",
                                        since=2, version=3, portal_url="x", now=time.time())
    assert state.consents == 2
    with home.db.reader() as cur:
        rows = cur.execute("SELECT consent_id, status, count(*) FROM consent_cache"
                           " GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("cns-a", "withdrawn", 2), ("cns-b", "active", 2)]
    home.close()
