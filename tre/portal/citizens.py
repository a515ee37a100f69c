"""Who a signed-in citizen is, as the federation knows them: their pseudonym.

A citizen's token carries their national health identifier (claim `ins`, a user
attribute in the dev realm, filled by an identity-provider mapper when the realm
brokers a national IdP). The portal turns it into the federation pseudonym the way
every other party does, through the pseudonymisation service's oblivious PRF with
its own service account (client credentials of its confidential client, role
`portal`): it blinds on its side, so the service never sees the identifier. The
identifier lives only in the request's memory; what the portal keeps, in memory
only, is token subject → pseudonym, so a page load does not cost an OPRF round trip.
Nothing here writes to disk or to a log.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from access_control.keycloak.oidc import GrantError, client_credentials_grant
from access_control.tokens import Principal
from pseudonymisation.client import PseudonymClient, PseudonymisationError
from pseudonymisation.identifiers import INS_NIR, Identifier, IdentifierError
from tre.portal.errors import Forbidden, Unavailable
from tre.portal.settings import PortalSettings

IDENTIFIER_CLAIM = "ins"
CACHED_PEOPLE = 10_000
TOKEN_MARGIN_S = 30.0


class CitizenPseudonyms:
    """`of(principal)`: the pseudonym of the person behind a citizen's token."""

    def __init__(self, settings: PortalSettings) -> None:
        self.settings = settings
        self._known: OrderedDict[str, str] = OrderedDict()  # token subject -> pseudonym
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._client: PseudonymClient | None = None

    def of(self, principal: Principal) -> str:
        with self._lock:
            known = self._known.get(principal.subject)
            if known is not None:
                self._known.move_to_end(principal.subject)
                return known
        value = principal.claims.get(IDENTIFIER_CLAIM)
        if not isinstance(value, str) or not value.strip():
            raise Forbidden(f"your token carries no `{IDENTIFIER_CLAIM}` claim: the portal "
                            "cannot tell which person you are")
        try:
            person = Identifier(INS_NIR, value)
        except IdentifierError as exc:
            raise Forbidden(f"the identifier in your token is not usable: {exc}") from None
        try:
            found = self._service().pseudonyms([person])[0]
        except PseudonymisationError as exc:
            raise Unavailable(f"cannot derive your pseudonym now: {exc}") from None
        with self._lock:
            self._known[principal.subject] = found
            while len(self._known) > CACHED_PEOPLE:
                self._known.popitem(last=False)
        return found

    def _service(self) -> PseudonymClient:
        if not self.settings.pseudonymiser_url:
            raise Unavailable("this portal has no pseudonymisation service configured "
                              "(TRE_PSEUDONYMISER_URL): citizens cannot sign in to their view")
        if self._client is None:
            ca = self.settings.pseudonymiser_ca
            self._client = PseudonymClient(self.settings.pseudonymiser_url, self._access_token,
                                           verify=str(ca) if ca else True)
        return self._client

    def _access_token(self) -> str:
        """The portal's own service-account token, reused until shortly before expiry."""
        with self._lock:
            if self._token is not None and self._token[1] - time.time() > TOKEN_MARGIN_S:
                return self._token[0]
        secret = self.settings.oidc_client_secret
        if secret is None:
            raise PseudonymisationError("the portal has no client secret "
                                        "(TRE_OIDC_CLIENT_SECRET) for its service account")
        try:
            grant = client_credentials_grant(self.settings.keycloak_url,
                                             self.settings.keycloak_realm,
                                             self.settings.oidc_client_id,
                                             secret.get_secret_value())
        except GrantError as exc:
            raise PseudonymisationError(f"the portal's service account: {exc}") from exc
        token = grant["access_token"]
        with self._lock:
            self._token = (token, time.time() + float(grant.get("expires_in", 60)))
        return token

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
