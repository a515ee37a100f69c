"""The one table that says which realm roles may perform which action (invariant 5).

Routes and web pages ask `is_allowed` / `require(action)`; nobody writes ad-hoc role
checks. Ownership rules ("only your own request") are business rules and live in
the portal's services, on top of this table.
"""

from __future__ import annotations

from enum import StrEnum

from access_control.tokens import Principal


class Role(StrEnum):
    RESEARCHER = "researcher"
    REVIEWER = "reviewer"
    OUTPUT_CHECKER = "output_checker"
    STEWARD = "steward"
    NODE_OPERATOR = "node_operator"
    NODE = "node"
    AUDITOR = "auditor"
    ADMIN = "admin"
    CITIZEN = "citizen"  # a person, about their own records only (tre.portal.services.me)
    PORTAL = "portal"  # the portal's own service account (derives a citizen's pseudonym)


class Action(StrEnum):
    REQUEST_CREATE = "request.create"
    REQUEST_UPDATE = "request.update"
    REQUEST_SUBMIT = "request.submit"
    REQUEST_WITHDRAW = "request.withdraw"
    REQUEST_READ = "request.read"
    REQUEST_READ_ALL = "request.read_all"
    REQUEST_REVIEW = "request.review"
    PERMIT_READ = "permit.read"
    PERMIT_READ_ALL = "permit.read_all"
    PERMIT_REVOKE = "permit.revoke"
    PERMIT_REVOCATIONS = "permit.revocations"
    PERMIT_KEYS_ROTATE = "permit.keys_rotate"
    PERMIT_KEYS_RETIRE = "permit.keys_retire"
    STORE_BACKUP = "store.backup"
    APP_REGISTER = "app.register"
    APP_READ = "app.read"
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_EXPORT_UPLOAD = "audit.export_upload"
    AUDIT_EXPORT_READ = "audit.export_read"
    AUDIT_VERIFICATION_RECORD = "audit.verification_record"
    CATALOGUE_READ = "catalogue.read"
    CATALOGUE_PUBLISH = "catalogue.publish"
    SYNTHETIC_DOWNLOAD = "synthetic.download"
    SYNTHETIC_WITHDRAW = "synthetic.withdraw"
    FEASIBILITY_RUN = "feasibility.run"
    RUN_START = "run.start"
    RUN_READ = "run.read"
    RUN_READ_ALL = "run.read_all"
    RUN_CANCEL = "run.cancel"
    RUN_CANCEL_ANY = "run.cancel_any"
    RUN_TICKET = "run.ticket"
    RUN_MEMBERS = "run.members"
    OUTPUT_REVIEW = "output.review"
    OUTPUT_DOWNLOAD = "output.download"
    CONSENT_WRITE = "consent.write"
    CONSENT_READ = "consent.read"
    CONSENT_SNAPSHOT = "consent.snapshot"
    NODE_VIEW = "node.view"
    NODE_ENROL = "node.enrol"
    PSEUDONYM_EVALUATE = "pseudonym.evaluate"
    ME_READ = "me.read"
    ME_CONSENT = "me.consent"


R = Role
EVERY_USER = frozenset(Role) - {R.PORTAL}  # the portal's service account reads nothing of its own

POLICY: dict[Action, frozenset[Role]] = {
    Action.REQUEST_CREATE: frozenset({R.RESEARCHER}),
    Action.REQUEST_UPDATE: frozenset({R.RESEARCHER}),
    Action.REQUEST_SUBMIT: frozenset({R.RESEARCHER}),
    Action.REQUEST_WITHDRAW: frozenset({R.RESEARCHER}),
    Action.REQUEST_READ: frozenset({R.RESEARCHER, R.REVIEWER, R.AUDITOR, R.ADMIN}),
    Action.REQUEST_READ_ALL: frozenset({R.REVIEWER, R.AUDITOR, R.ADMIN}),
    Action.REQUEST_REVIEW: frozenset({R.REVIEWER}),
    Action.PERMIT_READ: frozenset({R.RESEARCHER, R.REVIEWER, R.AUDITOR, R.ADMIN}),
    Action.PERMIT_READ_ALL: frozenset({R.REVIEWER, R.AUDITOR, R.ADMIN}),
    Action.PERMIT_REVOKE: frozenset({R.REVIEWER, R.ADMIN}),
    Action.PERMIT_REVOCATIONS: frozenset({R.NODE, R.NODE_OPERATOR, R.REVIEWER, R.AUDITOR, R.ADMIN}),
    Action.PERMIT_KEYS_ROTATE: frozenset({R.ADMIN}),
    Action.PERMIT_KEYS_RETIRE: frozenset({R.ADMIN}),
    Action.STORE_BACKUP: frozenset({R.ADMIN}),
    Action.APP_REGISTER: frozenset({R.ADMIN}),
    Action.APP_READ: EVERY_USER,
    Action.AUDIT_READ: frozenset({R.AUDITOR, R.ADMIN}),
    Action.AUDIT_VERIFY: frozenset({R.AUDITOR, R.ADMIN}),
    Action.AUDIT_CHECKPOINT: frozenset({R.NODE}),
    # a node uploads its own signed log (own hospital only); an auditor fetches and
    # verifies it against the checkpoints, and records what was found
    Action.AUDIT_EXPORT_UPLOAD: frozenset({R.NODE}),
    Action.AUDIT_EXPORT_READ: frozenset({R.AUDITOR}),
    Action.AUDIT_VERIFICATION_RECORD: frozenset({R.AUDITOR}),
    Action.CATALOGUE_READ: EVERY_USER,
    Action.CATALOGUE_PUBLISH: frozenset({R.NODE}),
    Action.SYNTHETIC_DOWNLOAD: frozenset({R.RESEARCHER, R.REVIEWER, R.AUDITOR}),
    # a steward (consent withdrawn) any release; a node its own hospital's (service checks)
    Action.SYNTHETIC_WITHDRAW: frozenset({R.STEWARD, R.NODE}),
    Action.FEASIBILITY_RUN: frozenset({R.RESEARCHER}),
    Action.RUN_START: frozenset({R.RESEARCHER}),
    Action.RUN_READ: frozenset({R.RESEARCHER, R.REVIEWER, R.OUTPUT_CHECKER, R.AUDITOR, R.ADMIN}),
    Action.RUN_READ_ALL: frozenset({R.REVIEWER, R.OUTPUT_CHECKER, R.AUDITOR, R.ADMIN}),
    Action.RUN_CANCEL: frozenset({R.RESEARCHER, R.ADMIN}),
    Action.RUN_CANCEL_ANY: frozenset({R.ADMIN}),
    # a hospital's node fetches the ticket of a run the portal submitted (own hospital only)
    Action.RUN_TICKET: frozenset({R.NODE}),
    # ... and reports the membership tags of the people the run used (own hospital only)
    Action.RUN_MEMBERS: frozenset({R.NODE}),
    Action.OUTPUT_REVIEW: frozenset({R.OUTPUT_CHECKER}),
    Action.OUTPUT_DOWNLOAD: frozenset({R.RESEARCHER}),
    Action.CONSENT_WRITE: frozenset({R.STEWARD}),
    Action.CONSENT_READ: frozenset({R.STEWARD, R.AUDITOR}),
    Action.CONSENT_SNAPSHOT: frozenset({R.NODE}),
    Action.NODE_VIEW: frozenset({R.NODE_OPERATOR, R.AUDITOR, R.ADMIN}),
    # a node registers its own Flower key (own hospital only, checked by the service)
    Action.NODE_ENROL: frozenset({R.NODE, R.ADMIN}),
    # the pseudonymisation service's OPRF: hospitals at ingestion, stewards recording
    # consent for a person; each caller is rate-limited there (pseudonymisation.service);
    # the portal for a citizen who signs in, from the identifier in their token
    Action.PSEUDONYM_EVALUATE: frozenset({R.NODE, R.STEWARD, R.PORTAL}),
    # a person's own consents, receipts and the runs that used their records: the
    # service scopes every read and change to the pseudonym of the caller's identifier
    Action.ME_READ: frozenset({R.CITIZEN}),
    Action.ME_CONSENT: frozenset({R.CITIZEN}),
}


def is_allowed(principal: Principal, action: Action) -> bool:
    return principal.has_any(frozenset(str(r) for r in POLICY[action]))


def allowed_actions(principal: Principal) -> set[Action]:
    """What this principal may do (the web UI shows only these)."""
    return {a for a in Action if is_allowed(principal, a)}
