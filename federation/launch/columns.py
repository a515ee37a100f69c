"""Which columns of a clinical table a run trains on, as the run parameters name them.

A table model's input width must be known to the ServerApp (it builds the initial
model) and agreed by every node, and the server never sees a table: so the columns,
and the categories of every text column, are part of the run, never read from data.

    features = "mean radius, mean texture, smoker=no|yes"
    label    = "diagnosis=benign|malignant"      (or a numeric 0 / 1 column: "target")
    label    = "target>140"                      (a numeric outcome binarised: "target>=140")

A plain name is a numeric variable (one input); `name=a|b|c` a text variable, one-hot
over the categories listed, in that order (a value outside them is all zeros). For the
label, the categories give the class order, so their count is the run's `num_classes`.
A label `name>number` (or `>=`) defines the outcome from a continuous variable, as a
protocol does: class 1 where the value is above the threshold, class 0 elsewhere, so two
classes; the threshold is part of the approved run, never chosen from the data.
Whether the named variables exist, and have that kind, is checked at each node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_RESERVED = ",=|<>"
_THRESHOLD_FORM = "use name>number or name>=number, e.g. target>140"


@dataclass(frozen=True)
class Column:
    """One variable of the table: numeric (`categories` empty) or text, one-hot; a
    numeric label may be binarised at `threshold` (`inclusive`: `>=` rather than `>`)."""

    name: str
    categories: tuple[str, ...] = ()
    threshold: float | None = None
    inclusive: bool = False

    @property
    def width(self) -> int:
        """How many model inputs the column becomes."""
        return len(self.categories) or 1

    @property
    def classes(self) -> int | None:
        """How many classes the column defines as a label; None for a plain numeric one,
        whose values are the class indices themselves."""
        if self.categories:
            return len(self.categories)
        return 2 if self.threshold is not None else None

    def outcome(self, values: Any) -> Any:
        """A threshold label's class: True (1) where a value (a number or a numpy array)
        is above the threshold (or at it, when `inclusive`)."""
        return values >= self.threshold if self.inclusive else values > self.threshold


@dataclass(frozen=True)
class TableSpec:
    features: tuple[Column, ...]
    label: Column | None

    @property
    def in_features(self) -> int:
        return sum(c.width for c in self.features)

    @property
    def numeric(self) -> tuple[bool, ...]:
        """For each model input, whether it is a numeric variable (not a one-hot slot)."""
        return tuple(not c.categories for c in self.features for _ in range(c.width))


def parse_column(text: str, key: str) -> Column:
    """`name` or `name=a|b`; ValueError naming run parameter `key` otherwise."""
    if "<" in text or ">" in text:
        raise ValueError(f"{key}: {text.strip()!r}: a threshold defines the label only "
                         "(a feature is name or name=category|category)")
    name, sep, cats = (part.strip() for part in text.partition("="))
    categories = tuple(c.strip() for c in cats.split("|")) if sep else ()
    if not name or any(ch in name for ch in _RESERVED):
        raise ValueError(f"{key}: {text.strip()!r} does not name a column "
                         "(use name or name=category|category)")
    if sep and (len(categories) < 2 or "" in categories
                or len(set(categories)) != len(categories)):
        raise ValueError(f"{key}: {name!r} needs two or more distinct categories "
                         "(name=a|b)")
    return Column(name, categories)


def parse_label(text: str) -> Column:
    """The run's label: a column (`parse_column`) or `name>number` / `name>=number`, a
    numeric variable binarised; ValueError naming the `label` parameter otherwise."""
    if "<" in text:
        raise ValueError(f"label: {text.strip()!r}: a threshold label puts class 1 above "
                         f"the threshold: {_THRESHOLD_FORM}")
    if ">" not in text:
        return parse_column(text, "label")
    name, _, rest = (part.strip() for part in text.partition(">"))
    inclusive = rest.startswith("=")
    number = rest[1:].strip() if inclusive else rest
    if not name or any(ch in name for ch in _RESERVED):
        raise ValueError(f"label: {text.strip()!r} does not name a column ({_THRESHOLD_FORM})")
    if not number:
        raise ValueError(f"label: {text.strip()!r} names no threshold: {_THRESHOLD_FORM}")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"label: threshold {number!r} of {name!r} is not a number: "
                         f"{_THRESHOLD_FORM}") from None
    if not math.isfinite(threshold):
        raise ValueError(f"label: threshold {number!r} of {name!r} is not a finite number")
    return Column(name, threshold=threshold, inclusive=inclusive)


def table_spec(features: str, label: str) -> TableSpec:
    """The run's table columns; ValueError naming the run parameter at fault."""
    cols = tuple(parse_column(part, "features") for part in features.split(",")
                 if part.strip())
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        raise ValueError(f"features: a column is named twice ({', '.join(names)})")
    target = parse_label(label) if label.strip() else None
    if target is not None and target.name in names:
        raise ValueError(f"label: {target.name!r} is also a feature")
    return TableSpec(cols, target)
