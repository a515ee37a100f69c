"""The model card: built when a run's output enters the airlock, every figure the run
report's (counts under the disclosure rule), shown to output checkers, released and
downloaded with the model, hidden from researchers who do not hold the permit."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from scipy.stats import binomtest

from access_control.tokens import Principal
from tests.fixtures.portal import approved_permit, bearer, request_body
from tre.core.disclosure import redisclose
from tre.portal.services import airlock, runs
from tre.portal.web.oidc import TokenSet
from tre.portal.web.session import SESSION_COOKIE

pytestmark = pytest.mark.integration

MODEL = b"\x80weights of the final model"
# The shape of a real report (the demo's run, federation/apps/server.py), two hospitals;
# hospital-b missed round 1. Accuracy × examples is whole so that the Wilson interval
# can be checked against scipy's.
HOSPITAL_A = {"node_id": 143, "status": "trained", "hospital_id": "hospital-a",
              "dataset_id": "pneumonia", "epsilon_target": 8.0, "delta": 1e-05,
              "noise_multiplier": 0.72418212890625, "steps": 15, "num_examples": 940,
              "train_seconds": 2.8, "excluded_by_consent": 15}
REPORT = {
    "run_id": 6215605026232900339,
    "permit": {"permit_id": "pmt_x", "app_hash": "0" * 64,
               "hospitals": ["hospital-a", "hospital-b"], "min_hospitals": 1},
    "params": {"model": "cnn-gn", "image-size": 28, "in-channels": 1, "num-classes": 2,
               "rounds": 2, "local-epochs": 1, "batch-size": 64, "lr": 0.5, "momentum": 0.9,
               "strategy": "fedavg", "proximal-mu": 0.01, "secagg": False,
               "max-grad-norm": 1.0, "target-epsilon": 0.0, "delta": 0.0,
               "accountant": "rdp", "dataset-id": "", "grad-sample-mode": "ew", "seed": 0,
               "min-nodes": 1, "round-timeout": 1800,
               "node-map": "{\"hospital-a\": 143, \"hospital-b\": 109}"},
    "started_at": 1795960807.5884418,
    "rounds": [
        {"round": 1, "seconds": 30.9, "nodes": [
            {**HOSPITAL_A, "epsilon": 5.1},
            {"node_id": 109, "hospital_id": "hospital-b", "status": "no-reply",
             "reason": "node unavailable: it stopped sending heartbeats (node down?)"}],
         "train": {"num-examples": 940, "epsilon-max": 5.1},
         "evaluate": {"loss": 2.1, "accuracy": 0.7, "auc": 0.81, "num-examples": 300}},
        {"round": 2, "seconds": 31.2, "nodes": [
            {**HOSPITAL_A, "epsilon": 7.996770038506612},
            {"node_id": 109, "status": "trained", "hospital_id": "hospital-b",
             "dataset_id": "pneumonia", "epsilon": 6.25, "epsilon_target": 8.0,
             "delta": 1e-05, "noise_multiplier": 0.637664794921875, "steps": 32,
             "num_examples": 2030, "train_seconds": 3.2, "excluded_by_consent": "<10"}],
         "train": {"num-examples": 2970, "epsilon-max": 7.996770038506612},
         "evaluate": {"loss": 1.842888, "accuracy": 0.76, "auc": 0.882352,
                      "auc-se": 0.0141, "num-examples": 625}},
    ],
    "status": "completed",
    "node_selection": {"mode": "enrolled", "node_map": {"hospital-a": 143,
                                                        "hospital-b": 109}, "ignored": []},
    "privacy_audits": [
        {"node_id": 143, "hospital_id": "hospital-a", "mia_advantage": 0.050458715596330306,
         "mia_ci_low": 0.01834862385321101, "mia_ci_high": 0.12844036697247707,
         "mia_chance_advantage": 0.04687614678899084, "mia_chance_p95": 0.09197247706421997,
         "mia_p_value": 0.4035964035964036, "mia_attack": "loss", "records": 218.0},
        {"node_id": 109, "hospital_id": "hospital-b", "mia_advantage": 0.06882591093117407,
         "mia_ci_low": 0.054655870445344146, "mia_ci_high": 0.12353238866396762,
         "mia_chance_advantage": 0.03659919028340082, "mia_chance_p95": 0.06477732793522273,
         "mia_p_value": 0.03496503496503497, "mia_attack": "confidence", "records": 494.0},
    ],
    "decision_threshold": {"threshold": 0.85, "accuracy": 0.8, "balanced_accuracy": 0.7712,
                           "errors": [], "rule": "highest balanced accuracy over the "
                                                 "nodes' val splits pooled"},
    "releases": [{"node_id": 143, "released": 0.0, "charged": 7.996770038506612},
                 {"node_id": 109, "released": 1.75, "charged": 6.25}],
    "finished_at": 1795960943.4727235, "seconds": 135.88,
    "epsilon_per_node": {"hospital-a": 7.996770038506612, "hospital-b": 6.25},
    "model_file": "model.pt", "plot_file": "report.png",
}


@pytest.fixture
def permit(api, keycloak):
    return approved_permit(api, keycloak)


def enter_airlock(api, permit, report=REPORT):
    """What the runs service does when a run completes (`runs._to_airlock`)."""
    files = {"model.pt": MODEL, "report.json": json.dumps(report).encode()}
    return airlock.submit_output(api.app.state.portal, run_id="run_card", permit=permit,
                                 files=files, attestations=runs.attestations(report))


def card_of(api, keycloak, oid, user="alice"):
    return api.get(f"/v1/outputs/{oid}/card", headers=bearer(keycloak.token(user)))


def last_trained(report):
    return {n["hospital_id"]: n for r in report["rounds"] for n in r["nodes"]
            if n["status"] == "trained"}


def numbers(doc):
    """Every number of a document as the airlock's checks read it."""
    return [number for _, number, _ in airlock.classify("doc", doc)]


def test_the_card_exists_once_the_output_enters_the_airlock_and_its_numbers_are_the_reports(
        api, keycloak, permit):
    out = enter_airlock(api, permit)
    assert all(c["passed"] for c in out["checks"]), out["checks"]  # the checks read the card
    listed = {f["name"]: f for f in out["files"]}
    assert "model_card.json" in listed
    resp = card_of(api, keycloak, out["id"])
    assert resp.status_code == 200, resp.text
    card = resp.json()
    assert hashlib.sha256(json.dumps(card, indent=2, ensure_ascii=False).encode()
                          ).hexdigest() == listed["model_card.json"]["sha256"]

    # intended use and permit: the request and the permit behind the run
    asked = request_body()
    assert card["intended_use"] == {
        "title": asked["title"], "purpose": asked["purpose"],
        "research_question": asked["research_question"],
        "expected_outputs": asked["expected_outputs"], "organisation": asked["organisation"],
        "researcher": "alice"}
    assert card["permit"]["permit_id"] == permit["id"]
    assert card["permit"]["request_id"] == permit["request_id"]
    assert card["model"] == {"file": "model.pt", "sha256": hashlib.sha256(MODEL).hexdigest(),
                             "architecture": "cnn-gn", "app_id": permit["claims"]["app_id"],
                             "app_hash": permit["claims"]["app_hash"]}

    # datasets and hospitals: each node's last trained round, counts disclosed
    latest = last_trained(REPORT)
    assert [(d["hospital_id"], d["dataset_id"]) for d in card["datasets"]] == [
        (d["node_id"], d["dataset_id"]) for d in permit["claims"]["datasets"]]
    for d in card["datasets"]:
        node = latest[d["hospital_id"]]
        assert d["train_examples"] == redisclose(node["num_examples"]) == node["num_examples"]
        assert d["excluded_by_consent"] == redisclose(node["excluded_by_consent"])
    assert {d["hospital_id"]: d["excluded_by_consent"] for d in card["datasets"]} == {
        "hospital-a": 15, "hospital-b": "<10"}

    # ε and δ per node, the accountant, the permit's caps
    caps = {d["node_id"]: d for d in permit["claims"]["datasets"]}
    assert card["privacy"]["accountant"] == REPORT["params"]["accountant"] == "rdp"
    assert [n["hospital_id"] for n in card["privacy"]["nodes"]] == ["hospital-a", "hospital-b"]
    for n in card["privacy"]["nodes"]:
        node = latest[n["hospital_id"]]
        for key in ("epsilon", "delta", "noise_multiplier", "steps", "dataset_id"):
            assert n[key] == node[key], key
        assert n["epsilon"] == REPORT["epsilon_per_node"][n["hospital_id"]]
        assert n["accountant"] == "rdp"
        assert (n["epsilon_cap"], n["delta_cap"]) == (caps[n["hospital_id"]]["epsilon_cap"],
                                                      caps[n["hospital_id"]]["delta_cap"])

    # metrics of the final round's federated evaluation, with their intervals
    final = REPORT["rounds"][-1]["evaluate"]
    metrics = card["metrics"]
    assert metrics["test_examples"] == final["num-examples"] == 625
    assert (metrics["auc"]["value"], metrics["accuracy"]["value"], metrics["loss"]["value"]
            ) == (final["auc"], final["accuracy"], final["loss"])
    assert metrics["accuracy"]["interval_method"] == "wilson"
    reference = binomtest(round(0.76 * 625), 625).proportion_ci(0.95, method="wilson")
    assert metrics["accuracy"]["ci95"] == pytest.approx([reference.low, reference.high],
                                                        abs=1e-12)
    # the accuracy at the threshold the nodes calibrated, with its interval on the same
    # test examples
    calibrated, reported = metrics["accuracy_calibrated"], REPORT["decision_threshold"]
    assert (calibrated["value"], calibrated["threshold"], calibrated["balanced_accuracy"],
            calibrated["rule"]) == (reported["accuracy"], reported["threshold"],
                                    reported["balanced_accuracy"], reported["rule"])
    reference = binomtest(round(0.8 * 625), 625).proportion_ci(0.95, method="wilson")
    assert calibrated["ci95"] == pytest.approx([reference.low, reference.high], abs=1e-12)
    assert any("decision threshold picked on the hospitals' validation splits" in item
               for item in card["limitations"])
    assert metrics["auc"]["standard_error"] == final["auc-se"]
    assert metrics["auc"]["ci95"] == pytest.approx(
        [final["auc"] - 1.96 * final["auc-se"], final["auc"] + 1.96 * final["auc-se"]],
        abs=1e-4)

    # the membership-inference audit, as each node reported it
    audits = {a["hospital_id"]: a for a in REPORT["privacy_audits"]}
    for a in card["privacy_audits"]:
        reported = audits[a["hospital_id"]]
        for key in ("mia_attack", "mia_advantage", "mia_ci_low", "mia_ci_high",
                    "mia_chance_advantage", "mia_chance_p95", "mia_p_value"):
            assert a[key] == reported[key], key
        assert a["records"] == redisclose(int(reported["records"]))
    assert [a["records"] for a in card["privacy_audits"]] == [220, 495]

    assert card["params"] == {k: v for k, v in REPORT["params"].items()
                              if k not in ("node-map", "round-timeout")}
    assert any("hospital-b did not train (no-reply" in item for item in card["limitations"])

    # no number on the card comes from anywhere else: the report's, a disclosed count of
    # it, a cap of the permit, or the two ends of the Wilson and Hanley–McNeil intervals
    allowed = set(numbers(REPORT)) | {float(redisclose(int(v))) for v in numbers(REPORT)
                                      if v.is_integer() and v >= 10}
    allowed |= {float(d[k]) for d in permit["claims"]["datasets"]
                for k in ("epsilon_cap", "delta_cap")}
    allowed |= set(metrics["accuracy"]["ci95"]) | set(metrics["auc"]["ci95"])
    allowed |= set(calibrated["ci95"])
    invented = [v for v in numbers(card) if v not in allowed]
    assert not invented, invented


def test_counts_under_ten_are_suppressed_and_the_card_is_checked_like_the_rest(
        api, keycloak, permit):
    report = copy.deepcopy(REPORT)
    report["privacy_audits"][1].update(records=7.0, mia_advantage=None, mia_ci_low=None,
                                       mia_ci_high=None)
    report["rounds"][-1]["nodes"][0]["excluded_by_consent"] = 0
    out = enter_airlock(api, permit, report)
    card = card_of(api, keycloak, out["id"]).json()
    assert [a["records"] for a in card["privacy_audits"]] == [220, "<10"]
    assert card["datasets"][0]["excluded_by_consent"] == "<10"
    assert any("hospital-b: no membership-inference figure" in item
               for item in card["limitations"])
    small = {c["check"]: c for c in out["checks"]}["small_counts"]
    assert not small["passed"]  # the report's exact 7 blocks the release ...
    assert "report.json.privacy_audits.#.records = 7" in small["detail"]
    assert "model_card.json" not in small["detail"]  # ... the card's "<10" does not


def test_a_perfect_accuracy_on_the_card_is_a_statistic_not_a_count_of_one():
    """A small, easy test split can give accuracy 1.0 and a Wilson interval ending at 1.0:
    read as counts of 1, they would block every such release."""
    card = {"metrics": {"test_examples": 40, "auc": {"value": 1.0, "ci95": [0.97, 1.0]},
                        "accuracy": {"value": 1.0, "ci95": [0.91, 1.0]},
                        "accuracy_calibrated": {"value": 1.0, "ci95": [0.91, 1.0],
                                                "threshold": 0.5, "balanced_accuracy": 1.0},
                        "loss": {"value": 0.0}}}
    kinds = {path: kind for path, _, kind in airlock.classify("model_card.json", card)}
    assert kinds.pop("model_card.json.metrics.test_examples") == "count"
    assert set(kinds.values()) == {"statistic"}, kinds
    assert airlock.check_small_counts({"model_card.json": json.dumps(card).encode()},
                                      k=10)["passed"]


def test_a_run_cannot_bring_its_own_card_and_an_output_without_report_has_none(
        api, keycloak, permit):
    with pytest.raises(airlock.Invalid, match="written by the portal"):
        airlock.submit_output(api.app.state.portal, run_id="r", permit=permit,
                              files={"model.pt": MODEL, "model_card.json": b"{}"},
                              attestations=[])
    out = airlock.submit_output(api.app.state.portal, run_id="r", permit=permit,
                                files={"model.pt": MODEL}, attestations=[])
    resp = card_of(api, keycloak, out["id"])
    assert resp.status_code == 404 and "no model card" in resp.json()["detail"]


def web_client(api, keycloak, user: str, lang: str = "en"):
    """A browser's session for `user`, signed in with a real Keycloak token (what the
    OIDC login leaves; the login itself is the browser tests' subject)."""
    from fastapi.testclient import TestClient

    auth = api.app.state.web_auth
    token = keycloak.token(user)
    principal: Principal = api.app.state.token_validator.validate(token)
    sess = auth.store.create(authenticated=True)
    auth.sign_in(sess, TokenSet(token, None, None, float(principal.claims["exp"]), None),
                 principal)
    client = TestClient(api.app, headers={"Accept-Language": lang})
    client.cookies.set(SESSION_COOKIE, auth.codec.dump(sess.id))
    return client


def test_output_checkers_see_the_card_on_their_review_page(api, keycloak, permit):
    out = enter_airlock(api, permit)
    card = card_of(api, keycloak, out["id"], "chk1").json()
    page = web_client(api, keycloak, "chk1").get(f"/outputs/{out['id']}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="model-card"' in html and 'id="output-decision"' in html
    assert f"{card['metrics']['accuracy']['ci95'][0]:.3f}" in html
    calibrated = card["metrics"]["accuracy_calibrated"]
    assert 'id="card-accuracy-calibrated"' in html
    assert f"{calibrated['value']:.3f}" in html and f"{calibrated['ci95'][1]:.3f}" in html
    assert card["intended_use"]["research_question"] in html
    for n in card["privacy"]["nodes"]:
        assert f"{n['epsilon']:.3f}" in html
    assert "&lt;10" in html  # hospital-b's consent exclusions, suppressed
    french = web_client(api, keycloak, "chk2", "fr").get(f"/outputs/{out['id']}/card")
    assert french.status_code == 200 and "Fiche du modèle" in french.text
    assert "Audit d&#39;inférence d&#39;appartenance" in french.text


def test_the_released_bundle_holds_the_card_and_other_researchers_see_neither(
        api, keycloak, permit):
    out = enter_airlock(api, permit)
    oid = out["id"]
    card = card_of(api, keycloak, oid).json()
    for checker in ("chk1", "chk2"):
        resp = api.post(f"/v1/outputs/{oid}/reviews", headers=bearer(keycloak.token(checker)),
                        json={"decision": "approve", "rationale": f"{checker}: card checked"})
        assert resp.status_code == 200, resp.text
    alice = bearer(keycloak.token("alice"))
    got = api.get(f"/v1/outputs/{oid}/files/model_card.json", headers=alice)
    assert got.status_code == 200 and got.json() == card
    assert api.get(f"/v1/outputs/{oid}/files/model.pt", headers=alice).content == MODEL

    bob = bearer(keycloak.token("bob"))
    assert api.get(f"/v1/outputs/{oid}", headers=bob).status_code == 404
    assert api.get(f"/v1/outputs/{oid}/card", headers=bob).status_code == 404
    assert api.get(f"/v1/outputs/{oid}/files/model_card.json", headers=bob).status_code == 403
    assert web_client(api, keycloak, "bob").get(f"/outputs/{oid}/card").status_code == 404

    log = api.get("/v1/audit", params={"limit": 1000},
                  headers=bearer(keycloak.token("auditor1"))).json()["entries"]
    submitted = next(e for e in log if e["action"] == "output.submit" and e["object_id"] == oid)
    sha = hashlib.sha256(got.content).hexdigest()
    assert submitted["details"]["files"]["model_card.json"] == sha
