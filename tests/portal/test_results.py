"""Run results over the portal's API: the per-run credential is sealed to the SuperLink,
good for one run, one Flower run, one report, and only while the run is active.

The real portal app on a real DuckDB file (Keycloak is not involved: the results routes
take the run's credential, not a user's token)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from access_control.run_credentials import CredentialError, ReportKey, seal
from tests.fixtures.portal import ResultsPortal
from tre.portal.context import utcnow
from tre.portal.store import runs as run_store

pytestmark = pytest.mark.unit


@pytest.fixture
def setup(tmp_path: Path):
    key = ReportKey.load_or_create(tmp_path / "superlink")
    server = ResultsPortal(tmp_path / "portal", report_key=key.public)
    with TestClient(server.app) as client:
        yield server, key, client


def _headers(credential: str, flower_run: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "X-Flower-Run-Id": str(flower_run)}


def test_only_the_superlinks_key_opens_a_credential(tmp_path: Path) -> None:
    key, other = ReportKey.load_or_create(tmp_path / "a"), ReportKey.load_or_create(tmp_path / "b")
    sealed = seal("secret", key.public)
    assert key.open(sealed) == "secret"
    with pytest.raises(CredentialError):
        other.open(sealed)
    with pytest.raises(CredentialError, match="no report credential"):
        key.open("")
    assert (tmp_path / "a" / "report-key.pub").read_text().strip() == key.public
    assert ReportKey.load_or_create(tmp_path / "a").public == key.public  # kept, not remade


def test_a_run_reports_once_from_its_own_flower_run(setup) -> None:
    server, key, client = setup
    sealed, folder = server.record("run", {"rounds": 1})
    credential = key.open(sealed)
    ok = _headers(credential, 7)
    assert client.post("/v1/results/events", json={"event": "start"}, headers=ok
                       ).status_code == 204
    # the first Flower run to use it owns it: a copy resubmitted as another run is refused
    r = client.post("/v1/results/events", json={"event": "start"}, headers=_headers(credential, 8))
    assert r.status_code == 403 and "Flower run 7" in r.json()["detail"]
    assert client.put("/v1/results/model", content=b"weights", headers=ok).status_code == 204
    report = {"status": "completed", "rounds": [{"round": 1, "nodes": [], "evaluate": None}]}
    assert client.put("/v1/results/report", json=report, headers=ok).status_code == 204
    assert client.put("/v1/results/report", json=report, headers=ok).status_code == 409
    assert client.put("/v1/results/model", content=b"other", headers=ok).status_code == 409
    stored = json.loads((folder / "report.json").read_text())
    assert stored["model_file"] == "model.pt" and stored["plot_file"] == "report.png"
    assert (folder / "model.pt").read_bytes() == b"weights" and (folder / "report.png").exists()
    assert [json.loads(line)["event"] for line in
            (folder / "progress.jsonl").read_text().splitlines()] == ["start"]
    audit = [e for e in server.portal.audit.entries() if e.action == "run.results"]
    assert [e.details["flower_run_id"] for e in audit] == [7]
    # once the run is no longer active, its credential takes nothing more
    with server.portal.db.transaction() as cur:
        run_store.update_run(cur, folder.name, utcnow(), state="completed")
    assert client.post("/v1/results/events", json={"event": "x"}, headers=ok).status_code == 409


def test_bad_credentials_change_nothing(setup) -> None:
    server, key, client = setup
    sealed, folder = server.record("feasibility")
    credential = key.open(sealed)
    for headers, status in (({}, 401), (_headers("forged", 3), 401),
                            ({"Authorization": f"Bearer {credential}"}, 422),
                            (_headers(credential, 0), 422)):
        r = client.put("/v1/results/report", json={"answers": []}, headers=headers)
        assert r.status_code == status, (headers, r.text)
    assert not folder.exists()
    # a feasibility query sends a report and no model
    assert client.put("/v1/results/model", content=b"x", headers=_headers(credential, 3)
                      ).status_code == 409
    assert client.put("/v1/results/report", json={"answers": []},
                      headers=_headers(credential, 3)).status_code == 204
    assert json.loads((folder / "report.json").read_text()) == {"answers": []}
