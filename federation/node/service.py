"""What the `tre node` commands do (the CLI only parses and prints): enrolment,
status, publication. Ingestion lives in `federation.node.ingest`, queries in
`federation.node.query`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from federation.node.data import dataset_overview
from federation.node.descriptor import build_descriptor, dataset_facts, publication_body
from federation.node.home import (
    CREDENTIALS_FILE,
    PORTAL_CA_FILE,
    NodeHome,
    NodeHomeError,
    stored_settings,
)
from federation.node.portal_client import PortalClient, PortalError
from pseudonymisation.client import PseudonymClient, PseudonymisationError
from tre.core.audit import AuditAction
from tre.core.disclosure import DISCLOSURE_KEY_PURPOSE


def read_credentials_file(path: Path) -> dict[str, str]:
    """A JSON file {"client_id": ..., "client_secret": ...} (e.g. from the realm bootstrap)."""
    if not path.is_file():
        raise NodeHomeError(f"credentials file {path} does not exist")
    try:
        data = json.loads(path.read_text())
        creds = {"client_id": str(data["client_id"]), "client_secret": str(data["client_secret"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise NodeHomeError(
            f"credentials file {path} must be JSON with client_id and client_secret"
        ) from exc
    if not creds["client_id"] or not creds["client_secret"]:
        raise NodeHomeError(f"credentials file {path} has an empty client_id or client_secret")
    return creds


def init_node(
    path: str | Path,
    *,
    hospital_id: str,
    portal_url: str,
    superlink: str | None = None,
    keycloak_url: str | None = None,
    keycloak_realm: str | None = None,
    credentials_file: str | Path | None = None,
    portal_ca: str | Path | None = None,
    pseudonymiser_url: str | None = None,
    identifier_system: str | None = None,
    insecure: bool = False,
    force: bool = False,
) -> NodeHome:
    """Create (or with `force`, re-enrol) a node home and pin the portal's permit keys.

    The keys are fetched over TLS checked against `portal_ca` (pinned in the home for
    every later call) or the system's CAs; plain http only for `insecure` development
    homes, since whoever answers that call decides which permits the node will accept.
    Re-enrolling keeps the federation key and the data (re-keying would orphan every
    pseudonym); it refuses a different hospital id for an existing home, and a switch
    between the pseudonymisation service and offline pseudonyms once data is stored.
    `pseudonymiser_url` None means offline, node-local pseudonyms. The settings given
    here are written to node.toml over those it held (a value left out keeps its own).
    """
    given = {"hospital_id": hospital_id, "portal_url": portal_url, "superlink": superlink,
             "keycloak_url": keycloak_url, "keycloak_realm": keycloak_realm,
             "identifier_system": identifier_system, "pseudonymiser_url": pseudonymiser_url}
    given = {key: value for key, value in given.items() if value is not None}
    stored_settings(**given)  # a bad value is refused before anything is asked or written
    if portal_url.startswith("http://") and not insecure:
        raise NodeHomeError(f"portal URL {portal_url} is plain http: the permit keys would "
                            "come unauthenticated. Use the portal's https URL (with "
                            "--portal-ca for the federation CA), or --insecure for development")
    ca = Path(portal_ca) if portal_ca else None
    if ca is not None and not ca.is_file():
        raise NodeHomeError(f"--portal-ca {ca} is not a file")
    home = NodeHome(path)
    previous = None
    if home.exists():
        previous = home.stored_config()
        if not force:
            raise NodeHomeError(
                f"{home.path} is already the home of node {previous.hospital_id}: "
                "pass --force to re-enrol (keeps the federation key and data)"
            )
        if previous.hospital_id != hospital_id:
            raise NodeHomeError(
                f"{home.path} belongs to hospital {previous.hospital_id}, not {hospital_id}"
            )
    pseudonymiser = _check_pseudonymiser(pseudonymiser_url, insecure,
                                         verify=str(ca) if ca else True)
    if (previous is not None and previous.pseudonymiser_url != pseudonymiser
            and _holds_persons(home)):
        raise NodeHomeError(
            f"{home.path} holds data pseudonymised "
            + ("through " + previous.pseudonymiser_url if previous.pseudonymiser_url
               else "offline with the node's key")
            + ": switching would orphan every pseudonym; keep the same choice, or start a "
            "new home and ingest again")
    creds = read_credentials_file(Path(credentials_file)) if credentials_file else None
    jwks = PortalClient(portal_url, verify=str(ca) if ca else True).permit_keys()
    kept = previous.model_dump(exclude_unset=True) if previous else {}
    config = stored_settings(**kept | given | {"pseudonymiser_url": pseudonymiser})
    home = NodeHome.create(path, config, jwks)
    if ca is not None:
        (home.path / PORTAL_CA_FILE).write_bytes(ca.read_bytes())
    if creds:
        home.save_credentials(creds["client_id"], creds["client_secret"])
    home.audit.record(
        actor=home.actor,
        action=AuditAction.NODE_REENROL if previous else AuditAction.NODE_INIT,
        object_type="node",
        object_id=hospital_id,
        details={
            "portal_url": config.portal_url,
            "superlink": config.superlink,
            "permit_key_ids": [k.get("kid") for k in jwks["keys"]],
            "credentials": credentials_source(home),
            "pseudonymiser": config.pseudonymiser_url or "offline (node-local pseudonyms)",
        },
    )
    return home


def _check_pseudonymiser(url: str | None, insecure: bool, *, verify: str | bool) -> str:
    """The pseudonymisation service's base URL ('' for offline), checked to answer over
    TLS checked like the portal's (the federation CA given at init)."""
    if url is None:
        return ""
    url = url.rstrip("/")
    if url.startswith("http://") and not insecure:
        raise NodeHomeError(f"pseudonymiser URL {url} is plain http: use its https URL, or "
                            "--insecure for development")
    try:
        with PseudonymClient(url, token=str, verify=verify, timeout_s=10) as client:
            client.health()  # public: no token is asked for
    except PseudonymisationError as exc:
        cause = exc.__cause__ or exc  # the transport's own error, or the service's answer
        raise NodeHomeError(f"the pseudonymisation service at {url} does not answer "
                            f"({type(cause).__name__}): is `tre pseudonymiser serve` running "
                            "there?") from None
    return url


def _holds_persons(home: NodeHome) -> bool:
    with home.db.reader() as cur:
        return bool(cur.execute("SELECT count(*) FROM person").fetchall()[0][0])


def credentials_source(home: NodeHome) -> str:
    if os.environ.get("TRE_NODE_CLIENT_ID") and os.environ.get("TRE_NODE_CLIENT_SECRET"):
        return "env"
    return "file" if (home.path / CREDENTIALS_FILE).exists() else "none"


def tcp_reachable(address: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a TCP connection to HOST:PORT opens (the SuperLink's Fleet API)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return False, f"address {address!r} is not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True, "TCP connect ok"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def node_status(home: NodeHome, *, check_network: bool = True) -> dict[str, Any]:
    """What the node holds (exact local counts: this is for its operator) and what it reaches."""
    cfg = home.require().config
    verify = home.audit.verify()
    try:
        kids = [k.get("kid") for k in home.permit_jwks()["keys"]]
    except NodeHomeError:
        kids = []
    status: dict[str, Any] = {
        "home": str(home.path),
        "hospital_id": cfg.hospital_id,
        "portal_url": cfg.portal_url,
        "superlink": cfg.superlink,
        "suppression_k": cfg.suppression_k,
        "permit_key_ids": kids,
        "credentials": credentials_source(home),
        "datasets": dataset_overview(home.db),
        "audit": {"ok": verify.ok, "rows": verify.rows, "head_hash": verify.head_hash,
                  "problem": verify.problem},
    }
    if check_network:
        ok, detail = PortalClient.for_home(home).reachable()
        status["portal"] = {"reachable": ok, "detail": detail}
        ok, detail = tcp_reachable(cfg.superlink)
        status["superlink_reachable"] = {"reachable": ok, "detail": detail}
    return status


def descriptors(home: NodeHome, dataset_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Descriptors of the node's datasets (all, or the named ones), ready to publish."""
    secret = home.derive_key(DISCLOSURE_KEY_PURPOSE)
    ids = dataset_ids or [d["dataset_id"] for d in dataset_overview(home.db)]
    out = []
    for dataset_id in ids:
        try:
            facts = dataset_facts(home.db, dataset_id, secret=secret)
        except LookupError as exc:
            raise NodeHomeError(str(exc)) from exc
        out.append(build_descriptor(
            facts, hospital_id=home.config.hospital_id, k=home.config.suppression_k))
    return out


def publish(
    home: NodeHome,
    dataset_ids: list[str] | None = None,
    *,
    client: PortalClient | None = None,
    synthetic: bool = True,
) -> list[dict[str, Any]]:
    """Send each dataset's descriptor to the portal catalogue; each attempt is audited with
    the exact descriptor that left the node (it holds no row-level values). With
    `synthetic`, a dataset whose latest synthesis passed the gate also gets its synthetic
    table, reports and plots uploaded (see `publish_synthetic`)."""
    client = client or PortalClient.for_home(home)
    built = descriptors(home, dataset_ids)
    client.access_token()  # fail before anything is sent if the credentials are wrong
    results = []
    for descriptor in built:
        body = publication_body(descriptor)
        try:
            answer = client.publish_dataset(body)
        except PortalError as exc:
            home.audit.record(
                actor=home.actor, action=AuditAction.CATALOGUE_PUBLISH_FAILED,
                object_type="dataset",
                object_id=descriptor["dataset_id"],
                details={"portal_url": client.portal_url, "status": exc.status,
                         "error": str(exc)},
            )
            raise
        home.audit.record(
            actor=home.actor, action=AuditAction.CATALOGUE_PUBLISH, object_type="dataset",
            object_id=descriptor["dataset_id"],
            details={"portal_url": client.portal_url, "descriptor": descriptor},
        )
        entry = {"dataset_id": descriptor["dataset_id"], "portal": answer}
        if synthetic:
            entry["synthetic"] = publish_synthetic(home, descriptor["dataset_id"], client)
        results.append(entry)
    return results


def publish_synthetic(home: NodeHome, dataset_id: str, client: PortalClient) -> dict[str, Any]:
    """Upload the dataset's latest synthetic release if, and only if, it passed the gate.

    A dataset never synthesised, or whose latest run failed the gate, is reported as
    not published (with the reason) and nothing is sent, as is one whose table the
    portal says was withdrawn (409: synthesise again); each upload is audited with the
    hashes of exactly what left the node.
    """
    from federation.node.synthesis import SynthesisError, latest, releasable

    if latest(home, dataset_id) is None:
        return {"published": False, "reason": "never synthesised"}
    try:
        release = releasable(home, dataset_id)
    except SynthesisError as exc:
        home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_PUBLISH_REFUSED,
                          object_type="dataset", object_id=dataset_id,
                          details={"reason": str(exc)})
        return {"published": False, "reason": str(exc)}
    sent = {"synthetic.parquet": release.files["synthetic.parquet"],
            "report.json": release.files["report.json"],
            **{f"plots/{n}": release.files[f"plots/{n}"] for n in release.plots}}
    try:
        answer = client.upload_synthetic(home.config.hospital_id, dataset_id,
                                         table=release.table, report=release.report,
                                         plots=release.plots)
    except PortalError as exc:
        home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_PUBLISH_FAILED,
                          object_type="dataset", object_id=dataset_id,
                          details={"run_id": release.run_id, "status": exc.status,
                                   "error": str(exc)})
        if exc.status == 409:  # this very table was withdrawn: the others still publish
            return {"published": False, "reason": str(exc)}
        raise
    home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_PUBLISH, object_type="dataset",
                      object_id=dataset_id,
                      details={"portal_url": client.portal_url, "run_id": release.run_id,
                               "files": sent, "portal_release": answer.get("release_id")})
    return {"published": True, "run_id": release.run_id,
            "release_id": answer.get("release_id"), "rows": answer.get("rows")}


def published_release(home: NodeHome, dataset_id: str) -> str | None:
    """The portal's id of the synthetic release this node last uploaded for a dataset, from
    its own audit of what left the node (None when it never published one)."""
    for entry in reversed(home.audit.entries(action=AuditAction.SYNTHETIC_PUBLISH)):
        if entry.object_id == dataset_id and entry.details.get("portal_release"):
            return str(entry.details["portal_release"])
    return None


def withdraw_synthetic(home: NodeHome, dataset_id: str, reason: str, *,
                       release_id: str | None = None,
                       client: PortalClient | None = None) -> dict[str, Any]:
    """Withdraw a synthetic release of this hospital at the portal (by default the one
    last published for `dataset_id`); audited at the node whether or not it succeeds."""
    release_id = release_id or published_release(home, dataset_id)
    if release_id is None:
        raise NodeHomeError(f"this node never published a synthetic version of {dataset_id}: "
                            "nothing to withdraw (give --release-id for another one)")
    client = client or PortalClient.for_home(home)
    try:
        answer = client.withdraw_synthetic(release_id, reason)
    except PortalError as exc:
        home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_WITHDRAW_FAILED,
                          object_type="dataset", object_id=dataset_id,
                          details={"release_id": release_id, "status": exc.status,
                                   "error": str(exc)})
        raise
    home.audit.record(actor=home.actor, action=AuditAction.SYNTHETIC_WITHDRAW,
                      object_type="dataset",
                      object_id=dataset_id,
                      details={"portal_url": client.portal_url, "release_id": release_id,
                               "reason": reason})
    return answer
