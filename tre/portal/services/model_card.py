"""The model card of a trained model, built when the run's output enters the airlock.

A pure function of what the portal already holds: the run's report (as the ServerApp
sent it), the permit and the access request behind it. Every figure on the card is one
of the report's, with two exceptions, both derived: counts pass the disclosure rule
again (`tre.core.disclosure.redisclose`: below k shown as "<k", others rounded to 5;
idempotent on what nodes already disclosed), and the accuracy gets a Wilson interval.

Which intervals, and why: the report holds, for the federated evaluation of the last
round, the accuracy and the number of test examples, which is all a Wilson score
interval needs (a binomial proportion; unlike the Wald interval it keeps its coverage
near 0 and 1 and at small n). A bootstrap AUC interval would need per-record scores,
which never leave a node; instead each node sends its AUC's Hanley–McNeil standard
error (from its AUC and its own class counts, rounded like the AUC), the ServerApp
combines them for the example-weighted mean of the nodes' AUCs, and the card gives
AUC ± 1.96 SE (normal approximation, nodes independent). Without a standard error
(multi-class AUC, or a report from before nodes sent one) the card gives no AUC
interval and says why. The membership-inference interval is the node's own (a
bootstrap over its records), copied as reported.

The card is stored as a file of the output, so the airlock's automated checks read it
like everything else that leaves, and it is downloaded with the model.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from federation.launch.report import REPORT
from tre.core.disclosure import DEFAULT_BASE, redisclose

CARD = "model_card.json"
FORMAT = "tre-model-card/1"
Z95 = 1.959963984540054
# run parameters that describe the run, not the model (the node map, timeouts)
HIDDEN_PARAMS = ("node-map", "round-timeout", "permit")
NO_AUC_INTERVAL = ("the nodes reported no standard error of their AUC (a multi-class "
                   "AUC, or a run before they did), and per-record scores, which a "
                   "bootstrap would need, never leave a node")


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed on n trials."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _count(value: Any, k: int) -> int | str | None:
    """A count as the card may show it (None when the report has none)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return redisclose(value, k=k)


def last_trained(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each hospital's last trained round: its ε then is what the run spent there."""
    latest: dict[str, dict[str, Any]] = {}
    for rnd in report.get("rounds", []):
        for node in rnd.get("nodes", []):
            if node.get("status") == "trained" and node.get("hospital_id"):
                latest[node["hospital_id"]] = node
    return latest


def _final_evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """The last round's evaluation, of the model released; none if that round has none
    (an earlier round's figures are those of another model)."""
    rounds = report.get("rounds") or [{}]
    return rounds[-1].get("evaluate") or {}


def _auc(evaluation: dict[str, Any]) -> dict[str, Any]:
    auc, se = evaluation.get("auc"), evaluation.get("auc-se")
    if auc is None or se is None or not (math.isfinite(auc) and math.isfinite(se)):
        return {"value": auc, "ci95": None, "interval_method": None,
                "no_interval_because": NO_AUC_INTERVAL}
    return {"value": auc, "standard_error": se,
            "ci95": [max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)],
            "interval_method": "hanley-mcneil per node, combined for the weighted mean"}


def _accuracy(accuracy: float | None, shown: int | str | None) -> dict[str, Any]:
    """An accuracy with its Wilson interval over the disclosed test examples."""
    acc: dict[str, Any] = {"value": accuracy, "ci95": None, "interval_method": None}
    if accuracy is not None and math.isfinite(accuracy) and isinstance(shown, int) \
            and shown > 0:
        acc.update(ci95=list(wilson(float(accuracy), shown)), interval_method="wilson")
    return acc


def _calibrated(calibration: dict[str, Any] | None, shown: int | str | None
                ) -> dict[str, Any] | None:
    """The accuracy at the decision threshold the nodes calibrated (the report's
    `decision_threshold`: picked on their val splits pooled, scored on their test splits
    pooled); None when the run calibrated none (more than two classes)."""
    accuracy = (calibration or {}).get("accuracy")
    if accuracy is None or not math.isfinite(accuracy):
        return None
    return {**_accuracy(accuracy, shown),
            "threshold": calibration.get("threshold"),
            "balanced_accuracy": calibration.get("balanced_accuracy"),
            "rule": calibration.get("rule")}


def _metrics(evaluation: dict[str, Any], calibration: dict[str, Any] | None, k: int
             ) -> dict[str, Any]:
    shown = _count(evaluation.get("num-examples"), k)
    return {
        "evaluated_on": "the consented test splits of the hospitals, federated "
                        "evaluation of the final model (example-weighted mean of each "
                        "node's figures)",
        "test_examples": shown,
        "auc": _auc(evaluation),
        "accuracy": _accuracy(evaluation.get("accuracy"), shown),
        "accuracy_calibrated": _calibrated(calibration, shown),
        "loss": {"value": evaluation.get("loss")},
    }


def _limitations(report: dict[str, Any], hospitals: list[str], audits: list[dict[str, Any]],
                 purpose: str) -> list[str]:
    out = [
        f"Use only for the permit's purpose ({purpose}). Not validated for clinical "
        "decisions about individual patients.",
        "Evaluated only on the consented test splits of " + ", ".join(hospitals)
        + "; performance on other populations, devices or sites is unknown.",
        "Accuracy is given for the most probable class and at the decision threshold "
        "picked on the hospitals' validation splits pooled; a site that uses the model "
        "should check that threshold on its own patients."
        if _calibrated(report.get("decision_threshold"), None) else
        "Accuracy is that of the most probable class: no decision threshold was "
        "calibrated, so under label skew it can lag the AUC.",
        "The accuracy interval (Wilson, 95 %) treats the test examples as independent "
        "draws and counts them as disclosed (each node's count perturbed and rounded to 5).",
        "The AUC interval (Hanley–McNeil, 95 %) is a normal approximation over the "
        "nodes' test splits as independent samples: it covers the test sample, not "
        "the variation between training runs."
        if _auc(_final_evaluation(report))["ci95"] else
        f"The AUC has no interval: {NO_AUC_INTERVAL}.",
        "(ε, δ) is sample-level differential privacy per node dataset: a patient with "
        "several records is protected less than the figure says.",
        "The membership-inference audit is empirical (loss and confidence attacks on "
        "each node's own records): it bounds what these attacks achieve, not every "
        "attack.",
    ]
    for rnd in report.get("rounds", []):
        for node in rnd.get("nodes", []):
            if node.get("status") != "trained":
                who = node.get("hospital_id") or node.get("node_id")
                out.append(f"Round {rnd.get('round')}: {who} did not train "
                           f"({node.get('status')}: {node.get('reason')}).")
    if not _final_evaluation(report):
        out.append("The final model has no federated evaluation: no node returned one.")
    for a in audits:
        if a["mia_advantage"] is None:
            out.append(f"{a['hospital_id']}: no membership-inference figure "
                       f"({a.get('error') or 'too few records for an audit'}).")
    return out


def build(report: dict[str, Any], permit: dict[str, Any], request: dict[str, Any], *,
          run_id: str, model_file: str | None, model_sha256: str | None, k: int
          ) -> dict[str, Any]:
    """The card of one run's model (pure: the same inputs give the same card)."""
    claims = permit["claims"]
    latest = last_trained(report)
    accountant = report.get("params", {}).get("accountant")
    caps = {(d["node_id"], d["dataset_id"]): d for d in claims["datasets"]}
    datasets = []
    for d in claims["datasets"]:
        node = latest.get(d["node_id"], {})
        trained = node.get("dataset_id") == d["dataset_id"]
        datasets.append({
            "hospital_id": d["node_id"], "dataset_id": d["dataset_id"], "trained": trained,
            "train_examples": _count(node.get("num_examples"), k) if trained else None,
            "excluded_by_consent": _count(node.get("excluded_by_consent"), k)
            if trained else None,
        })
    nodes = [{
        "hospital_id": hospital, "dataset_id": n.get("dataset_id"),
        "epsilon": n.get("epsilon"), "delta": n.get("delta"),
        "epsilon_cap": caps.get((hospital, n.get("dataset_id")), {}).get("epsilon_cap"),
        "delta_cap": caps.get((hospital, n.get("dataset_id")), {}).get("delta_cap"),
        "noise_multiplier": n.get("noise_multiplier"), "steps": n.get("steps"),
        "accountant": accountant,
    } for hospital, n in sorted(latest.items())]
    audits = [{
        "hospital_id": a.get("hospital_id"), "mia_attack": a.get("mia_attack"),
        **{key: a.get(key) for key in ("mia_advantage", "mia_ci_low", "mia_ci_high",
                                       "mia_chance_advantage", "mia_chance_p95",
                                       "mia_p_value")},
        "records": _count(a.get("records"), k),
        **({"error": a["error"]} if a.get("error") else {}),
    } for a in sorted(report.get("privacy_audits", []), key=lambda a: a.get("hospital_id") or "")]
    hospitals = sorted({d["node_id"] for d in claims["datasets"]})
    return {
        "format": FORMAT,
        "run_id": run_id,
        "model": {"file": model_file, "sha256": model_sha256,
                  "architecture": report.get("params", {}).get("model"),
                  "app_id": claims["app_id"], "app_hash": claims["app_hash"]},
        "intended_use": {
            "title": request.get("title"), "purpose": claims["purpose"],
            "research_question": request.get("research_question"),
            "expected_outputs": request.get("expected_outputs"),
            "organisation": request.get("organisation"),
            "researcher": request.get("applicant_username"),
        },
        "permit": {"permit_id": permit["id"], "request_id": permit["request_id"],
                   "purpose": claims["purpose"], "legal_basis": request.get("legal_basis"),
                   "ethics_reference": request.get("ethics_reference")},
        "datasets": datasets,
        "privacy": {"unit": "sample-level (ε, δ) per node dataset", "accountant": accountant,
                    "nodes": nodes},
        "params": {k_: v for k_, v in report.get("params", {}).items()
                   if k_ not in HIDDEN_PARAMS},
        "metrics": _metrics(_final_evaluation(report), report.get("decision_threshold"), k),
        "privacy_audits": audits,
        "limitations": _limitations(report, hospitals, audits, claims["purpose"]),
        "disclosure": f"counts below {k} are shown as \"<{k}\", others rounded to the "
                      f"nearest {DEFAULT_BASE}",
    }


def card_file(files: dict[str, bytes], permit: dict[str, Any], request: dict[str, Any], *,
              run_id: str, k: int) -> bytes | None:
    """The card as it is stored beside the model, or None for an output with no report."""
    if REPORT not in files:
        return None
    try:
        report = json.loads(files[REPORT])
    except ValueError:
        return None  # the aggregates check flags a report that is not JSON
    model_file = report.get("model_file") if report.get("model_file") in files else None
    digest = hashlib.sha256(files[model_file]).hexdigest() if model_file else None
    card = build(report, permit, request, run_id=run_id, model_file=model_file,
                 model_sha256=digest, k=k)
    return json.dumps(card, indent=2, ensure_ascii=False).encode()
