"""Server-side momentum over the aggregated update (FedAvgM; Hsu et al. 2019), and the
average of the last rounds' global models (tail averaging).

The aggregate of a DP round is noisy; momentum on the server averages that noise over
rounds at no privacy cost (post-processing of what the nodes released). It applies
after aggregation, so it holds for a plain FedAvg round and for a SecAgg+ round
(whose server only sees the masked sum) alike: the same arithmetic as Flower's
`FedAvgM`, which only sees plain rounds. numpy only: the bench applies it in process.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

Weights = dict[str, np.ndarray]


@dataclass
class ServerMomentum:
    """new = old - lr · v, v = momentum · v + (old - aggregate); lr 1 and momentum 0
    give the aggregate itself (plain FedAvg)."""

    lr: float = 1.0
    momentum: float = 0.0
    velocity: Weights | None = field(default=None, repr=False)

    def step(self, old: Weights, aggregate: Weights) -> Weights:
        """The next global weights from the current ones and this round's aggregate."""
        if self.lr == 1.0 and self.momentum == 0.0:
            return aggregate
        grad = {k: np.asarray(old[k]) - np.asarray(aggregate[k]) for k in aggregate}
        if self.momentum > 0.0:
            self.velocity = grad if self.velocity is None else {
                k: self.momentum * self.velocity[k] + grad[k] for k in grad}
            grad = self.velocity
        return {k: (np.asarray(old[k]) - self.lr * grad[k]).astype(np.asarray(old[k]).dtype)
                for k in grad}


@dataclass
class TailAverage:
    """The mean of the last `rounds` global models, the model a run evaluates and
    releases (parameter averaging of DP-SGD iterates, De et al. 2022; over rounds, not
    steps). Under label skew each round's global model swings towards the hospitals'
    local optima; the mean of the last few is steadier. Post-processing of what the nodes
    released: it costs no ε. `rounds` 1 gives the last model itself."""

    rounds: int = 1
    recent: deque[Weights] = field(default_factory=deque, repr=False)

    def add(self, weights: Weights) -> Weights:
        """Record this round's global model; the average of the last `rounds` ones."""
        if self.rounds <= 1:
            return weights
        self.recent.append(weights)
        while len(self.recent) > self.rounds:
            self.recent.popleft()
        return {k: _mean([w[k] for w in self.recent]) for k in weights}


def _mean(values: list[np.ndarray]) -> np.ndarray:
    """The mean of float arrays; an integer array (a counter) is the latest one."""
    last = np.asarray(values[-1])
    if not np.issubdtype(last.dtype, np.floating):
        return last
    return np.mean(np.stack([np.asarray(v) for v in values]), axis=0).astype(last.dtype)
