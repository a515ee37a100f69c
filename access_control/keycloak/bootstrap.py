"""Bring a running Keycloak to the desired `tre` realm (realm.py) through the admin API.

Idempotent: each object is created when missing and otherwise updated to the same
representation, so a second run leaves the realm as it was (client secrets and
user passwords are never reset). Used by `tre keycloak bootstrap`, the demo and the
test fixture.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keycloak import KeycloakAdmin

from access_control.keycloak import realm as spec
from access_control.keycloak.oidc import realm_url
from access_control.keycloak.paths import default_data_dir


def admin_client(
    base_url: str, username: str, password: str, *, realm: str = "master"
) -> KeycloakAdmin:
    """An admin-API client logged in as the master realm's admin, acting on `realm`.
    python-keycloak refreshes its token when it expires."""
    return KeycloakAdmin(
        server_url=base_url.rstrip("/") + "/",
        username=username,
        password=password,
        realm_name=realm,
        user_realm_name="master",
    )


def bootstrap(
    admin: KeycloakAdmin,
    *,
    hospitals: Sequence[str] = spec.DEFAULT_HOSPITALS,
    demo_password: str = spec.DEMO_PASSWORD,
    dev: bool = True,
    portal_url: str | None = None,
) -> dict[str, Any]:
    """Create or converge realm `tre` (and, in dev, realm `other` for tests).
    `portal_url`: where Keycloak reaches the portal to end its web sessions when a
    Keycloak session ends (back-channel logout); without it they end at their expiry.

    Returns the facts services need: issuer, audience, the portal's client secret
    and each hospital node's client id and secret (`hospitals[h]["client_secret"]`).
    """
    hospitals = [spec.check_hospital_id(h) for h in hospitals]
    base_url = admin.connection.server_url.rstrip("/")
    _ensure_realm(admin, spec.realm_settings(spec.REALM, dev=dev))
    admin.change_current_realm(spec.REALM)
    _ensure_user_profile(admin)
    roles = _ensure_roles(admin, spec.ROLES)

    wanted_clients = spec.clients(hospitals, dev=dev, portal_url=portal_url)
    client_ids = {c["clientId"]: _ensure_client(admin, c) for c in wanted_clients}

    portal_account = admin.get_client_service_account_user(client_ids[spec.PORTAL_CLIENT])
    _ensure_realm_roles(admin, portal_account["id"], ["portal"], roles)

    result_hospitals: dict[str, dict[str, str]] = {}
    for hospital in hospitals:
        cid = client_ids[spec.node_client_id(hospital)]
        sa = admin.get_client_service_account_user(cid)
        wanted = {"hospital_id": [hospital]}
        if (sa.get("attributes") or {}).get("hospital_id") != [hospital]:
            admin.update_user(sa["id"], {"attributes": {**(sa.get("attributes") or {}), **wanted}})
        _ensure_realm_roles(admin, sa["id"], ["node"], roles)
        result_hospitals[hospital] = {
            "client_id": spec.node_client_id(hospital),
            "client_secret": admin.get_client_secrets(cid)["value"],
        }

    if dev:
        for user in spec.DEMO_USERS:
            _ensure_user(admin, user, demo_password, roles)
        _ensure_other_realm(admin, demo_password)
        admin.change_current_realm(spec.REALM)

    return {
        "base_url": base_url,
        "realm": spec.REALM,
        "issuer": realm_url(base_url, spec.REALM),
        "audience": spec.AUDIENCE,
        "portal_client_id": spec.PORTAL_CLIENT,
        "portal_client_secret": admin.get_client_secrets(client_ids[spec.PORTAL_CLIENT])["value"],
        "cli_client_id": spec.CLI_CLIENT,
        "hospitals": result_hospitals,
    }


def _ensure_realm(admin: KeycloakAdmin, settings: dict[str, Any]) -> None:
    name = settings["realm"]
    admin.change_current_realm("master")
    existing = {r["realm"]: r for r in admin.get_realms()}
    if name not in existing:
        admin.create_realm(settings)
    elif any(existing[name].get(k) != v for k, v in settings.items()):
        admin.update_realm(name, settings)


def _ensure_user_profile(admin: KeycloakAdmin) -> None:
    """Declare the claim attributes, or Keycloak 26 silently drops them."""
    current = admin.get_realm_users_profile()
    have = {a["name"]: a for a in current.get("attributes", [])}
    if any(
        name not in have or _differs(have[name], spec.user_profile_attribute(name))
        for name in spec.CLAIM_ATTRIBUTES
    ):
        admin.update_realm_users_profile(spec.merge_user_profile(current))


def _ensure_roles(admin: KeycloakAdmin, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
    existing = {r["name"]: r for r in admin.get_realm_roles(brief_representation=False)}
    for name, description in roles.items():
        if name not in existing:
            admin.create_realm_role({"name": name, "description": description})
        elif existing[name].get("description") != description:
            admin.update_realm_role(name, {"name": name, "description": description})
    return {r["name"]: r for r in admin.get_realm_roles()}


def _ensure_client(admin: KeycloakAdmin, rep: dict[str, Any]) -> str:
    """Create the client, or update it and its mappers to `rep`; returns its uuid."""
    cid = admin.get_client_id(rep["clientId"])
    if cid is None:
        return admin.create_client(rep)
    current = admin.get_client(cid)
    wanted = {k: v for k, v in rep.items() if k != "protocolMappers"}
    if _differs(current, wanted):
        admin.update_client(cid, wanted)
    mappers = {m["name"]: m for m in admin.get_mappers_from_client(cid)}
    for mapper in rep.get("protocolMappers", []):
        have = mappers.get(mapper["name"])
        if have is None:
            admin.add_mapper_to_client(cid, mapper)
        elif _differs(have, mapper):
            admin.update_client_mapper(cid, have["id"], {**mapper, "id": have["id"]})
    return cid


def _ensure_realm_roles(
    admin: KeycloakAdmin, user_id: str, wanted: Sequence[str], roles: dict[str, dict[str, Any]]
) -> None:
    have = {r["name"] for r in admin.get_realm_roles_of_user(user_id)}
    missing = [roles[name] for name in wanted if name not in have]
    if missing:
        admin.assign_realm_roles(user_id, missing)


def _ensure_user(
    admin: KeycloakAdmin, user: spec.DemoUser, password: str, roles: dict[str, dict[str, Any]]
) -> str:
    uid = admin.get_user_id(user.username)
    if uid is None:
        uid = admin.create_user(spec.demo_user_representation(user, password))
    else:
        wanted = spec.demo_user_representation(user)
        if _differs(admin.get_user(uid), wanted):
            admin.update_user(uid, wanted)
    _ensure_realm_roles(admin, uid, user.roles, roles)
    return uid


def _ensure_other_realm(admin: KeycloakAdmin, password: str) -> None:
    """A second realm whose tokens are validly signed, by the wrong issuer and key.
    Its CLI client carries the same audience, so only the realm differs."""
    _ensure_realm(admin, spec.realm_settings(spec.OTHER_REALM, dev=True))
    admin.change_current_realm(spec.OTHER_REALM)
    _ensure_user_profile(admin)
    roles = _ensure_roles(admin, {"researcher": spec.ROLES["researcher"]})
    _ensure_client(admin, spec.cli_client(dev=True))
    alice = next(u for u in spec.DEMO_USERS if u.username == "alice")
    _ensure_user(admin, alice, password, roles)


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when some wanted field (recursively, for dicts) is not what the server has."""
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, dict):
            have = {} if have is None else have
            if not isinstance(have, dict) or _differs(have, value):
                return True
        elif isinstance(value, list) and isinstance(have, list):
            if sorted(map(repr, value)) != sorted(map(repr, have)):
                return True
        elif have != value:
            return True
    return False



def secrets_file(data_dir: Path | None = None) -> Path:
    """Where `tre keycloak bootstrap` keeps the client secrets of an instance (0600):
    beside its database, since a new database means new secrets."""
    return Path(data_dir or default_data_dir()) / "bootstrap.json"


def save_result(result: dict[str, Any], path: Path) -> None:
    """Write the bootstrap result (it holds client secrets) readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_result(path: Path | None = None) -> dict[str, Any] | None:
    """The saved bootstrap result of the CLI's instance, if any."""
    try:
        return json.loads((path or secrets_file()).read_text())
    except (OSError, ValueError):
        return None


def export_realm(admin: KeycloakAdmin, hospitals: Sequence[str] = spec.DEFAULT_HOSPITALS
                 ) -> dict[str, Any]:
    """The production realm document (deploy/keycloak/realm-tre.json), with the user
    profile taken from a live server so it matches this Keycloak version's defaults."""
    admin.change_current_realm(spec.REALM)
    return spec.realm_export(hospitals, user_profile=admin.get_realm_users_profile())
