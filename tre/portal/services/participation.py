"""Which runs used which people's records, as each node reports it (issue 14).

The choice: at every permit-run read, a node sends the portal the membership tags
(`tre.core.run_members`: SHA-256 of run and pseudonym) of the people in its consented
cohort, through its authenticated portal channel; the portal keeps them per Flower
run, hospital and dataset, and shows a signed-in person only the runs whose tags
include their own (`me.my_runs`), with project-level facts. What the portal learns:
for each run, how many people each hospital used (it knew the counts' order from the
ε-ledger anyway), and membership only for pseudonyms it already holds: those in the
consent registry (whose consent it already knows to cover the permit's purpose) and
those of citizens while they are signed in. It never learns who else was in a cohort,
and tags of two runs do not link. A node reports only its own hospital's members of a
run the portal submitted to one of the permit's hospitals: anything else is 404.
"""

from __future__ import annotations

from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.portal.consent_schemas import RunMembersIn, RunMembersOut
from tre.portal.context import Portal, utcnow
from tre.portal.services.runs import hospital_run
from tre.portal.store import participation as store


def record_members(portal: Portal, principal: Principal, flower_run_id: str,
                   body: RunMembersIn) -> RunMembersOut:
    """Store one node's report of one run (idempotent), audited with its counts."""
    with portal.db.transaction() as cur:
        run, _, _ = hospital_run(cur, flower_run_id, principal.hospital_id)
        new = store.add_members(cur, int(flower_run_id), principal.hospital_id,
                                body.dataset_id, body.tags, utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.RUN_MEMBERS,
                            object_type="run", object_id=run["id"],
                            details={"flower_run_id": int(flower_run_id),
                                     "hospital": principal.hospital_id,
                                     "dataset_id": body.dataset_id, "tags": len(body.tags),
                                     "new": new})
    return RunMembersOut(new=new)
