"""Membership inference as a statistical test, not a single noisy number.

An attacker who sees the model's output for a record guesses whether it was a
training member. The audit runs two threshold attacks (the loss on the true label,
and the confidence of the top class, which needs no label) on label-balanced
members and held-out non-members, and takes the better one's advantage
(max TPR − FPR over thresholds). Alone, that number is at the mercy of sampling
noise, so it travels with:

* a 95 % confidence interval from a bootstrap stratified by label and membership;
* the advantage a model that saw none of the members would show: the same attack
  rerun under label-preserving permutations of the member / non-member assignment
  (its mean, its 95th percentile, and the permutation p-value).

Only these figures leave a node, never a per-record score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATTACKS = ("loss", "confidence")
FIGURES = ("mia-advantage", "mia-ci-low", "mia-ci-high", "mia-chance-advantage",
           "mia-chance-p95", "mia-p-value", "mia-attack")


@dataclass(frozen=True)
class MembershipAudit:
    advantage: float
    ci_low: float
    ci_high: float
    chance: float
    chance_p95: float
    p_value: float
    attack: str
    members: int
    nonmembers: int

    def as_metrics(self) -> dict[str, float]:
        """Flower metric-record keys (numbers only) for the node's reply."""
        return {"mia-advantage": self.advantage, "mia-ci-low": self.ci_low,
                "mia-ci-high": self.ci_high, "mia-chance-advantage": self.chance,
                "mia-chance-p95": self.chance_p95, "mia-p-value": self.p_value,
                "mia-attack": float(ATTACKS.index(self.attack)),
                "mia-records": float(self.members)}


def best_advantage(member: np.ndarray, scores: np.ndarray) -> float:
    """max over thresholds of TPR − FPR when a higher score means 'member'."""
    order = np.argsort(-scores, kind="mergesort")
    s, m = scores[order], member[order]
    n_in, n_out = m.sum(), (~m).sum()
    tpr = np.cumsum(m) / n_in
    fpr = np.cumsum(~m) / n_out
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold cannot split equal scores
    return float(max(0.0, np.max((tpr - fpr)[last_of_tie])))


def _statistic(member: np.ndarray, attack_scores: np.ndarray) -> tuple[float, int]:
    values = [best_advantage(member, scores) for scores in attack_scores]
    best = int(np.argmax(values))
    return values[best], best


def membership_audit(losses: np.ndarray, confidences: np.ndarray, labels: np.ndarray,
                     member: np.ndarray, *, seed: int = 0, resamples: int = 1000
                     ) -> MembershipAudit:
    """The audit of one model on label-balanced members and non-members.

    `losses` is each record's loss on its true label, `confidences` the model's top
    class probability; low loss and high confidence point to a member.
    """
    member = np.asarray(member, dtype=bool)
    labels = np.asarray(labels)
    attack_scores = np.stack([-np.asarray(losses, float), np.asarray(confidences, float)])
    observed, which = _statistic(member, attack_scores)
    rng = np.random.default_rng(seed)

    strata = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    null = np.empty(resamples)
    shuffled = member.copy()
    for i in range(resamples):
        for idx in strata:
            shuffled[idx] = rng.permutation(member[idx])
        null[i] = _statistic(shuffled, attack_scores)[0]

    cells = [np.flatnonzero((labels == label) & (member == side))
             for label in np.unique(labels) for side in (True, False)]
    boot = np.empty(resamples)
    for i in range(resamples):
        pick = np.concatenate([rng.choice(c, len(c), replace=True) for c in cells if len(c)])
        boot[i] = _statistic(member[pick], attack_scores[:, pick])[0]

    return MembershipAudit(
        advantage=observed, ci_low=float(np.quantile(boot, 0.025)),
        ci_high=float(np.quantile(boot, 0.975)), chance=float(null.mean()),
        chance_p95=float(np.quantile(null, 0.95)),
        p_value=float((1 + np.sum(null >= observed)) / (1 + resamples)),
        attack=ATTACKS[which], members=int(member.sum()), nonmembers=int((~member).sum()))


def balanced_by_label(labels_in: np.ndarray, labels_out: np.ndarray, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of as many members and non-members as each label allows, equal per label,
    so a label mix that differs between splits is not mistaken for leakage."""
    pick_in, pick_out = [], []
    for label in np.intersect1d(labels_in, labels_out):
        both = (np.flatnonzero(labels_in == label), np.flatnonzero(labels_out == label))
        k = min(len(both[0]), len(both[1]))
        pick_in.append(rng.choice(both[0], k, replace=False))
        pick_out.append(rng.choice(both[1], k, replace=False))
    empty = [np.zeros(0, int)]
    return (np.concatenate(pick_in or empty).astype(int),
            np.concatenate(pick_out or empty).astype(int))
