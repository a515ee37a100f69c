"""Opacus DP-SGD: planning a whole run's noise, training one round, accounting from history.

Flower starts a fresh ClientApp process for every message, so nothing of an
Opacus `PrivacyEngine` survives between rounds. The accountant is therefore
*rebuilt* each round from the ledger's history of (noise multiplier, sample
rate, steps) and the round's own steps are added on top: ε is always that of
the whole run so far, never of one round alone (a fresh accountant per round
would under-report it).

Noise comes from torch's default generator (Opacus `secure_mode=False`): Opacus'
secure mode needs `torchcsprng`, which is not installed here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.accountants.accountant import IAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ACCOUNTANTS = ("rdp", "prv")
History = Sequence[tuple[float, float, int]]


@dataclass(frozen=True)
class DPPlan:
    """Noise for a whole run, fixed before the first step and stored in the ledger."""

    target_epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    max_grad_norm: float
    batch_size: int
    num_examples: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_round * self.rounds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Batches per epoch; Opacus' Poisson loader draws exactly this many with rate 1/this."""
    return max(1, math.ceil(num_examples / max(1, batch_size)))


def plan_dp(
    *,
    num_examples: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
    max_grad_norm: float = 1.0,
    accountant: str = "rdp",
) -> DPPlan:
    """Noise multiplier such that all `rounds × local_epochs` epochs together stay ≤ target ε."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}")
    if num_examples < 1:
        raise ValueError("no examples to train on")
    spe = steps_per_epoch(num_examples, batch_size)
    q = 1.0 / spe
    steps_round = spe * local_epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigma = get_noise_multiplier(
            target_epsilon=target_epsilon, target_delta=delta, sample_rate=q,
            steps=steps_round * rounds, accountant=accountant, epsilon_tolerance=0.005,
        )
    return DPPlan(
        target_epsilon=target_epsilon, delta=delta, accountant=accountant,
        noise_multiplier=float(sigma), sample_rate=q, steps_per_round=steps_round,
        rounds=rounds, max_grad_norm=max_grad_norm, batch_size=batch_size,
        num_examples=num_examples,
    )


def rebuild_accountant(kind: str, history: History) -> IAccountant:
    """An Opacus accountant holding a run's past steps (from the ledger)."""
    acc = create_accountant(mechanism=kind)
    acc.history = [(float(nm), float(q), int(s)) for nm, q, s in history]
    return acc


def epsilon_of(kind: str, history: History, delta: float) -> float:
    """ε of the whole history at δ (0 for an empty history)."""
    if not history or sum(s for _, _, s in history) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(rebuild_accountant(kind, history).get_epsilon(delta=delta))


@dataclass
class RoundResult:
    steps: int
    epsilon: float
    train_loss: float
    num_examples: int


class DPTrainer:
    """One engine object: wraps model, optimiser and Poisson loader with Opacus and an
    explicit accountant preloaded with the run's history (DESIGN §9)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        plan: DPPlan,
        history: History,
        *,
        lr: float,
        momentum: float = 0.9,
        grad_sample_mode: str = "hooks",
        seed: int | None = None,
    ) -> None:
        self.plan = plan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "secure RNG turned off": see module notes
            self.engine = PrivacyEngine(accountant=plan.accountant, secure_mode=False)
        self.engine.accountant = rebuild_accountant(plan.accountant, history)
        loader = DataLoader(TensorDataset(x, y), batch_size=plan.batch_size)
        if seed is not None:
            torch.manual_seed(seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model, self.optimizer, self.loader = self.engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader,
                noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                poisson_sampling=True, grad_sample_mode=grad_sample_mode,
            )
        if abs(1.0 / len(self.loader) - plan.sample_rate) > 1e-9:
            raise ValueError(
                f"loader sample rate {1.0 / len(self.loader):.6g} differs from the plan's "
                f"{plan.sample_rate:.6g}: the cohort size changed since the run was planned"
            )
        self.criterion = nn.CrossEntropyLoss()

    def train_round(
        self, local_epochs: int, *, proximal_mu: float = 0.0,
        global_params: list[torch.Tensor] | None = None, lr: float | None = None,
    ) -> RoundResult:
        """Run `local_epochs` epochs of DP-SGD. FedProx' proximal pull is applied as a
        separate data-independent step after each noisy update (post-processing, so it
        costs no privacy; added to the loss it would be dropped by per-sample clipping)."""
        self.model.train()
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        steps_before = _steps(self.engine.accountant)
        total_loss, batches = 0.0, 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for _ in range(local_epochs):
            for xb, yb in self.loader:
                if len(xb) == 0:
                    # Poisson sampling may draw an empty batch. Skipping it releases less
                    # than the analysis assumes, and the ledger charges the planned steps.
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.criterion(self.model(xb), yb)
                loss.backward()
                self.optimizer.step()
                if proximal_mu > 0 and global_params is not None:
                    step = lr if lr is not None else self.optimizer.param_groups[0]["lr"]
                    with torch.no_grad():
                        for p, g in zip(params, global_params, strict=True):
                            p.sub_(step * proximal_mu * (p - g))
                total_loss += float(loss.detach())
                batches += 1
        steps = _steps(self.engine.accountant) - steps_before
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eps = float(self.engine.accountant.get_epsilon(delta=self.plan.delta))
        return RoundResult(steps=steps, epsilon=eps, train_loss=total_loss / max(batches, 1),
                           num_examples=self.plan.num_examples)

    def module(self) -> nn.Module:
        """The plain model without Opacus' wrapper (for export and evaluation)."""
        return getattr(self.model, "_module", self.model)


def _steps(acc: IAccountant) -> int:
    return int(sum(s for _, _, s in acc.history))
