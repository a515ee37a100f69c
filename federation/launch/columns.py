"""Which columns of a clinical table a run trains on, as the run parameters name them.

A table model's input width must be known to the ServerApp (it builds the initial
model) and agreed by every node, and the server never sees a table: so the columns,
and the categories of every text column, are part of the run, never read from data.

    features = "mean radius, mean texture, smoker=no|yes"
    label    = "diagnosis=benign|malignant"      (or a numeric 0 / 1 column: "target")

A plain name is a numeric variable (one input); `name=a|b|c` a text variable, one-hot
over the categories listed, in that order (a value outside them is all zeros). For the
label, the categories give the class order, so their count is the run's `num_classes`.
Whether the named variables exist, and have that kind, is checked at each node.
"""

from __future__ import annotations

from dataclasses import dataclass

_RESERVED = ",=|"


@dataclass(frozen=True)
class Column:
    """One variable of the table: numeric (`categories` empty) or text, one-hot."""

    name: str
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """How many model inputs the column becomes."""
        return len(self.categories) or 1


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


def table_spec(features: str, label: str) -> TableSpec:
    """The run's table columns; ValueError naming the run parameter at fault."""
    cols = tuple(parse_column(part, "features") for part in features.split(",")
                 if part.strip())
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        raise ValueError(f"features: a column is named twice ({', '.join(names)})")
    target = parse_column(label, "label") if label.strip() else None
    if target is not None and target.name in names:
        raise ValueError(f"label: {target.name!r} is also a feature")
    return TableSpec(cols, target)
