"""The portal's SQL, one module per domain: the only place that talks to DuckDB.

Each module declares `COMPONENT` and `MIGRATIONS`; `migrate_all` applies them at startup.
"""

from __future__ import annotations

from tre.core.db import Database


def migrate_all(db: Database) -> None:
    from tre.portal.store import (
        access,
        airlock,
        catalogue,
        checkpoints,
        consent,
        nodes,
        participation,
        runs,
        synthetic,
    )

    for module in (access, catalogue, airlock, runs, consent, synthetic, nodes, checkpoints,
                   participation):
        db.migrate(module.COMPONENT, module.MIGRATIONS)
