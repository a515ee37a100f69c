"""Disclosure control: for counts that leave a node (feasibility, catalogue), and the
bound on what a DP-trained model can disclose about membership (`dp_advantage_bound`:
the portal's airlock sets each node's empirical membership audit beside it).

Pure functions, no I/O: the node applies them to its exact counts, the portal may
apply the same rule again (it is idempotent on already-disclosed values) and
uses `combine` so that a total never reveals the suppressed cells inside it.

The rule (SACRO / ACRO defaults, DESIGN §5):

1. a count below the threshold k (default 10), zero included, is shown as "<k";
2. every other count is rounded to the nearest multiple of 5 (halves up);
3. before rounding, the count is perturbed by a small amount (-2..+2) taken from
   the **cell key** of the records behind it (the ABS "cell key method"): every
   record has a secret pseudo-random key, a cell's key is the sum of its records'
   keys modulo 2**64. The same set of records always gets the same perturbation,
   so asking again gains nothing, while sets differing by even one record get
   unrelated perturbations. A count whose perturbed value falls below k is
   suppressed as well, which blurs the edge at k.

Why both: with rounding alone the difference of two overlapping cohorts is a
multiple of 5, so a single pair of queries never shows a 1-3 record difference,
but a chain of cohorts growing one record at a time shows exactly where a rounded
count steps (… 100, 100, 105 …: that cohort holds 103) and from there every exact
count of the chain. The cell-key perturbation moves those steps at random.
Neither stops an attacker with an unlimited number of overlapping queries
averaging the noise out; that is what query auditing (every query is in the node
audit log) and the review of requests are for.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Sequence

DEFAULT_K = 10
DEFAULT_BASE = 5
DEFAULT_MAX_NOISE = 2
DISCLOSURE_KEY_PURPOSE = "disclosure-cell-key"
"""What a node derives its records' cell-key secret for (`NodeHome.derive_key`)."""
_MOD = 1 << 64

Disclosed = int | str
"""An output cell: a rounded count (int) or a suppressed marker such as "<10"."""


def round_to(count: int, base: int = DEFAULT_BASE) -> int:
    """Nearest multiple of `base`, halves rounded up (102 -> 100, 103 -> 105)."""
    if base <= 1:
        return int(count)
    return ((int(count) + base // 2) // base) * base


def suppressed_marker(k: int = DEFAULT_K) -> str:
    return f"<{k}"


def is_suppressed(value: Disclosed) -> bool:
    return isinstance(value, str)


def record_key(secret: bytes, record_id: str) -> int:
    """A record's secret 64-bit key (keyed hash of its pseudonym or study id)."""
    digest = hmac.new(secret, record_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def record_keys(secret: bytes, record_ids: Iterable[str]) -> list[int]:
    base = hmac.new(secret, digestmod=hashlib.sha256)
    out = []
    for rid in record_ids:
        h = base.copy()
        h.update(rid.encode())
        out.append(int.from_bytes(h.digest()[:8], "big"))
    return out


def cell_key(keys: Iterable[int]) -> int:
    """The cell's key: sum of its records' keys mod 2**64 (exact, order-independent)."""
    return sum(keys) % _MOD


def perturbation(key: int, max_noise: int = DEFAULT_MAX_NOISE) -> int:
    """Map a cell key uniformly onto -max_noise..+max_noise."""
    width = 2 * max_noise + 1
    return (key * width >> 64) - max_noise


def disclose(
    count: int,
    *,
    k: int = DEFAULT_K,
    base: int = DEFAULT_BASE,
    key: int | None = None,
    max_noise: int = DEFAULT_MAX_NOISE,
) -> Disclosed:
    """The publishable form of an exact count.

    Without `key`: suppress below k, else round to `base`. With a cell key: perturb
    first, and suppress if the exact or the perturbed count is below k.
    """
    count = int(count)
    if count < 0:
        raise ValueError("counts are never negative")
    if count < k:
        return suppressed_marker(k)
    noisy = count + (perturbation(key, max_noise) if key is not None else 0)
    if noisy < k:
        return suppressed_marker(k)
    rounded = round_to(noisy, base)
    # With k not a multiple of base, rounding could show a value under k: suppress it.
    return rounded if rounded >= k else suppressed_marker(k)


def largest_within(
    value: Disclosed,
    *,
    k: int = DEFAULT_K,
    base: int = DEFAULT_BASE,
    max_noise: int = DEFAULT_MAX_NOISE,
) -> int:
    """The largest value `disclose` can show for any subset of the records behind a
    shown `value`: an honest upper bound from published counts (the portal bounds a
    SecAgg+ weight, a node's disclosed training count, by its catalogue entry).

    The exact count may lie above `value` by the rounding (up to base - 1 - base // 2)
    and the perturbation (max_noise); "<k" hides up to k - 1 plus the perturbation, or
    more where rounding shows values just under k; a subset's own count may be shown
    up to max_noise higher again, then rounded."""
    spread = base - 1 - base // 2 if base > 1 else 0
    if is_suppressed(value):
        below_k = ((k - 1) // base) * base if base > 1 else k - 1
        shown = max(k - 1, below_k + spread)
    else:
        shown = int(value) + spread
    return round_to(shown + 2 * max_noise, base)


def disclosed_count(record_ids: Iterable[str], *, secret: bytes, k: int = DEFAULT_K,
                    base: int = DEFAULT_BASE) -> Disclosed:
    """The publishable count of a set of records: suppressed below k, perturbed by the
    set's cell key, rounded (`disclose`)."""
    ids = list(record_ids)
    return disclose(len(ids), k=k, base=base, key=cell_key(record_keys(secret, ids)))


def disclose_statistic(value: float, contributors: int, *, k: int = DEFAULT_K,
                       digits: int = 3) -> float:
    """A statistic over records (a mean loss, an accuracy, an AUC): withheld (NaN) when
    fewer than k records contribute (the threshold rule of ACRO for statistics),
    otherwise rounded to `digits` decimals so that it carries no record-level detail."""
    if contributors < k or not math.isfinite(value):
        return float("nan")
    return round(float(value), digits)


def redisclose(value: Disclosed, *, k: int = DEFAULT_K, base: int = DEFAULT_BASE) -> Disclosed:
    """Apply the rule to a value that may already be disclosed (portal side): markers
    stay markers, numbers are suppressed below k and rounded to `base`."""
    if is_suppressed(value):
        return value
    return disclose(int(value), k=k, base=base)


def combine(
    values: Sequence[Disclosed], *, k: int = DEFAULT_K, base: int = DEFAULT_BASE
) -> Disclosed:
    """Total of disclosed cells (e.g. one count per node) that reveals no hidden cell.

    Only shown cells are added. If any cell is suppressed the total is returned as
    ">=S" (S the sum of the shown cells): adding a guess for the hidden cells, or
    subtracting the shown total from another total, would give them away.
    """
    shown = [int(v) for v in values if not is_suppressed(v)]
    hidden = len(values) - len(shown)
    total = sum(shown)
    if hidden == 0:
        return redisclose(total, k=k, base=base)
    if not shown:
        return suppressed_marker(k * hidden) if hidden > 1 else suppressed_marker(k)
    return f">={round_to(total, base)}"


def dp_advantage_bound(epsilon: float, delta: float) -> float:
    """The most any membership attacker can gain on a record under (ε, δ)-DP:
    (e^ε − 1 + 2δ) / (e^ε + 1) (the hypothesis-testing view of DP, Kairouz et al. 2015).
    It is loose: at ε = 8 it allows 0.999, so the empirical audit is what says more."""
    if epsilon > 50:
        return 1.0
    e = math.exp(epsilon)
    return min(1.0, (e - 1 + 2 * delta) / (e + 1))
