"""A clinical table at one node: what a table run reads, and what it refuses unread.

Real DuckDB node homes holding a share of scikit-learn's breast-cancer and diabetes
tables (ingested by the node's table ingestion) beside an imaging dataset; real
permits; the governed tasks the ClientApp runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from access_control.permits import PermitKeyRing
from federation.apps.tasks import NodeContext, evaluate_task, train_task
from federation.launch.columns import parse_column, parse_label
from federation.launch.fab import fab_hash
from federation.launch.params import RunParams
from federation.node.data import clinical_frame, load_table, table_split_pseudonyms
from federation.node.home import node_session
from federation.node.ingest.common import default_split
from federation.node.ledger import PrivacyLedger
from federation.node.refusal import Refusal
from federation.node.revocations import RevocationList
from federation.training.data import standardise

from . import helpers
from .helpers import BREAST_LABEL, DIABETES_LABEL, table_features

pytestmark = pytest.mark.integration


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, PermitKeyRing]:
    ring = PermitKeyRing.load_or_create(tmp_path / "ring.json")
    home = helpers.make_home(tmp_path, "hospital-1", ring)
    helpers.populate_table(home, "wdbc", 0, 3)
    # the whole diabetes table (442 people): a third would leave ~15 in the test split,
    # at times under the k of 10 below which the node withholds its evaluation
    helpers.populate_table(home, "diab", 0, 1, table="diabetes")
    helpers.populate(home, "pneu", 0, 3, limit=60)
    ledger = PrivacyLedger(home.db, home.audit, actor="operator")
    for dataset in ("wdbc", "diab", "pneu"):
        ledger.set_budget(dataset, 10.0)
    home.db.close()
    return home.path, ring


def params(ring: PermitKeyRing, dataset: str = "wdbc", **kw: object) -> RunParams:
    token = ring.sign(helpers.claims([("hospital-1", dataset)], eps=4.0))
    base = {"model": "logreg", "features": helpers.breast_features(), "label": BREAST_LABEL,
            "batch_size": 32, "rounds": 2, **kw}
    return RunParams(permit=token, **base)  # type: ignore[arg-type]


def ctx(path: Path, ring: PermitKeyRing, p: RunParams) -> NodeContext:
    return NodeContext(home=path, run_id="run-t", app_hash=fab_hash(),
                       revocations=lambda: RevocationList(frozenset(), "t", 0),
                       run_tickets=helpers.tickets_for(ring, p.permit))


def test_splits_are_per_person_and_the_default_split(node) -> None:  # noqa: ANN001
    path, _ = node
    label = parse_column(BREAST_LABEL, "label")
    with node_session(path) as home:
        splits = {s: table_split_pseudonyms(home.db, "wdbc", s, label)
                  for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == len(set().union(*splits.values()))  # disjoint
    assert all(default_split(p) == s for s, ps in splits.items() for p in ps)
    assert len(splits["train"]) > 3 * len(splits["test"]) > 0


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_a_table_trains_and_evaluates_through_the_gate(node, model: str) -> None:  # noqa: ANN001
    path, ring = node
    p = params(ring, model=model, lr=0.5 if model == "logreg" else 0.2)
    out = train_task(ctx(path, ring, p), p, server_round=1, weights=None)
    assert 0 < out.metrics["epsilon"] < 4.0 and out.dataset_id == "wdbc"
    metrics = evaluate_task(ctx(path, ring, p), p, server_round=1, weights=out.weights)
    assert metrics["auc"] > 0.8 and metrics["num-examples"] > 0
    with node_session(path) as home:
        reads = [e.details for e in home.audit.entries() if e.action == "data.read"]
        train = len(table_split_pseudonyms(home.db, "wdbc", "train",
                                           parse_column(BREAST_LABEL, "label")))
    assert [(r["split"], r["records"]) for r in reads][0] == ("train", train)


def test_the_diabetes_table_trains_on_the_outcome_its_run_defines(node) -> None:  # noqa: ANN001
    """A continuous outcome is no class label: the run's `target>140` binarises it at the
    node, and a governed round trains and evaluates on it; the bare `target` is refused."""
    path, ring = node
    p = params(ring, dataset="diab", features=table_features("diabetes"), label=DIABETES_LABEL)
    out = train_task(ctx(path, ring, p), p, server_round=1, weights=None)
    assert 0 < out.metrics["epsilon"] < 4.0 and out.dataset_id == "diab"
    metrics = evaluate_task(ctx(path, ring, p), p, server_round=1, weights=out.weights)
    assert metrics["auc"] > 0.6 and metrics["num-examples"] > 0
    with node_session(path) as home:
        label = parse_label(DIABETES_LABEL)
        persons = table_split_pseudonyms(home.db, "diab", "train", label)
        _, y, read = load_table(home.db, "diab", "train", persons, p.table())
        target = clinical_frame(home.db, "diab").set_index("pseudonym").loc[read, "target"]
    np.testing.assert_array_equal(y, (target.to_numpy() > 140).astype(np.int64))
    assert 0.3 < y.mean() < 0.7
    bare = params(ring, dataset="diab", features=table_features("diabetes"), label="target")
    with pytest.raises(Refusal, match="binarise it at a threshold") as err:
        train_task(ctx(path, ring, bare), bare, server_round=1, weights=None)
    assert err.value.code == "data-shape"


@pytest.mark.parametrize(("change", "code", "named"), [
    ({"features": "mean radius,tumour stage"}, "missing-column", "'tumour stage'"),
    ({"label": "stage"}, "missing-column", "'stage'"),
    ({"label": "diagnosis"}, "column-kind", "name its categories"),
    ({"features": "mean radius=small|large"}, "column-kind", "is numeric"),
    ({"features": "", "label": ""}, "no-columns", "features"),
    ({"model": "cnn-gn"}, "dataset-kind", "trains on imaging data"),
    ({"dataset": "pneu"}, "dataset-kind", "dataset 'pneu' is imaging"),
])
def test_a_run_the_table_cannot_serve_is_refused_unread_and_audited(
        node, change: dict, code: str, named: str) -> None:  # noqa: ANN001
    path, ring = node
    p = params(ring, **change)
    with node_session(path) as home:
        before = len(home.audit.entries())
        ledger = PrivacyLedger(home.db, home.audit, actor="t").snapshot()
    with pytest.raises(Refusal) as err:
        train_task(ctx(path, ring, p), p, server_round=1, weights=None)
    assert err.value.code == code and named in err.value.reason, err.value
    with node_session(path) as home:
        new = home.audit.entries()[before:]
        assert PrivacyLedger(home.db, home.audit, actor="t").snapshot() == ledger
    assert [(e.action, e.details["code"]) for e in new] == [("federation.refused", code)]


def test_standardise_scales_numbers_fills_gaps_with_the_mean_and_keeps_one_hot() -> None:
    x = np.array([[1.0, 1.0], [3.0, 0.0], [np.nan, 0.0], [5.0, 1.0]])
    out = standardise(x, np.array([True, False]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [-1.2247449, 0.0, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], x[:, 1])
