"""The pseudonymisation service and its client (DESIGN §2.8): one pseudonym per person
across the federation, by an oblivious PRF whose key only the service holds and which
never sees an identifier."""
