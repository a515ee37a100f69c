"""Telling the portal which people a permit run used here, so that each person can see
the projects that ran on their records (issue 14, a person's own view).

After the gate hands a Flower run of a permit its consented cohort, the node sends
the portal, through its authenticated portal channel, one membership tag per person
(`tre.core.run_members`: SHA-256 of run and pseudonym), never a pseudonym. A tag
reveals a person's membership only to whoever already holds their pseudonym, and
tags of two runs do not link; `tre.portal.services.participation` says what the
portal learns. Every round reports again (the cohort may shrink as consent is
withdrawn; the portal keeps the union, which is what the run used). Sending is
audited (`run.members`); a portal that does not take the report is audited
(`run.members_failed`) and does not stop the run: this is the person's information,
not a governance check, and the node's audit keeps the read either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.node.home import NodeHome
from federation.node.portal_client import PortalClient, PortalError
from tre.core.audit import AuditAction
from tre.core.run_members import MAX_TAGS_PER_REPORT, member_tag

FLOWER_RUN_PREFIX = "flwr-"


def report(home: NodeHome, run: str, dataset_id: str, pseudonyms: Sequence[str],
           client: PortalClient | None = None) -> None:
    """Send the tags of `pseudonyms` for a Flower run (`flwr-<id>`); other runs (local
    operator queries, tests) have no portal run to attach them to and are skipped."""
    if not run.startswith(FLOWER_RUN_PREFIX) or not pseudonyms:
        return
    flower_run_id = int(run.removeprefix(FLOWER_RUN_PREFIX))
    tags = sorted({member_tag(run, p) for p in pseudonyms})
    details = {"flower_run_id": flower_run_id, "dataset_id": dataset_id, "tags": len(tags)}
    try:
        client = client or PortalClient.for_home(home)
        new = 0
        for start in range(0, len(tags), MAX_TAGS_PER_REPORT):
            new += int(client.report_run_members(
                flower_run_id, dataset_id, tags[start:start + MAX_TAGS_PER_REPORT])["new"])
    except (PortalError, KeyError, TypeError, ValueError) as exc:
        home.audit.record(actor=home.actor, action=AuditAction.RUN_MEMBERS_FAILED,
                          object_type="run", object_id=run,
                          details={**details, "problem": str(exc)[:500]})
        return
    home.audit.record(actor=home.actor, action=AuditAction.RUN_MEMBERS, object_type="run",
                      object_id=run, details={**details, "new": new})
