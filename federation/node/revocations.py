"""The portal's revocation list at the node: a permit revoked (or signed by a retired
key) is refused, and a node that cannot know whether a permit was revoked runs nothing.
The list is pulled from the portal per use, with a cached copy as fallback."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient, PortalError
from federation.node.refusal import Refusal

REVOKED_CACHE_FILE = "revoked-permits.json"
DEFAULT_REVOCATION_MAX_AGE_S = 24 * 3600
REVOCATION_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RevocationList:
    revoked: frozenset[str]
    source: str  # "portal" or "cache"
    fetched_at: float
    retired_keys: frozenset[str] = frozenset()  # permit keys whose signatures are refused


def fetch_revoked(
    client: PortalClient,
    cache_path: Path,
    *,
    timeout: float = REVOCATION_TIMEOUT_S,
    max_age_s: float = DEFAULT_REVOCATION_MAX_AGE_S,
) -> RevocationList:
    """The portal's revoked permits and retired permit keys (`client.revoked_permits`); on
    success refresh the cache file, otherwise fall back to the cache if it is younger than
    `max_age_s`. With neither, raise Refusal: a node that cannot know whether a permit was
    revoked does not run it."""
    url = f"{client.portal_url}/v1/permits/revoked"
    problem = ""
    try:
        body = client.revoked_permits(timeout=timeout)
        ids, retired = body["revoked"], body["retired_keys"]
        now = time.time()
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"revoked": ids, "retired_keys": retired, "fetched_at": now}))
        os.replace(tmp, cache_path)
        return RevocationList(frozenset(ids), "portal", now, frozenset(retired))
    except PortalError as exc:
        problem = str(exc)
    if cache_path.exists():
        data = json.loads(cache_path.read_text())
        age = time.time() - float(data["fetched_at"])
        if age <= max_age_s:
            return RevocationList(frozenset(data["revoked"]), "cache", float(data["fetched_at"]),
                                  frozenset(data.get("retired_keys", [])))
        problem += f"; cached list is {age:.0f}s old (max {max_age_s:.0f}s)"
    raise Refusal(
        "revocation-unknown",
        f"cannot check revocations: portal {url} unreachable ({problem}) and no fresh cached list",
    )


def portal_revocations(home: NodeHome) -> RevocationList:
    """The default revocation source of a node home: its portal, then its cache, through
    the node's one client (its own Keycloak URL and realm from node.toml, its cached
    token)."""
    max_age = home.config.revocation_max_age_s
    return fetch_revoked(PortalClient.for_home(home), home.path / REVOKED_CACHE_FILE,
                         max_age_s=max_age)
