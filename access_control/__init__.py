"""Identity and authority: Keycloak tokens, the role→action policy table, permits."""
