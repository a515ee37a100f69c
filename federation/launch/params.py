"""Run parameters, defined once: names, defaults, bounds and choices of a training run.

Every party reads them from here. The portal's `RunIn` takes its defaults and bounds
from `RunParams`' field metadata and checks a field with `check_param`; the run
travels to Flower as run config (`to_run_config`, hyphenated keys: the FAB's
`[tool.flwr.app.config]`, whose defaults a test ties to these) and comes back on the
SuperLink and the nodes with `from_run_config`, which checks it again at the party that
acts on it. No check imports torch: the model ids are `federation.launch.models`.
A feasibility count travels the same way (`FeasibilityParams`, the feasibility FAB's
config).

Hyperparameters travel as run config (they do not change the app hash); the
privacy bounds they may ask for are capped by the permit at each node.

Secure aggregation (SecAgg+) is on by default once a run has three or more
hospitals: `secagg=None` means "decide from the permit", and `resolved()` makes the
decision in this one place, so the portal (which stores and shows the run's params)
and `federation.launch.start_run` (what the CLI, benches and tests submit through)
agree. With two hospitals SecAgg+ hides nothing (the server subtracts one update from
the sum to get the other), so it stays off; an explicit `secagg=False` turns it off at
any size.

Under SecAgg+ each node scales its update by its weight / `secagg_max_weight` before
quantising within a fixed range, so the bound must hold every node's weight: the portal
derives it from the catalogue (0, in runs submitted otherwise: Flower's default), the
ServerApp sends it in the fit config (`MAX_WEIGHT`), and a node above it sends the bound.
"""

from __future__ import annotations

import json
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, Self

from federation.launch.columns import TableSpec, table_spec
from federation.launch.models import MODEL_KINDS
from tre.core.schemas import CohortFilter, Purpose

STRATEGIES = ("fedavg", "fedprox")
ACCOUNTANTS = ("rdp", "prv")
GRAD_SAMPLE_MODES = ("hooks", "ew", "functorch")
SECAGG_MIN_HOSPITALS = 3
PARAM_NAMES = "param-names"  # fit-config key: the state-dict names legacy Parameters lack
MAX_WEIGHT = "max-weight"  # fit-config key: the SecAgg+ weight bound the round quantises for
WEIGHT_CAPPED = "weight-capped-at"  # node metric: the bound its SecAgg+ weight was cut to
#: bound keyword -> (test that the value passes, how the refusal reads)
_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<"),
}


def secagg_default(hospitals: int) -> bool:
    """SecAgg+ by default from three hospitals up (see the module docstring)."""
    return hospitals >= SECAGG_MIN_HOSPITALS


def _param(default: Any, *, choices: tuple[str, ...] | None = None, what: str = "",
           **bounds: float) -> Any:
    """A run parameter with its bounds (`ge`, `gt`, `le`, `lt`) and allowed values."""
    return field(default=default, metadata={"bounds": bounds, "choices": choices, "what": what})


class FlowerParams:
    """Parameters that travel as Flower run config (hyphenated keys), defined once as
    a frozen dataclass of `_param` fields and checked again wherever they are read."""

    @classmethod
    def from_run_config(cls, cfg: dict[str, Any]) -> Self:
        """Read Flower's run config (hyphenated keys), checked; unknown keys are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = run_config_key(f.name)
            if key in cfg:
                kind = bool if f.default is None else type(f.default)
                values[f.name] = kind(cfg[key])
        params = cls(**values)
        params.check()
        return params

    def to_run_config(self) -> dict[str, Any]:
        """Flower's run config (keys whose value is None are left to the FAB's default)."""
        return {run_config_key(k): v for k, v in asdict(self).items()  # type: ignore[call-overload]
                if v is not None}

    def check(self) -> None:
        """Reject nonsense early with a message naming the field."""
        for f in fields(self):  # type: ignore[arg-type]
            _check_field(f, getattr(self, f.name))


@dataclass(frozen=True)
class RunParams(FlowerParams):
    permit: str = _param("")
    # the defaults are issue 17's recipe, chosen by `bench/utility.py --sweep` (BENCHMARKS.md)
    model: str = _param("cnn-gn-tanh", choices=tuple(MODEL_KINDS), what="the catalogue")
    image_size: int = _param(28, ge=1, le=4096)
    in_channels: int = _param(1, ge=1, le=64)
    num_classes: int = _param(2, ge=2, le=10_000)
    rounds: int = _param(6, ge=1, le=100)
    local_epochs: int = _param(2, ge=1, le=50)
    batch_size: int = _param(128, ge=1, le=4096)
    lr: float = _param(0.25, gt=0, le=10)
    momentum: float = _param(0.9, ge=0, lt=1)
    # FedProx' pull towards the global model holds back client drift under label skew
    strategy: str = _param("fedprox", choices=STRATEGIES)
    proximal_mu: float = _param(0.1, ge=0)
    # server momentum over the aggregate (FedAvgM; `federation.training.server_opt`):
    # lr 1, momentum 0 is plain FedAvg/FedProx
    server_lr: float = _param(1.0, gt=0, le=10)
    server_momentum: float = _param(0.0, ge=0, lt=1)
    # the model evaluated and released: the mean of the last k rounds' global models
    # (`federation.training.server_opt.TailAverage`); 1 is the last one
    average_last: int = _param(1, ge=1, le=100)
    secagg: bool | None = _param(None)  # None: on from three hospitals up (`resolved`)
    secagg_max_weight: int = _param(0, ge=0)  # 0: not derived (see the module docstring)
    max_grad_norm: float = _param(1.0, gt=0)
    target_epsilon: float = _param(0.0, ge=0)  # 0: the permit's cap for the dataset
    delta: float = _param(0.0, ge=0, lt=1)  # 0: the permit's δ cap
    accountant: str = _param("rdp", choices=ACCOUNTANTS)
    dataset_id: str = _param("")  # "": the permit's only dataset at the node
    # expanded weights: ~1.6x a non-DP step here, hooks ~2.2x
    grad_sample_mode: str = _param("ew", choices=GRAD_SAMPLE_MODES)
    seed: int = _param(0, ge=0, le=2**31 - 1)
    min_nodes: int = _param(0, ge=0)  # 0: every hospital named in the permit
    round_timeout: int = _param(1800, ge=1)
    node_map: str = _param("")  # JSON hospital -> Flower node id, from enrolment; "": none
    # clinical-table models: the variables they read (`federation.launch.columns`)
    features: str = _param("")  # "a, b, smoker=no|yes": numeric names, text ones one-hot
    label: str = _param("")  # numeric 0..n-1, "name=class0|class1", or "name>threshold"

    def node_proximal_mu(self) -> float:
        """The FedProx pull each node applies after its noisy steps (0: FedAvg)."""
        return self.proximal_mu if self.strategy == "fedprox" else 0.0

    def resolved(self, hospitals: int) -> RunParams:
        """These params with `secagg` decided for a run over `hospitals` hospitals (an
        undecided `secagg` is left out of `to_run_config`: the FAB's default is off)."""
        if self.secagg is not None:
            return self
        return replace(self, secagg=secagg_default(hospitals))

    def check(self) -> None:
        """Reject nonsense early with a message naming the field."""
        super().check()
        table = self.table()
        classes = table.label.classes if table.label is not None else None
        if classes is not None and classes != self.num_classes:
            named = "classes named" if table.label.categories else "classes (a threshold)"
            raise ValueError(f"label: {classes} {named}, num-classes is {self.num_classes}")

    def table(self) -> TableSpec:
        """The table columns of a clinical model's run (none for images)."""
        return table_spec(self.features, self.label)


@dataclass(frozen=True)
class FeasibilityParams(FlowerParams):
    """One feasibility count: the portal writes it, the ServerApp and each node read it."""

    cohort: str = _param("{}")  # a CohortFilter as JSON
    purpose: str = _param(Purpose.SCIENTIFIC_RESEARCH.value,
                          choices=tuple(p.value for p in Purpose), what="the purposes")
    ticket: str = _param("")  # the portal's signed feasibility ticket (nodes refuse without)
    node_map: str = _param("{}")  # JSON hospital -> Flower node id: who is asked
    timeout: int = _param(120, ge=1)

    def check(self) -> None:
        super().check()
        self.cohort_filter()
        self.hospital_nodes()

    def cohort_filter(self) -> CohortFilter:
        """The cohort, parsed (ValueError naming the field when it is not one)."""
        try:
            return CohortFilter.model_validate_json(self.cohort)
        except ValueError as exc:
            raise ValueError(f"cohort is not a cohort filter: {exc}") from exc

    def hospital_nodes(self) -> dict[str, int]:
        """`node-map` parsed: hospital id -> Flower node id."""
        return parse_node_map(self.node_map)


def parse_node_map(text: str) -> dict[str, int]:
    """`{"hospital-a": 123, ...}` (the `node-map` of a run or a feasibility count)."""
    try:
        raw = json.loads(text or "{}")
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        return {str(h): int(n) for h, n in raw.items()}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"node-map must be a JSON object hospital -> node id ({exc})") from exc


def run_config_key(name: str) -> str:
    """The run-config (and FAB `[tool.flwr.app.config]`) key of a RunParams field."""
    return name.replace("_", "-")


def param_field(name: str) -> Field:
    """The dataclass field of one run parameter: its default and metadata."""
    return next(f for f in fields(RunParams) if f.name == name)


def param_default(name: str) -> Any:
    """The default of one run parameter (what the portal's API defaults to)."""
    return param_field(name).default


def param_bounds(name: str) -> dict[str, float]:
    """The bounds (`ge`, `gt`, `le`, `lt`) of one run parameter, as pydantic takes them."""
    return dict(param_field(name).metadata["bounds"])


def check_param(name: str, value: Any) -> Any:
    """`value` if run parameter `name` allows it, else ValueError naming the field."""
    return _check_field(param_field(name), value)


def _check_field(f: Field, value: Any) -> Any:
    meta = f.metadata
    key = run_config_key(f.name)
    choices = meta["choices"]
    if choices is not None and value not in choices:
        if meta["what"]:
            raise ValueError(f"{key} {value!r} is not in {meta['what']} ({', '.join(choices)})")
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    for bound, limit in meta["bounds"].items():
        passes, sign = _BOUNDS[bound]
        if not passes(value, limit):
            raise ValueError(f"{key} must be {sign} {limit}, not {value!r}")
    return value
