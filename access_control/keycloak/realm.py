"""The desired state of the `tre` realm, as data.

One description feeds both the idempotent bootstrap through the admin API (dev and
tests) and the realm export in `deploy/keycloak/realm-tre.json` (production import),
so the two cannot drift apart. Roles follow DESIGN §5.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REALM = "tre"
OTHER_REALM = "other"
AUDIENCE = "tre-portal"
PORTAL_CLIENT = "tre-portal"
BACKCHANNEL_LOGOUT_PATH = "/auth/backchannel-logout"  # the portal's route Keycloak posts to
CLI_CLIENT = "tre-cli"
SHORTLIVED_CLIENT = "tre-test-shortlived"
SHORTLIVED_LIFESPAN_S = 2
DEMO_PASSWORD = "tre-demo-password"
DEFAULT_HOSPITALS: tuple[str, ...] = ("hospital-a", "hospital-b", "hospital-c")

ROLES: dict[str, str] = {
    "researcher": "Browses the catalogue, requests access, runs federated training under a permit",
    "reviewer": "Data access committee: decides on requests, revokes permits",
    "output_checker": "Checks outputs in the airlock before release",
    "steward": "Data-altruism organisation: records and withdraws consent",
    "node_operator": "Hospital IT: runs a federation node and sets its privacy-budget policy",
    "node": "Service account of a hospital node (client-credentials grant)",
    "auditor": "Reads and verifies the audit trail",
    "admin": "Administers the portal",
    "citizen": "A person: sees and changes their own consents, receipts and the runs "
               "that used their records",
    "portal": "Service account of the portal: derives a signed-in citizen's pseudonym",
}

# User attributes carried into tokens as claims of the same name. Only admins may
# edit them: a user who could set their own hospital_id could act for any node, a
# citizen who could set their `ins` could read anyone's consents. With identity
# brokering (e.g. FranceConnect / Pro Santé Connect as an identity provider of the
# realm) an IdP mapper fills `ins` from the national IdP's claim: configuration only.
CLAIM_ATTRIBUTES: tuple[str, ...] = ("organisation", "hospital_id", "ins")

_HOSPITAL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class DemoUser:
    """A dev-realm user with a known password, one or more per role."""

    username: str
    first_name: str
    last_name: str
    roles: tuple[str, ...]
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def email(self) -> str:
        return f"{self.username}@tre.example.org"


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "Alice", "Researcher", ("researcher",), {"organisation": "university-a"}),
    DemoUser("bob", "Bob", "Researcher", ("researcher",), {"organisation": "startup-b"}),
    DemoUser("rev1", "Rita", "Reviewer", ("reviewer",)),
    DemoUser("rev2", "Ravi", "Reviewer", ("reviewer",)),
    DemoUser("chk1", "Chloe", "Checker", ("output_checker",)),
    DemoUser("chk2", "Chen", "Checker", ("output_checker",)),
    DemoUser("steward1", "Sara", "Steward", ("steward",), {"organisation": "org-a"}),
    DemoUser("steward2", "Sam", "Steward", ("steward",), {"organisation": "org-b"}),
    DemoUser("nodeop1", "Nora", "Operator", ("node_operator",), {"hospital_id": "hospital-a"}),
    DemoUser("auditor1", "Aude", "Auditor", ("auditor",)),
    DemoUser("admin1", "Adam", "Admin", ("admin",)),
    # two people with a (made-up, well-formed) French INS-NIR each
    DemoUser("citizen1", "Camille", "Citizen", ("citizen",), {"ins": "185037512345641"}),
    DemoUser("citizen2", "Claude", "Citizen", ("citizen",), {"ins": "290067598765460"}),
)


def check_hospital_id(hospital_id: str) -> str:
    """Hospital ids become client ids and claims: keep them to a safe alphabet."""
    if not _HOSPITAL_ID.match(hospital_id):
        raise ValueError(
            f"invalid hospital id {hospital_id!r}: use lower-case letters, digits and '-'"
        )
    return hospital_id


def node_client_id(hospital_id: str) -> str:
    """Client id of a hospital node's service account, e.g. `node-hospital-a`."""
    return f"node-{check_hospital_id(hospital_id)}"


def realm_settings(realm: str = REALM, *, dev: bool = True) -> dict[str, Any]:
    """Realm-level settings. Brute-force lockout is off in dev so tests with wrong
    passwords cannot lock the demo users out."""
    return {
        "realm": realm,
        "enabled": True,
        "displayName": "Trusted Research Environment" if realm == REALM else realm,
        "sslRequired": "external",
        "registrationAllowed": False,
        "loginWithEmailAllowed": True,
        "duplicateEmailsAllowed": False,
        "resetPasswordAllowed": False,
        "editUsernameAllowed": False,
        "bruteForceProtected": not dev,
        "accessTokenLifespan": 300,
        "ssoSessionIdleTimeout": 1800,
        "ssoSessionMaxLifespan": 36000,
        "oauth2DeviceCodeLifespan": 600,
        # The CLI polls this often during `tre login`; 1 s keeps dev logins snappy.
        "oauth2DevicePollingInterval": 1 if dev else 5,
    }


def user_profile_attribute(name: str) -> dict[str, Any]:
    """Keycloak 26 drops undeclared attributes (user profile), so declare ours."""
    return {
        "name": name,
        "displayName": name.replace("_", " ").capitalize(),
        "validations": {"length": {"max": 255}},
        "permissions": {"view": ["admin", "user"], "edit": ["admin"]},
        "multivalued": False,
    }


def merge_user_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The realm's user profile with our claim attributes declared (others untouched)."""
    merged = dict(profile)
    attrs = [a for a in profile.get("attributes", []) if a["name"] not in CLAIM_ATTRIBUTES]
    merged["attributes"] = attrs + [user_profile_attribute(n) for n in CLAIM_ATTRIBUTES]
    return merged


def audience_mapper() -> dict[str, Any]:
    """Every token of every client of the realm is meant for the portal (DESIGN §2.5)."""
    return {
        "name": "audience-tre-portal",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.custom.audience": AUDIENCE,
            "access.token.claim": "true",
            "id.token.claim": "false",
            "introspection.token.claim": "true",
            "lightweight.claim": "false",
        },
    }


def attribute_mapper(name: str) -> dict[str, Any]:
    """Copy a user attribute (also of service-account users) into a claim."""
    return {
        "name": f"claim-{name}",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-usermodel-attribute-mapper",
        "config": {
            "user.attribute": name,
            "claim.name": name,
            "jsonType.label": "String",
            "multivalued": "false",
            "aggregate.attrs": "false",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
            "introspection.token.claim": "true",
            "lightweight.claim": "false",
        },
    }


def client_mappers() -> list[dict[str, Any]]:
    """Mappers put on every client of the realm: the portal audience and the claims.

    They sit on each client, not in a custom client scope, because a realm import
    that declares any client scope gets none of Keycloak's built-in ones (`basic`,
    `roles`, ...), which would drop `sub` and `realm_access` from the tokens."""
    return [audience_mapper()] + [attribute_mapper(n) for n in CLAIM_ATTRIBUTES]


def _client(client_id: str, name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "clientId": client_id,
        "name": name,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": True,
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
        "frontchannelLogout": True,
        "fullScopeAllowed": True,
        "protocolMappers": client_mappers(),
    }
    attributes = fields.pop("attributes", {})
    base.update(fields)
    base["attributes"] = attributes
    return base


def portal_client(portal_url: str | None = None) -> dict[str, Any]:
    """Confidential web client: authorization code + PKCE (S256 required) on loopback.
    Keycloak ignores the port of loopback redirect URIs, so these cover any port.
    Its service account (role `portal`) is how the portal itself calls the
    pseudonymisation service for a signed-in citizen.
    With the portal's URL, Keycloak tells the portal when a session ends (back-channel
    logout, one logout token naming the session), so its web sessions end too."""
    backchannel = ({"backchannel.logout.url": portal_url.rstrip("/") + BACKCHANNEL_LOGOUT_PATH}
                   if portal_url else {})
    return _client(
        PORTAL_CLIENT,
        "TRE portal",
        publicClient=False,
        clientAuthenticatorType="client-secret",
        standardFlowEnabled=True,
        frontchannelLogout=False,  # Keycloak skips back-channel logout for front-channel clients
        serviceAccountsEnabled=True,
        redirectUris=["http://127.0.0.1/*", "http://localhost/*"],
        webOrigins=["+"],
        attributes={
            "pkce.code.challenge.method": "S256",
            "post.logout.redirect.uris": "+",
            "backchannel.logout.session.required": "true",
            **backchannel,
        },
    )


def cli_client(*, dev: bool = True) -> dict[str, Any]:
    """Public client of the `tre` command: device authorization grant; the password
    grant only in the dev realm (for `tre keycloak token` and tests)."""
    return _client(
        CLI_CLIENT,
        "TRE command line",
        directAccessGrantsEnabled=dev,
        attributes={"oauth2.device.authorization.grant.enabled": "true"},
    )


def shortlived_client() -> dict[str, Any]:
    """Test-only client whose access tokens expire after 2 s (expiry tests)."""
    return _client(
        SHORTLIVED_CLIENT,
        "Tests: short-lived tokens",
        directAccessGrantsEnabled=True,
        attributes={"access.token.lifespan": str(SHORTLIVED_LIFESPAN_S)},
    )


def node_client(hospital_id: str) -> dict[str, Any]:
    """Confidential service-account client of one hospital node (client credentials)."""
    return _client(
        node_client_id(hospital_id),
        f"Federation node {hospital_id}",
        publicClient=False,
        clientAuthenticatorType="client-secret",
        serviceAccountsEnabled=True,
        attributes={"client_credentials.use_refresh_token": "false"},
    )


def service_account_user(hospital_id: str) -> dict[str, Any]:
    """The node's service-account user: realm role `node`, attribute `hospital_id`."""
    return {
        "username": f"service-account-{node_client_id(hospital_id)}",
        "enabled": True,
        "serviceAccountClientId": node_client_id(hospital_id),
        "attributes": {"hospital_id": [hospital_id]},
        "realmRoles": ["node", f"default-roles-{REALM}"],
    }


def portal_service_account_user() -> dict[str, Any]:
    """The portal client's service-account user: realm role `portal` only."""
    return {
        "username": f"service-account-{PORTAL_CLIENT}",
        "enabled": True,
        "serviceAccountClientId": PORTAL_CLIENT,
        "realmRoles": ["portal", f"default-roles-{REALM}"],
    }


def demo_user_representation(user: DemoUser, password: str | None = None) -> dict[str, Any]:
    """UserRepresentation of a demo user; with a password only when creating it."""
    rep: dict[str, Any] = {
        "username": user.username,
        "enabled": True,
        "email": user.email,
        "emailVerified": True,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "requiredActions": [],
        "attributes": {k: [v] for k, v in user.attributes.items()},
    }
    if password is not None:
        rep["credentials"] = [{"type": "password", "value": password, "temporary": False}]
    return rep


def clients(hospitals: Iterable[str], *, dev: bool = True, portal_url: str | None = None
            ) -> list[dict[str, Any]]:
    """All clients of the realm; the short-lived test client only in dev."""
    result = [portal_client(portal_url), cli_client(dev=dev)]
    if dev:
        result.append(shortlived_client())
    result += [node_client(h) for h in hospitals]
    return result


def realm_export(
    hospitals: Sequence[str] = DEFAULT_HOSPITALS, *, user_profile: dict[str, Any]
) -> dict[str, Any]:
    """The production realm as an importable JSON document: no demo users, no password
    grant, no test client, no secrets (Keycloak generates them on import).

    `user_profile` is the server's default user profile (it is not part of the
    realm representation's top level, it lives in a component)."""
    realm = realm_settings(REALM, dev=False)
    realm["roles"] = {
        "realm": [{"name": n, "description": d} for n, d in ROLES.items()],
    }
    realm["clients"] = clients(hospitals, dev=False)
    realm["users"] = [portal_service_account_user()] + [service_account_user(h)
                                                         for h in hospitals]
    realm["components"] = {
        "org.keycloak.userprofile.UserProfileProvider": [
            {
                "providerId": "declarative-user-profile",
                "subComponents": {},
                "config": {
                    "kc.user.profile.config": [
                        json.dumps(merge_user_profile(user_profile), sort_keys=True)
                    ]
                },
            }
        ]
    }
    return realm
