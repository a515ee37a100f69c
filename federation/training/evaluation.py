"""Aggregate evaluation metrics: the only thing about a test split that leaves a node.

Invariant 1: AUC (with its standard error), accuracy, loss and the number of examples,
never per-record scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class TensorSet:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorSet, batch_size: int = 512) -> dict[str, float]:
    """Aggregate metrics only: loss, accuracy, AUC (one-vs-rest macro for >2 classes;
    NaN when the split holds a single class), the AUC's Hanley–McNeil standard error
    (binary only) and the number of examples."""
    model.eval()
    n = len(data)
    if n == 0:
        return {"loss": 0.0, "accuracy": 0.0, "auc": float("nan"), "auc-se": float("nan"),
                "num-examples": 0}
    logits = torch.cat([model(data.x[i:i + batch_size]) for i in range(0, n, batch_size)])
    loss = float(nn.functional.cross_entropy(logits, data.y, reduction="mean"))
    probs = torch.softmax(logits, dim=1).numpy()
    y = data.y.numpy()
    acc = float((probs.argmax(1) == y).mean())
    auc = auc_score(y, probs)
    se = (hanley_mcneil_se(auc, int((y == 1).sum()), int((y != 1).sum()))
          if probs.shape[1] == 2 else float("nan"))
    return {"loss": loss, "accuracy": acc, "auc": auc, "auc-se": se, "num-examples": n}


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a binary AUC from the AUC and the class counts alone (Hanley and
    McNeil 1982, exponential approximation): what a node can send instead of the
    per-record scores a bootstrap would need. NaN with one class or no AUC."""
    if n_pos == 0 or n_neg == 0 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc)
           + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half); NaN with one class only."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC from class probabilities (one-vs-rest macro average for >2 classes)."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return binary_auc(y == 1, probs[:, 1])
    per_class = [binary_auc(y == c, probs[:, c]) for c in range(probs.shape[1])]
    finite = [a for a in per_class if np.isfinite(a)]
    return float(np.mean(finite)) if finite else float("nan")


#: the decision thresholds on P(class 1) a node scores its val split at (calibration):
#: steps of 0.05, finer at the ends, where a model trained under label skew puts them
THRESHOLDS = (0.01, 0.02, *(round(0.05 * i, 2) for i in range(1, 20)), 0.98, 0.99)
#: what a node gives per split for calibration (`calibrate_task`; its test split's
#: with prefix `test-`)
CALIBRATION_KEYS = ("num-examples", "prevalence", "tpr", "tnr")


@torch.no_grad()
def positive_scores(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """P(class 1) of a binary model for each input (stays at the node)."""
    model.eval()
    logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return torch.softmax(logits, dim=1)[:, 1].numpy()


def threshold_rates(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Per threshold of `THRESHOLDS`: the true-positive and true-negative rates (NaN for a
    class absent here), and the share of positives: rates over the whole split, never
    which record fell where. Disclosure control (rounding, k) is the caller's."""
    pos = np.asarray(y) == 1
    t = np.asarray(THRESHOLDS)[:, None]
    predicted = np.asarray(scores)[None, :] >= t
    tpr = predicted[:, pos].mean(axis=1) if pos.any() else np.full(len(THRESHOLDS), np.nan)
    tnr = (~predicted[:, ~pos]).mean(axis=1) if (~pos).any() else np.full(
        len(THRESHOLDS), np.nan)
    return {"prevalence": float(pos.mean()) if len(pos) else float("nan"),
            "tpr": tpr.tolist(), "tnr": tnr.tolist()}


def _pooled(nodes: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per threshold, the true positives and true negatives of the nodes' splits pooled
    (estimated from each node's disclosed count, share of positives and rates; a node
    that withheld, or a class a node withheld, is left out), and the pooled class sizes."""
    tp, tn = np.zeros(len(THRESHOLDS)), np.zeros(len(THRESHOLDS))
    n_pos = n_neg = 0.0
    for node in nodes:
        n, prev = float(node.get("num-examples") or 0), float(node.get("prevalence", np.nan))
        if not (n > 0 and np.isfinite(prev)):
            continue
        tpr, tnr = np.asarray(node["tpr"], float), np.asarray(node["tnr"], float)
        if np.isfinite(tpr).all() and prev > 0:
            tp += tpr * n * prev
            n_pos += n * prev
        if np.isfinite(tnr).all() and prev < 1:
            tn += tnr * n * (1 - prev)
            n_neg += n * (1 - prev)
    return tp, tn, n_pos, n_neg


def pick_threshold(nodes: list[dict[str, Any]]) -> float:
    """The threshold of `THRESHOLDS` with the highest balanced accuracy over the nodes'
    val splits pooled. Each node gives `num-examples` (its disclosed count), `prevalence`
    and per-threshold `tpr`/`tnr` (rounded; NaN where withheld). Balanced accuracy, not
    accuracy: under label skew the val prevalence need not be that of deployment.
    0.5 (the argmax rule) when no node gave both classes."""
    tp, tn, n_pos, n_neg = _pooled(nodes)
    if n_pos == 0 or n_neg == 0:
        return 0.5
    balanced = (tp / n_pos + tn / n_neg) / 2
    # among equal scores, the threshold nearest 0.5
    order = np.argsort(np.abs(np.asarray(THRESHOLDS) - 0.5), kind="stable")
    return float(THRESHOLDS[int(order[np.argmax(balanced[order])])])


def accuracy_at(nodes: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """Accuracy and balanced accuracy at `threshold` (one of `THRESHOLDS`) over the
    nodes' splits pooled, from the same per-node rates (NaN when no node gave any)."""
    tp, tn, n_pos, n_neg = _pooled(nodes)
    i = THRESHOLDS.index(threshold)
    if n_pos + n_neg == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan")}
    balanced = (tp[i] / n_pos + tn[i] / n_neg) / 2 if n_pos and n_neg else float("nan")
    return {"accuracy": float((tp[i] + tn[i]) / (n_pos + n_neg)),
            "balanced_accuracy": float(balanced)}
