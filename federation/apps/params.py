"""Run parameters: the FAB's `[tool.flwr.app.config]` keys, typed and checked.

Hyperparameters travel as run config (they do not change the app hash); the
privacy bounds they may ask for are capped by the permit at each node.

Secure aggregation (SecAgg+) is on by default once a run has three or more
hospitals: `secagg=None` means "decide from the permit", and `resolved()` makes the
decision in this one place, so the portal (which stores and shows the run's params)
and `launch.start_run` (what the CLI, benches and tests submit through) agree. With
two hospitals SecAgg+ hides nothing (the server subtracts one update from the sum to
get the other), so it stays off; an explicit `secagg=False` turns it off at any size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

STRATEGIES = ("fedavg", "fedprox")
SECAGG_MIN_HOSPITALS = 3
PARAM_NAMES = "param-names"  # fit-config key: the state-dict names legacy Parameters lack


def secagg_default(hospitals: int) -> bool:
    """SecAgg+ by default from three hospitals up (see the module docstring)."""
    return hospitals >= SECAGG_MIN_HOSPITALS


@dataclass(frozen=True)
class RunParams:
    permit: str = ""
    model: str = "cnn-gn"
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 2
    rounds: int = 3
    local_epochs: int = 1
    batch_size: int = 128
    lr: float = 0.5
    momentum: float = 0.9
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    secagg: bool | None = None  # None: on from three hospitals up (`resolved`)
    max_grad_norm: float = 1.0
    target_epsilon: float = 0.0  # 0: the permit's cap for the dataset
    delta: float = 0.0  # 0: the permit's δ cap
    accountant: str = "rdp"
    dataset_id: str = ""  # "": the permit's only dataset at the node
    grad_sample_mode: str = "ew"  # expanded weights: ~1.6x a non-DP step here, hooks ~2.2x
    seed: int = 0
    min_nodes: int = 0  # 0: every hospital named in the permit
    round_timeout: int = 1800
    node_map: str = ""  # JSON hospital -> Flower node id, from enrolment (portal); "": none

    @classmethod
    def from_run_config(cls, cfg: dict[str, Any]) -> RunParams:
        """Read Flower's run config (hyphenated keys); unknown keys are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in cfg:
                default = getattr(cls, f.name)
                kind = bool if default is None else type(default)
                values[f.name] = kind(cfg[key])
        params = cls(**values)
        params.check()
        return params

    def to_run_config(self) -> dict[str, Any]:
        """Flower's run config; an undecided `secagg` is left to the FAB's default (off):
        call `resolved` first to apply the hospital-count default."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items() if v is not None}

    def resolved(self, hospitals: int) -> RunParams:
        """These params with `secagg` decided for a run over `hospitals` hospitals."""
        if self.secagg is not None:
            return self
        return replace(self, secagg=secagg_default(hospitals))

    def check(self) -> None:
        """Reject nonsense early with a message naming the field."""
        from federation.training.models import MODELS  # torch loads only when checking

        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not in the catalogue {sorted(MODELS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        for name in ("rounds", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError("lr and max-grad-norm must be > 0")
        if self.target_epsilon < 0 or self.delta < 0:
            raise ValueError("target-epsilon and delta must be >= 0")
        if self.accountant not in ("rdp", "prv"):
            raise ValueError("accountant must be 'rdp' or 'prv'")
        if self.grad_sample_mode not in ("hooks", "ew", "functorch"):
            raise ValueError("grad-sample-mode must be hooks, ew or functorch")
