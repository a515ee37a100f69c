"""Every action a party writes to its audit log (`tre.core.audit`), in one place.

A StrEnum: a member *is* its string, so stored rows, exported logs and their hashes are
the same as when the actions were free strings. Write sites in product code name a
member; an action built from data (`AuditAction(f"consent.{change}")`) fails loudly
when the value is not listed here. The chain itself stays generic: it verifies other
parties' exported logs and older rows whatever their actions
(tests/unit/test_audit_actions.py keeps free strings out of the write sites).
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    # --- portal: access requests (`request.<outcome>` is the quorum's outcome) ---
    REQUEST_CREATE = "request.create"
    REQUEST_UPDATE = "request.update"
    REQUEST_SUBMIT = "request.submit"
    REQUEST_WITHDRAW = "request.withdraw"
    REQUEST_REVIEW = "request.review"  # one reviewer's vote
    REQUEST_APPROVED = "request.approved"
    REQUEST_REJECTED = "request.rejected"
    REQUEST_CHANGES_REQUESTED = "request.changes_requested"

    # --- portal: permits and registered apps ---
    PERMIT_ISSUE = "permit.issue"
    PERMIT_REVOKE = "permit.revoke"
    PERMIT_EXPIRE = "permit.expire"
    APP_REGISTER = "app.register"  # an approved app hash a permit may name
    PERMIT_KEY_ROTATE = "permit_key.rotate"
    PERMIT_KEY_RETIRE = "permit_key.retire"

    # --- portal: runs (`_set` writes submitted / fail / complete with the state) ---
    RUN_START = "run.start"
    RUN_SUBMITTED = "run.submitted"  # reached the SuperLink
    RUN_TICKET = "run.ticket"  # a node asked for the ticket binding a Flower run to a permit
    RUN_CANCEL = "run.cancel"
    RUN_REATTACH = "run.reattach"  # portal restarted; reattached to a run Flower still knows
    RUN_FAIL = "run.fail"
    RUN_COMPLETE = "run.complete"
    RUN_RESULTS = "run.results"
    RUN_MEMBERS = "run.members"  # tags of the people a run used: portal: stored; node: sent
    RUN_MEMBERS_FAILED = "run.members_failed"  # node: the portal did not take them

    # --- portal: airlock (`output.<OutputDecision>` is one checker's decision) ---
    OUTPUT_SUBMIT = "output.submit"
    OUTPUT_APPROVE = "output.approve"
    OUTPUT_REJECT = "output.reject"
    OUTPUT_DOWNLOAD = "output.download"

    # --- portal: consent registry (`consent.<change>` as the store classifies a version) ---
    CONSENT_RECORD = "consent.record"
    CONSENT_UPDATE = "consent.update"
    CONSENT_WITHDRAW = "consent.withdraw"
    CONSENT_RECONSENT = "consent.reconsent"  # withdrawn, then active again
    CONSENT_IMPORT = "consent.import"  # a FHIR bundle / batch
    CONSENT_SNAPSHOT = "consent.snapshot"  # a node pulled a snapshot or delta

    # --- portal: catalogue, feasibility, synthetic releases, nodes, operations ---
    CATALOGUE_PUBLISH = "catalogue.publish"  # portal: received; node: sent
    FEASIBILITY_RUN = "feasibility.run"
    FEASIBILITY_RESULT = "feasibility.result"
    SYNTHETIC_PUBLISH = "synthetic.publish"  # portal: received; node: sent
    SYNTHETIC_WITHDRAW = "synthetic.withdraw"  # portal: taken down; node: asked to
    SYNTHETIC_DOWNLOAD = "synthetic.download"
    NODE_ENROL = "node.enrol"  # portal: accepted the node's key; node: enrolled
    STORE_BACKUP = "store.backup"

    # --- portal: audit of the audit (checkpoints, node exports, independent verification) ---
    AUDIT_CHECKPOINT = "audit.checkpoint"  # a node's signed head accepted
    AUDIT_CHECKPOINT_REFUSED = "audit.checkpoint_refused"
    AUDIT_EXPORT_UPLOAD = "audit.export_upload"  # a node's signed log export stored
    AUDIT_EXPORT_REFUSED = "audit.export_refused"
    AUDIT_EXPORT_READ = "audit.export_read"
    AUDIT_VERIFICATION = "audit.verification"  # an auditor's `tre audit verify` verdict

    # --- node: setup, keys, apps ---
    NODE_INIT = "node.init"
    NODE_REENROL = "node.reenrol"
    PERMIT_KEY_REFRESH = "permit_key.refresh"  # pinned portal permit keys changed
    APP_REFUSED = "app.refused"  # a Flower app (FAB) the node would not run

    # --- node: ingestion (`ingest.<IngestReport.source_kind>`) ---
    INGEST_TABLE = "ingest.table"
    INGEST_IMAGES = "ingest.images"
    INGEST_DICOM = "ingest.dicom"
    INGEST_MEDMNIST = "ingest.medmnist"

    # --- node: consent ---
    CONSENT_SYNC = "consent.sync"
    CONSENT_SYNC_FAILED = "consent.sync_failed"
    CONSENT_REFUSED = "consent.refused"  # no fresh snapshot: nothing runs
    CONSENT_FILTER = "consent.filter"  # the consented cohort a use was given

    # --- node: governance of federated runs, queries and the ε-ledger ---
    DATA_READ = "data.read"
    FEDERATION_REFUSED = "federation.refused"
    QUERY_ANSWER = "query.answer"  # a run's evaluation/audit query against its weights
    QUERY_COHORT = "query.cohort"  # a local cohort count (the query, not its answer)
    QUERY_FEASIBILITY = "query.feasibility"  # a federated feasibility count
    QUERY_REFUSED = "query.refused"
    PRIVACY_BUDGET_SET = "privacy.budget_set"
    PRIVACY_RESERVE = "privacy.reserve"
    PRIVACY_CHARGE = "privacy.charge"
    PRIVACY_RELEASE = "privacy.release"
    PRIVACY_SETTLE_INTERRUPTED = "privacy.settle_interrupted"  # reservation of a dead run

    # --- node: catalogue and synthetic data ---
    CATALOGUE_PUBLISH_FAILED = "catalogue.publish_failed"
    SYNTHETIC_GENERATE = "synthetic.generate"
    SYNTHETIC_COHORT_UNCHANGED = "synthetic.cohort_unchanged"  # nothing to regenerate
    SYNTHETIC_REFUSED = "synthetic.refused"  # the node's gate refused a synthesis
    SYNTHETIC_PUBLISH_REFUSED = "synthetic.publish_refused"
    SYNTHETIC_PUBLISH_FAILED = "synthetic.publish_failed"
    SYNTHETIC_WITHDRAW_FAILED = "synthetic.withdraw_failed"

    # --- pseudonymisation service ---
    KEY_CREATE = "key.create"  # the OPRF key, once
    PSEUDONYM_EVALUATE = "pseudonym.evaluate"
    PSEUDONYM_REFUSE = "pseudonym.refuse"  # over the rate limit
