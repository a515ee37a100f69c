"""A delta lands in the node's consent overlay and is folded into the base tables now and
then (`federation.node.consent.compact`): through any sequence of deltas, full snapshots
and compactions, the cache holds each consent's latest version only, and every decision
equals the consent rules applied to those latest versions."""

from __future__ import annotations

import random
import time
from datetime import date, timedelta

import pyarrow as pa

from federation.node import consent as node_consent
from tests.consent.conftest import make_node, pseudonym
from tre.core.schemas import ConsentRegime, Purpose

SUBJECTS = [pseudonym(f"overlay-{i}") for i in range(12)]
PURPOSES = [Purpose.SCIENTIFIC_RESEARCH, Purpose.AI_TRAINING, Purpose.STATISTICS]
TODAY = date(2026, 11, 30)


def _table(consents: dict[str, dict]) -> pa.Table:
    rows = list(consents.items())
    return pa.table({
        "consent_id": [cid for cid, _ in rows], "subject": [c["subject"] for _, c in rows],
        "organisation": ["org"] * len(rows), "purposes": [c["purposes"] for _, c in rows],
        "status": [c["status"] for _, c in rows],
        "valid_from": pa.array([c["valid_from"] for _, c in rows], pa.date32()),
        "valid_to": pa.array([c["valid_to"] for _, c in rows], pa.date32()),
        "version": [c["version"] for _, c in rows]})


def _random_consent(rng: random.Random, version: int) -> dict:
    start = TODAY + timedelta(days=rng.randint(-20, 20)) if rng.random() < 0.3 else None
    return {"subject": rng.choice(SUBJECTS),
            "purposes": [p.value for p in rng.sample(PURPOSES, rng.randint(1, 2))],
            "status": "withdrawn" if rng.random() < 0.3 else "active",
            "valid_from": start, "valid_to": start + timedelta(days=10) if start else None,
            "version": version}


def _expected(latest: dict[str, dict], regime: ConsentRegime, purpose: Purpose) -> list[str]:
    """The module docstring's rules, written out over the latest version of each consent."""
    covering = {p.value for p in purpose.covered_by()}
    relevant = [c for c in latest.values() if covering & set(c["purposes"])]
    withdrawn = {c["subject"] for c in relevant if c["status"] == "withdrawn"}
    consented = {c["subject"] for c in relevant if c["status"] == "active"
                 and (c["valid_from"] is None or c["valid_from"] <= TODAY)
                 and (c["valid_to"] is None or c["valid_to"] >= TODAY)}
    if regime is ConsentRegime.OPT_OUT:
        return [s for s in SUBJECTS if s not in withdrawn]
    return [s for s in SUBJECTS if s in consented and s not in withdrawn]


def test_deltas_full_snapshots_and_compaction_keep_the_latest_version(tmp_path, monkeypatch):
    monkeypatch.setattr(node_consent, "OVERLAY_MAX_CONSENTS", 6)  # compact every few deltas
    rng = random.Random(17)
    home = make_node(tmp_path / "node", "http://127.0.0.1:9")
    latest = {f"cns-{i}": _random_consent(rng, 1) for i in range(20)}
    node_consent.apply_snapshot(home, _table(latest), kind="full", since=0, version=1,
                                portal_url="x", now=time.time())
    compactions = overlays = 0
    for version in range(2, 40):
        if version % 13 == 0:  # now and then the portal sends everything again
            latest = {cid: {**c, "version": version} for cid, c in latest.items()}
            node_consent.apply_snapshot(home, _table(latest), kind="full", since=version - 1,
                                        version=version, portal_url="x", now=time.time())
        else:
            ids = rng.sample(sorted(latest), rng.randint(1, 3)) + (
                [f"cns-new-{version}"] if rng.random() < 0.3 else [])
            delta = {cid: _random_consent(rng, version) for cid in ids}
            latest.update(delta)
            state = node_consent.apply_snapshot(home, _table(delta), kind="delta",
                                                since=version - 1, version=version,
                                                portal_url="x", now=time.time())
            assert state.consents == len(latest)  # counted without the portal's total
        with home.db.reader() as cur:
            overlay = cur.execute("SELECT count(*) FROM consent_overlay").fetchall()[0][0]
            cached = sorted(cur.execute(
                "SELECT consent_id, purpose, status, version FROM consent_cache").fetchall())
        overlays += overlay > 0
        compactions += overlay == 0 and version % 13 != 0
        assert cached == sorted((cid, p, c["status"], c["version"])
                                for cid, c in latest.items() for p in c["purposes"])
        for regime in ConsentRegime:
            for purpose in PURPOSES:
                allowed, excluded = node_consent.decide(
                    home, regime=regime, purpose=purpose, pseudonyms=SUBJECTS, today=TODAY)
                assert allowed == _expected(latest, regime, purpose), (version, regime, purpose)
                assert excluded == len(SUBJECTS) - len(allowed)
    assert overlays and compactions  # both paths were taken
    home.close()


def test_a_full_snapshot_clears_the_overlay(tmp_path):
    rng = random.Random(3)
    home = make_node(tmp_path / "node", "http://127.0.0.1:9")
    first = {"cns-a": _random_consent(rng, 1)}
    node_consent.apply_snapshot(home, _table(first), kind="full", since=0, version=1,
                                portal_url="x", now=time.time())
    node_consent.apply_snapshot(home, _table({"cns-a": {**first["cns-a"], "version": 2,
                                                        "status": "withdrawn"}}),
                                kind="delta", since=1, version=2, portal_url="x",
                                now=time.time())
    node_consent.apply_snapshot(home, _table({"cns-b": _random_consent(rng, 3)}),
                                kind="full", since=2, version=3, portal_url="x",
                                now=time.time())
    with home.db.reader() as cur:
        assert cur.execute("SELECT count(*) FROM consent_overlay").fetchall()[0][0] == 0
        assert cur.execute("SELECT count(*) FROM consent_replaced").fetchall()[0][0] == 0
        assert {r[0] for r in cur.execute("SELECT consent_id FROM consent_cache").fetchall()} \
            == {"cns-b"}
    home.close()
