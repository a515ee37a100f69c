"""Server-side momentum over the aggregated update (FedAvgM; Hsu et al. 2019).

The aggregate of a DP round is noisy; momentum on the server averages that noise over
rounds at no privacy cost (post-processing of what the nodes released). It applies
after aggregation, so it holds for a plain FedAvg round and for a SecAgg+ round
(whose server only sees the masked sum) alike: the same arithmetic as Flower's
`FedAvgM`, which only sees plain rounds. numpy only: the bench applies it in process.
"""

from __future__ import annotations

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
