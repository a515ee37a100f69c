"""The portal's long-lived parts (store, audit log, permit keys), built once per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from access_control.permits import PermitKeyRing
from tre.core.audit import AuditLog
from tre.core.db import Database, ReadCache
from tre.portal.citizens import CitizenPseudonyms
from tre.portal.settings import PortalSettings
from tre.portal.store import migrate_all


@dataclass
class Portal:
    settings: PortalSettings
    db: Database
    audit: AuditLog
    keys: PermitKeyRing
    run_threads: dict = field(default_factory=dict)  # run id -> the thread following it
    closing: threading.Event = field(default_factory=threading.Event)
    cache: ReadCache = field(init=False)  # hot reads (a request polled by its researcher)
    citizens: CitizenPseudonyms = field(init=False)  # a citizen's token -> their pseudonym

    def __post_init__(self) -> None:
        self.cache = ReadCache(self.db)
        self.citizens = CitizenPseudonyms(self.settings)

    @classmethod
    def open(cls, settings: PortalSettings) -> Portal:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database)
        migrate_all(db)
        audit = AuditLog(db)
        return cls(settings, db, audit, PermitKeyRing.load_or_create(settings.keys))

    def close(self) -> None:
        """Let run followers go (the runs go on; the next portal reattaches), then close."""
        self.closing.set()
        for thread in list(self.run_threads.values()):
            thread.join(timeout=10)
        self.citizens.close()
        self.db.close()


def utcnow() -> datetime:
    return datetime.now(UTC)
