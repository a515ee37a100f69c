"""The live pseudonymisation service with the real Keycloak: one pseudonym per person for
every authorised party, refusals by name, and a home that holds neither identifiers
nor elements, only its key and a verifiable audit log."""

from __future__ import annotations

import json
import stat

import httpx
import pytest

from pseudonymisation import oprf
from pseudonymisation.client import PseudonymisationError
from pseudonymisation.identifiers import INS_NIR, TEST_PERSON, Identifier, pseudonym
from pseudonymisation.wire import encode
from tests.fixtures.portal import bearer

pytestmark = pytest.mark.integration

INS = "2 55 08 14 168 025 38"
INS_COMPACT = "255081416802538"


def evaluations(live) -> list:
    return live.service.home.audit.entries(action="pseudonym.evaluate")


def home_bytes(live) -> bytes:
    """Every byte of every file in the service's home (store, write-ahead log, key)."""
    db = live.service.home.db
    with db.exclusive():
        db.checkpoint_unlocked()
    return b"".join(p.read_bytes() for p in sorted(live.home.path.rglob("*")) if p.is_file())


def blinded(n: int) -> list[str]:
    return [encode(oprf.blind(f"x{i}".encode())[1]) for i in range(n)]


def test_node_and_steward_get_the_same_pseudonym(make_pseudonymiser, keycloak):
    live = make_pseudonymiser()
    person = Identifier(INS_NIR, INS)
    others = [Identifier(TEST_PERSON, "alice"), Identifier(TEST_PERSON, "bob")]
    node = live.client(lambda: keycloak.client_token("hospital-a"))
    steward = live.client(lambda: keycloak.token("steward1"))
    at_node = node.pseudonyms([person, *others, person])
    at_steward = steward.pseudonyms([Identifier.parse(f"{INS_NIR}|{INS_COMPACT}")])
    assert at_node[0] == at_node[3] == at_steward[0]
    assert len(set(at_node)) == 3
    assert all(p.startswith("ps_") and len(p) == 35 for p in at_node)
    # it is the RFC 9497 OPRF under the service's key, nothing else
    assert at_steward[0] == pseudonym(oprf.evaluate(live.service.home.key, person.canonical()))

    rows = evaluations(live)
    assert [r.details["count"] for r in rows] == [3, 1]  # the repeated person evaluated once
    assert {r.details["client_id"] for r in rows} == {"node-hospital-a", "tre-cli"}
    assert live.service.home.audit.verify().ok


def test_a_researcher_is_refused_and_no_token_is_unauthenticated(make_pseudonymiser, keycloak):
    live = make_pseudonymiser()
    body = {"blinded": blinded(1)}
    resp = httpx.post(f"{live.url}/v1/evaluate", json=body,
                      headers=bearer(keycloak.token("alice")))
    assert resp.status_code == 403, resp.text
    assert "pseudonym.evaluate" in resp.json()["detail"]
    assert resp.headers["content-type"].startswith("application/problem+json")
    resp = httpx.post(f"{live.url}/v1/evaluate", json=body)
    assert resp.status_code == 401 and resp.json()["detail"] == "missing bearer token"
    resp = httpx.post(f"{live.url}/v1/evaluate", json=body,
                      headers=bearer(keycloak.other_realm_token()))
    assert resp.status_code == 401
    with pytest.raises(PseudonymisationError, match="pseudonym.evaluate") as err:
        live.client(lambda: keycloak.token("alice")).pseudonyms(
            [Identifier(TEST_PERSON, "alice")])
    assert err.value.status == 403
    assert evaluations(live) == []


def test_bad_batches_are_refused_by_name_and_nothing_is_evaluated(make_pseudonymiser,
                                                                  keycloak):
    live = make_pseudonymiser(max_batch=4, rate_per_minute=1000)
    headers = bearer(keycloak.client_token("hospital-b"))

    def post(elements):
        return httpx.post(f"{live.url}/v1/evaluate", json={"blinded": elements},
                          headers=headers)

    too_many = post(blinded(5))
    assert too_many.status_code == 413 and "limit of 4" in too_many.json()["detail"]
    huge = httpx.post(f"{live.url}/v1/evaluate", headers=headers,
                      content=b'{"blinded": ["' + b"A" * 10_000_000 + b'"]}')
    assert huge.status_code == 413
    assert post([]).status_code == 422
    good = blinded(1)[0]
    for bad, why in [
        (encode(bytes(32)), "identity"),
        (encode(b"\xff" * 32), "not a valid ristretto255 element"),
        (good[:-2], "base64url"),
        ("!" * 43, "base64url"),
        (7, "valid string"),
    ]:
        resp = post([good, good, bad])
        assert resp.status_code == 422, resp.text
        problem = resp.json()
        assert "/blinded/2" in problem["detail"] and why in problem["detail"], problem
        assert [e["pointer"] for e in problem["errors"]] == ["/blinded/2"]
    assert evaluations(live) == []
    assert post([good]).status_code == 200
    # the client sends batches no larger than the service's limit
    client = live.client(lambda: keycloak.client_token("hospital-b"))
    assert len(set(client.pseudonyms([Identifier(TEST_PERSON, f"q{i}") for i in range(10)]))) == 10
    assert [r.details["count"] for r in evaluations(live)] == [1, 4, 4, 2]


def test_a_caller_over_its_rate_is_told_when_to_retry_and_it_is_audited(make_pseudonymiser,
                                                                        keycloak):
    live = make_pseudonymiser(max_batch=30, rate_per_minute=30)  # one element per 2 s
    node = live.client(lambda: keycloak.client_token("hospital-c"))
    people = [Identifier(TEST_PERSON, f"p{i}") for i in range(40)]
    node.pseudonyms(people[:30])  # the whole bucket
    with pytest.raises(PseudonymisationError, match="rate limit") as err:
        node.pseudonyms(people[30:])  # 10 more need about 20 s of refill
    assert err.value.status == 429 and 10 <= err.value.retry_after_s <= 20
    # another caller has a bucket of its own
    steward = live.client(lambda: keycloak.token("steward2"))
    assert len(steward.pseudonyms(people[:30])) == 30

    audit = live.service.home.audit
    refused = audit.entries(action="pseudonym.refuse")
    assert [(r.details["count"], r.details["reason"]) for r in refused] == [(10, "rate limit")]
    assert [r.details["count"] for r in evaluations(live)] == [30, 30]
    assert audit.verify().ok


def test_the_home_holds_no_identifier_no_element_and_the_key_only_in_its_file(
        make_pseudonymiser, keycloak):
    live = make_pseudonymiser()
    key_file = live.home.path / "oprf.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((live.home.path / "pseudonymiser.duckdb").stat().st_mode) == 0o600
    token = keycloak.client_token("hospital-a")
    sent: list[str] = []
    answered: list[str] = []

    def recording(request: httpx.Request) -> None:
        if request.url.path == "/v1/evaluate":
            sent.extend(json.loads(request.content)["blinded"])

    def answers(response: httpx.Response) -> None:
        if response.request.url.path == "/v1/evaluate":
            response.read()
            answered.extend(response.json()["evaluated"])

    http = httpx.Client(event_hooks={"request": [recording], "response": [answers]})
    client = live.client(lambda: token, http=http)
    person = Identifier(INS_NIR, INS)
    client.pseudonyms([person, Identifier(TEST_PERSON, "carol-1984")])
    assert len(sent) == len(answered) == 2

    everything = home_bytes(live)
    key_hex = key_file.read_text().strip()
    other_files = b"".join(p.read_bytes() for p in live.home.path.iterdir() if p != key_file)
    for secret in (key_hex.encode(), bytes.fromhex(key_hex), key_hex.upper().encode()):
        assert secret not in other_files
    for value in (INS_COMPACT, INS, "carol-1984"):
        for form in (value.encode(), value.encode("utf-16-le")):
            assert form not in everything
    for element in sent + answered:
        assert element.encode() not in everything
    assert person.canonical() not in everything
    assert live.service.home.audit.verify().ok


def test_health_is_public_and_names_the_key_and_limits(make_pseudonymiser):
    live = make_pseudonymiser(max_batch=123)
    health = httpx.get(f"{live.url}/v1/health").json()
    assert health == {"status": "ok", "suite": "ristretto255-SHA512",
                      "key_id": live.service.home.key_id, "max_batch": 123,
                      "rate_per_minute": 120_000}
    assert live.client(lambda: "unused").batch_size == 123


def test_an_unreachable_service_is_one_clear_error(make_pseudonymiser):
    live = make_pseudonymiser()
    live.stop()
    assert live.client(lambda: "unused").pseudonyms([]) == []  # nothing to ask, no call
    with pytest.raises(PseudonymisationError, match="cannot reach the pseudonymisation service"):
        live.client(lambda: "unused", batch_size=10).pseudonyms([Identifier(TEST_PERSON, "a")])
