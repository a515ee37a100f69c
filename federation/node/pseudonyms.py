"""Patient identifiers into the pseudonyms a node stores (DESIGN invariant 8).

Federated (node.toml `pseudonymiser_url`): the federation-wide pseudonym, from the
pseudonymisation service's oblivious PRF. The node normalises each identifier
(system + value), blinds it and sends only the blinded element, so the same person
has one pseudonym at every hospital and in the stewards' consent registry, and no
identifier leaves the node. Identifiers with no known system, or malformed ones,
are refused row by row before anything is sent.

Offline (no pseudonymiser, an explicit choice at `tre node init`): a keyed hash with
the node's own key. Pseudonyms are then node-local: consent recorded by identifier
elsewhere cannot reach them and records cannot be linked across hospitals; every
ingestion report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from federation.node.errors import IngestError
from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient
from pseudonymisation.client import PseudonymClient, PseudonymisationError
from pseudonymisation.identifiers import SYSTEMS, Identifier, IdentifierError

OFFLINE_NOTE = ("pseudonyms are node-local (offline key): consent recorded by identifier "
                "cannot reach these records and they cannot be linked across hospitals")


class NodePseudonymiser:
    """One ingestion's way from local patient identifiers to stored pseudonyms."""

    def __init__(self, home: NodeHome, id_system: str | None) -> None:
        self.home = home
        self.url = home.config.pseudonymiser_url
        self.id_system = id_system or home.config.identifier_system or None
        # Offline, pseudonyms stay the node's keyed hash of the raw local id, as they
        # always were: the identifier system only matters to the federation pseudonym.
        if self.federated and not self.id_system:
            raise IngestError(
                "this node derives federation pseudonyms from person identifiers: pass "
                "--id-system SYSTEM naming the identifiers' system (e.g. "
                "urn:oid:1.2.250.1.213.1.4.8 for the French INS), or set identifier_system "
                "in node.toml")
        if self.federated and self.id_system not in SYSTEMS:
            raise IngestError(f"--id-system {self.id_system!r} is not a known identifier "
                              f"system: known are {', '.join(sorted(SYSTEMS))}")

    @property
    def federated(self) -> bool:
        return bool(self.url)

    @property
    def mode(self) -> str:
        return "federation" if self.federated else "node-local"

    def problem(self, local_id: str) -> str | None:
        """Why this identifier cannot be pseudonymised (checked locally), else None."""
        if not self.federated:
            return None
        try:
            Identifier(self.id_system, local_id)
        except IdentifierError as exc:  # the report never repeats an identifier
            return str(exc).replace(local_id, "<id>") if local_id else str(exc)
        return None

    @cached_property
    def _client(self) -> PseudonymClient:
        """One client for the whole ingestion: its connection and the service's batch
        limit serve every chunk."""
        return PseudonymClient(self.url, PortalClient.for_home(self.home).access_token,
                               verify=self.home.portal_verify)

    def many(self, local_ids: Sequence[str]) -> list[str]:
        """Pseudonyms for identifiers that passed `problem` (the client sends each
        person once, in batches)."""
        if not local_ids:
            return []
        if not self.federated:
            return self.home.pseudonymise_many(local_ids)
        try:
            return self._client.pseudonyms([Identifier(self.id_system, v) for v in local_ids])
        except (PseudonymisationError, IdentifierError) as exc:
            raise IngestError(f"{self.url}: {exc}") from None
