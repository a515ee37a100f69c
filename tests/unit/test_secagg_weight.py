"""SecAgg+'s weight bound: the portal derives it from the catalogue's published counts,
and a node above it sends the bound as its weight instead of an update Flower clips."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from flwr.compat.common import recorddict_compat as compat

from federation.apps.client import secagg_reply
from federation.apps.tasks import TrainOutcome
from federation.launch.params import WEIGHT_CAPPED
from federation.node.descriptor import Cell, DatasetFacts, build_descriptor
from tre.core import disclosure
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict
from tre.portal.services import catalogue
from tre.portal.settings import PortalSettings
from tre.portal.store import catalogue as store

pytestmark = pytest.mark.unit

NOISES = range(-disclosure.DEFAULT_MAX_NOISE, disclosure.DEFAULT_MAX_NOISE + 1)


@pytest.fixture
def portal(tmp_path: Path):
    portal = Portal.open(PortalSettings(state_dir=tmp_path / "portal"))
    yield portal
    portal.close()


def _publish(portal: Portal, hospital: str, descriptor: dict) -> None:
    with portal.db.transaction() as cur:
        store.upsert_dataset(cur, hospital, descriptor["dataset_id"], descriptor["kind"],
                             descriptor["title"], descriptor, utcnow())


def _descriptor(hospital: str, subjects: int, key: int, k: int = 10) -> dict:
    """What a node publishes for an imaging dataset of `subjects` people (two studies each)."""
    facts = DatasetFacts("pneumonia", "imaging", "PneumoniaMNIST", "opt-out", {"0": "normal"},
                         subjects=Cell(subjects, key), studies=Cell(2 * subjects, key ^ 1))
    return build_descriptor(facts, hospital_id=hospital, k=k)


def _key(noise: int) -> int:
    """A cell key whose perturbation is `noise`."""
    width = 2 * disclosure.DEFAULT_MAX_NOISE + 1
    return -(-((noise + disclosure.DEFAULT_MAX_NOISE) << 64) // width)


def test_the_bound_holds_every_weight_a_permitted_node_can_send(portal: Portal) -> None:
    """A node's weight is the disclosed count of its consented training subjects: never
    above the bound whatever the perturbations, and the bound is its published size plus
    at most one rounding step, not a large constant."""
    exact = {"hospital-a": 2343, "hospital-b": 1562, "hospital-c": 11}
    keys = {"hospital-a": int.from_bytes(os.urandom(8), "big"), "hospital-b": _key(0),
            "hospital-c": _key(-2)}
    for hospital, subjects in exact.items():
        _publish(portal, hospital, _descriptor(hospital, subjects, keys[hospital]))
    permit = [{"node_id": h, "dataset_id": "pneumonia"} for h in exact]
    bound = catalogue.secagg_max_weight(portal, permit)

    shown = _descriptor("hospital-a", exact["hospital-a"], keys["hospital-a"])["counts"][
        "subjects"]
    assert shown in (2340, 2345)
    assert bound == shown + 5
    for hospital, subjects in exact.items():  # each node's own bound holds it
        own = catalogue.weight_bound(_descriptor(hospital, subjects, keys[hospital]))
        assert own is not None and own <= bound
        for m in range(max(subjects - 30, 0), subjects + 1):  # the training split's people
            weights = [disclosure.disclose(m, key=_key(q)) for q in NOISES]
            assert all(w <= own for w in weights if not disclosure.is_suppressed(w))
    # the worst case the published 2340 stands for: 2344 people, all training, shown +2
    assert disclosure.largest_within(2340) >= disclosure.disclose(2344, key=_key(2)) == 2345
    # "<10" (here a cell of 11 perturbed below k) still bounds that node alone
    assert _descriptor("hospital-c", 11, keys["hospital-c"])["counts"]["subjects"] == "<10"
    assert catalogue.secagg_max_weight(portal, permit[2:]) == 15 == disclosure.disclose(
        11, key=_key(2))


def test_the_node_s_own_k_and_rounding_are_undone() -> None:
    descriptor = _descriptor("hospital-a", 14, _key(-2), k=20)
    assert descriptor["counts"]["subjects"] == "<20"
    assert catalogue.weight_bound(descriptor) == disclosure.largest_within("<20", k=20) == 25


def test_a_dataset_without_a_published_count_refuses_the_run(portal: Portal) -> None:
    """No honest bound exists for it: the run is refused, naming it, not given a guess."""
    _publish(portal, "hospital-a", _descriptor("hospital-a", 500, _key(0)))
    countless = {**_descriptor("hospital-b", 500, _key(0)), "counts": {}}
    _publish(portal, "hospital-b", countless)
    permit = [{"node_id": h, "dataset_id": "pneumonia"}
              for h in ("hospital-a", "hospital-b", "hospital-c")]
    with pytest.raises(Conflict, match="published for hospital-b/pneumonia, "
                                       "hospital-c/pneumonia: its hospital publishes"):
        catalogue.secagg_max_weight(portal, permit)
    for odd in ("many", "<5", -5, True, 12.5):
        assert catalogue.weight_bound({**countless, "counts": {"subjects": odd}}) is None, odd
    assert catalogue.weight_bound({**countless, "counts": {"subjects": 500},
                                   "disclosure": {"k": "ten"}}) is None


def _outcome(examples: int) -> TrainOutcome:
    weights = {"fc.weight": np.full((2, 3), 0.5, np.float32), "fc.bias": np.zeros(2, np.float32)}
    return TrainOutcome(weights, {"num-examples": examples, "epsilon": 1.0}, "hospital-a",
                        "pneumonia", "<10")


def test_a_node_above_the_bound_sends_the_bound_and_says_so(caplog) -> None:
    """Data ingested after publication: the update is weighted by the bound (Flower's mod
    would otherwise scale it by 2345 / 1000 and clip it at ±8), logged, and reported."""
    names = ["fc.weight", "fc.bias"]
    with caplog.at_level(logging.WARNING):
        content = secagg_reply(_outcome(2345), names, 1000)
    fitres = compat.recorddict_to_fitres(content, keep_input=True)
    assert fitres.num_examples == 1000
    assert content["metrics"][WEIGHT_CAPPED] == 1000
    assert content["metrics"]["num-examples"] == 2345  # what it trained on, as disclosed
    assert "hospital-a: 2345 training examples are above the SecAgg+ weight bound 1000" \
        in caplog.text

    caplog.clear()
    content = secagg_reply(_outcome(995), names, 1000)
    assert compat.recorddict_to_fitres(content, keep_input=True).num_examples == 995
    assert WEIGHT_CAPPED not in content["metrics"] and "[TRE]" not in caplog.text
