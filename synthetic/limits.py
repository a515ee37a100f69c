"""How many rows each report looks at, so reports on 100 k-row tables cost seconds.

Every figure is computed on a seeded random subsample when a table is larger
than the cap. The caps are set so that the statistical error of each figure is
small next to the gate's thresholds (e.g. 2 000 members vs 2 000 non-members put
the standard error of the attack advantage near 0.02 against a limit of 0.1),
while the whole pipeline stays within a small multiple of the bare fit+sample
time. Exact copies are always counted on every synthetic row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ReportLimits:
    """Caps on the rows used by each report (seeded subsamples above the cap)."""

    #: Real and synthetic rows given to SDV's quality and diagnostic reports.
    quality_rows: int = 5_000
    #: Rows used to train each utility classifier (synthetic and real).
    utility_rows: int = 20_000
    #: Query rows for distance to closest record and for membership inference
    #: (synthetic rows, held-out rows, training rows as members).
    distance_rows: int = 2_000
    #: Reference rows searched for the nearest record (training rows for DCR,
    #: synthetic rows for the membership attack).
    reference_rows: int = 20_000
    #: Rows of each of training / control / synthetic given to anonymeter.
    anonymeter_rows: int = 1_000
    #: Attacks per anonymeter evaluator (moderate: seconds, not minutes).
    anonymeter_attacks: int = 200
    #: Secrets (columns) tried by the attribute-inference attack; the worst counts.
    anonymeter_secrets: int = 3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
