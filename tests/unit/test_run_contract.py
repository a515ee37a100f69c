"""The run contract (`federation.launch`): run parameters defined once, from the API body
to the FAB's defaults and back from Flower's run config, and checked without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from dataclasses import fields

import pytest

from federation.launch.columns import Column, parse_label
from federation.launch.fab import FAB_DIR, FEASIBILITY_FAB_DIR
from federation.launch.params import (
    FeasibilityParams,
    RunParams,
    param_bounds,
    param_default,
    run_config_key,
)
from federation.launch.report import CREDENTIAL_KEY
from tre.portal.schemas import RunIn

pytestmark = pytest.mark.unit


def test_the_fab_defaults_are_the_run_params_defaults():
    """A key the FAB declares but RunParams lacks (or a default that differs) would make
    a run's behaviour depend on who submitted it."""
    config = tomllib.loads((FAB_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    # an undecided secagg is the FAB's "off"; the credential is sealed in at submission
    assert config["config"] == {**RunParams().resolved(0).to_run_config(), CREDENTIAL_KEY: ""}


def test_the_feasibility_fab_defaults_are_the_feasibility_params_defaults():
    config = tomllib.loads((FEASIBILITY_FAB_DIR / "pyproject.toml").read_text())
    assert config["tool"]["flwr"]["app"]["config"] == {**FeasibilityParams().to_run_config(),
                                                        CREDENTIAL_KEY: ""}


@pytest.mark.parametrize(("config", "named"), [
    ({"purpose": "marketing"}, "purpose 'marketing' is not in the purposes"),
    ({"cohort": "{\"modality\": 3"}, "cohort is not a cohort filter"),
    ({"cohort": "{\"colour\": \"red\"}"}, "cohort is not a cohort filter"),
    ({"node-map": "[1, 2]"}, "node-map must be a JSON object"),
    ({"node-map": "{\"hospital-a\": \"x\"}"}, "node-map must be a JSON object"),
    ({"timeout": 0}, "timeout must be >= 1"),
])
def test_a_feasibility_count_is_checked_where_it_is_read(config, named):
    with pytest.raises(ValueError, match=named):
        FeasibilityParams.from_run_config(config)


def test_feasibility_config_round_trips():
    query = FeasibilityParams(cohort='{"modality": ["CR"]}', purpose="ai_training",
                              ticket="t", node_map='{"hospital-a": 7}', timeout=30)
    assert FeasibilityParams.from_run_config(query.to_run_config()) == query
    assert query.hospital_nodes() == {"hospital-a": 7}
    assert query.cohort_filter().modality == ["CR"]


def test_run_config_round_trips():
    params = RunParams(permit="token", model="mlp", rounds=7, lr=0.05, strategy="fedprox",
                       server_lr=0.8, server_momentum=0.5, secagg=True,
                       secagg_max_weight=2345, target_epsilon=2.5, node_map='{"a": 1}')
    assert RunParams.from_run_config(params.to_run_config()) == params


@pytest.mark.parametrize(("changes", "named"), [
    ({"model": "gpt-5"}, "model 'gpt-5' is not in the catalogue"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"strategy": "fedsgd"}, "strategy must be one of fedavg, fedprox"),
    ({"server_momentum": 1.0}, "server-momentum must be < 1"),
    ({"server_lr": 0.0}, "server-lr must be > 0"),
    ({"accountant": "gdp"}, "accountant must be one of rdp, prv"),
    ({"delta": 1.0}, "delta must be < 1"),
    ({"features": "age, age"}, "features: a column is named twice"),
    ({"features": "sex=F"}, "features: 'sex' needs two or more distinct categories"),
    ({"label": "stage=I|II|III"}, "label: 3 classes named, num-classes is 2"),
    ({"features": "age", "label": "age"}, "label: 'age' is also a feature"),
    ({"label": "target>140", "num_classes": 3}, "label: 2 classes \\(a threshold\\), num-cl"),
    ({"label": "target>high"}, "label: threshold 'high' of 'target' is not a number: use name>"),
    ({"label": "target>"}, "label: 'target>' names no threshold: use name>number"),
    ({"label": "target>=nan"}, "label: threshold 'nan' of 'target' is not a finite number"),
    ({"label": "target<140"}, "label: 'target<140': a threshold label puts class 1 above"),
    ({"label": ">140"}, "label: '>140' does not name a column"),
    ({"label": "dx=a|b>1"}, "label: 'dx=a|b>1' does not name a column"),
    ({"features": "age>60"}, "features: 'age>60': a threshold defines the label only"),
])
def test_a_check_names_the_field(changes, named):
    with pytest.raises(ValueError, match=named):
        RunParams(**changes).check()
    with pytest.raises(ValueError, match=named):  # as a node reads it
        RunParams.from_run_config({run_config_key(k): v for k, v in changes.items()})


def test_the_api_body_takes_defaults_and_bounds_from_run_params():
    shared = [f.name for f in fields(RunParams) if f.name in RunIn.model_fields]
    assert shared == ["model", "rounds", "local_epochs", "batch_size", "lr", "strategy",
                      "server_lr", "server_momentum", "secagg", "delta", "seed", "features",
                      "label"]
    for name in set(shared) - {"delta", "secagg"}:  # those two default to the permit's
        assert RunIn.model_fields[name].default == param_default(name), name
    for name in ("rounds", "local_epochs", "batch_size", "lr", "server_lr", "server_momentum",
                 "seed"):
        schema = RunIn.model_json_schema()["properties"][name]
        shown = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum",
                 "lt": "exclusiveMaximum"}
        assert {b: schema[shown[b]] for b in param_bounds(name)} == param_bounds(name), name
    body = RunIn(permit_id="pmt_1")
    params = body.run_params(permit="token", hospitals=2, min_hospitals=0, node_map="",
                             round_timeout=param_default("round_timeout"))
    assert params == RunParams(permit="token", secagg=False)


def test_a_table_run_from_the_api_body_takes_its_classes_from_the_label():
    body = RunIn(permit_id="pmt_1", model="logreg", features="age, smoker=no|yes",
                 label="stage=I|II|III")
    params = body.run_params(permit="t", hospitals=2, min_hospitals=0, node_map="",
                             round_timeout=60)
    assert (params.features, params.label, params.num_classes) == (
        "age, smoker=no|yes", "stage=I|II|III", 3)
    assert params.table().in_features == 3
    with pytest.raises(ValueError, match="features: 'smoker' needs two or more"):
        RunIn(permit_id="pmt_1", model="logreg", features="smoker=no", label="stage")
    with pytest.raises(ValueError, match="model 'mlp' trains on a table; name its"):
        RunIn(permit_id="pmt_1", model="mlp", features="age")
    with pytest.raises(ValueError, match="model 'cnn-gn-tanh' trains on images and reads"):
        RunIn(permit_id="pmt_1", features="age", label="stage")


@pytest.mark.parametrize(("text", "column", "above", "at"), [
    ("target>140", Column("target", threshold=140.0), True, False),
    (" target >= 140.5 ", Column("target", threshold=140.5, inclusive=True), True, True),
    ("hba1c>=6.5", Column("hba1c", threshold=6.5, inclusive=True), True, True),
    ("delta>-1e1", Column("delta", threshold=-10.0), True, False),
])
def test_a_threshold_label_binarises_a_numeric_outcome(text, column, above, at):
    label = parse_label(text)
    assert label == column and label.classes == 2 and label.width == 1
    assert (label.outcome(column.threshold + 0.5), label.outcome(column.threshold),
            label.outcome(column.threshold - 0.5)) == (above, at, False)
    assert parse_label("target") == Column("target") and Column("target").classes is None


def test_a_threshold_label_from_the_api_body_makes_two_classes():
    body = RunIn(permit_id="pmt_1", model="logreg", features="age, bmi", label="target>140")
    params = body.run_params(permit="t", hospitals=2, min_hospitals=0, node_map="",
                             round_timeout=60)
    assert (params.label, params.num_classes, params.table().label.threshold) == (
        "target>140", 2, 140.0)
    with pytest.raises(ValueError, match="label: threshold 'high' of 'target' is not a"):
        RunIn(permit_id="pmt_1", model="logreg", features="age", label="target>high")
    with pytest.raises(ValueError, match="features: 'bmi>30': a threshold defines the"):
        RunIn(permit_id="pmt_1", model="logreg", features="bmi>30", label="target>140")


def test_the_portal_builds_and_checks_a_run_without_torch(tmp_path):
    """The portal checks model names against the torch-free registry: building the app,
    validating a body and hashing the FAB load neither torch nor Opacus."""
    probe = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tre.portal.app import create_app
        from tre.portal.schemas import RunIn
        from tre.portal.settings import PortalSettings
        from federation.launch.fab import fab_hash

        create_app(PortalSettings(state_dir=Path({str(tmp_path)!r})))
        RunIn(permit_id="pmt_1", model="resnet18-gn").run_params(
            permit="t", hospitals=3, min_hospitals=0, node_map="", round_timeout=60).check()
        fab_hash()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "opacus")))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
