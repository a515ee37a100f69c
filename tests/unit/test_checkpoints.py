"""Signed checkpoints catch what the hash chain alone cannot: a cut tail, a chain
rewritten with fresh hashes, a forked history (real DuckDB logs, real signatures)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.fixtures.audit import rechain
from tre.core.audit import AuditEntry, AuditLog, verify_entries
from tre.core.checkpoints import Checkpoint, CheckpointError, verify_against
from tre.core.db import Database

pytestmark = pytest.mark.unit

# a hospital signs with its enrolled SuperNode key (EC P-256), the portal with its
# permit key (Ed25519)
PARTIES = {"hospital-a": lambda: ec.generate_private_key(ec.SECP256R1()),
           "portal": ed25519.Ed25519PrivateKey.generate}


def log_of(tmp_path, name: str, actions: list[str]) -> AuditLog:
    log = AuditLog(Database(tmp_path / f"{name}.duckdb"))
    for i, action in enumerate(actions):
        log.record(actor="operator", action=action, object_type="dataset", object_id=str(i))
    return log


def head(party: str, entries: list[AuditEntry], at: str) -> Checkpoint:
    return Checkpoint(party, entries[-1].seq, entries[-1].hash, at)


@pytest.fixture(params=sorted(PARTIES))
def party(request, tmp_path):
    key = PARTIES[request.param]()
    log = log_of(tmp_path, request.param, [f"data.read.{i}" for i in range(10)])
    entries = log.entries()
    seen = [head(request.param, entries[:6], "2026-11-01T00:00:00Z").signed(key),
            head(request.param, entries, "2026-11-02T00:00:00Z").signed(key)]
    return request.param, key, entries, [c.verify(key.public_key()) for c in seen]


def test_an_intact_log_agrees_with_its_checkpoints(party):
    _, _, entries, checkpoints = party
    assert verify_against(entries, checkpoints).ok


def test_a_cut_tail_is_caught_naming_the_checkpoint(party):
    name, _, entries, checkpoints = party
    assert verify_entries(entries[:8]).ok  # the chain alone sees nothing
    result = verify_against(entries[:8], checkpoints)
    assert not result.ok and result.first_bad_seq == 9
    assert "ends at row 8" in result.problem and "2026-11-02" in result.problem
    assert name in result.problem and "tail was cut" in result.problem


def test_a_rewritten_chain_is_caught(party):
    _, _, entries, checkpoints = party
    forged = rechain([replace(e, details={"records": 0}) if e.seq == 3 else e
                      for e in entries])
    assert verify_entries(forged).ok  # a consistent chain with fresh hashes
    result = verify_against(forged, checkpoints)
    assert not result.ok and result.first_bad_seq == 6
    assert "rewritten or its history forked" in result.problem and "2026-11-01" in result.problem


def test_a_forked_history_is_caught(party, tmp_path):
    name, key, entries, _ = party
    fork = log_of(tmp_path, "fork", [f"data.read.{i}" for i in range(6)] + ["other"] * 4)
    ours = fork.entries()
    assert ours[5].hash != entries[5].hash  # timestamps differ from the first row on
    seen = head(name, entries[:8], "2026-11-03T00:00:00Z").signed(key)
    result = verify_against(ours, [seen])
    assert not result.ok and result.first_bad_seq == 8


def test_a_checkpoint_signed_by_another_key_or_altered_is_refused(party):
    name, key, _, checkpoints = party
    other = PARTIES[name]()
    with pytest.raises(CheckpointError, match=f"not signed by {name}'s key"):
        checkpoints[0].verify(other.public_key())
    with pytest.raises(CheckpointError):
        replace(checkpoints[0], seq=5).verify(key.public_key())
    with pytest.raises(CheckpointError):
        Checkpoint(name, 6, checkpoints[0].hash, "x", "not base64!").verify(key.public_key())


def test_tre_audit_verify_checks_a_store_against_its_checkpoints(tmp_path):
    import json

    from cryptography.hazmat.primitives import serialization
    from typer.testing import CliRunner

    from tre.cli.main import app

    key = PARTIES["hospital-a"]()
    (tmp_path / "node.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    log = log_of(tmp_path, "node", [f"data.read.{i}" for i in range(10)])
    seen = head("hospital-a", log.entries(), "2026-11-02T00:00:00Z").signed(key)
    (tmp_path / "checkpoints.json").write_text(json.dumps([seen.as_dict()]))
    args = ["audit", "verify", "--db", str(tmp_path / "node.duckdb"), "--checkpoints",
            str(tmp_path / "checkpoints.json"), "--public-key", str(tmp_path / "node.pub")]
    with log.db.transaction() as cur:
        cur.execute("DELETE FROM audit_log WHERE seq > 7")
    log.db.close()
    runner = CliRunner()
    assert runner.invoke(app, args[:4]).exit_code == 0  # the chain alone looks intact
    cut = runner.invoke(app, args)
    assert cut.exit_code == 1 and "tail was cut" in cut.output, cut.output
    forged = json.dumps([{**seen.as_dict(), "seq": 7}])
    (tmp_path / "checkpoints.json").write_text(forged)
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "not signed by hospital-a's key" in refused.output


def test_the_result_names_the_checkpoint_contradicted_or_the_newest_agreed(party):
    _, _, entries, checkpoints = party
    assert verify_against(entries, checkpoints).checkpoint_seq == 10
    assert verify_against(entries[:8], checkpoints).checkpoint_seq == 10
    assert verify_against(entries, []).checkpoint_seq is None


def test_a_signed_export_is_bound_to_its_party_and_its_lines(party):
    from tre.core.audit import canonical_json
    from tre.core.checkpoints import SignedExport

    name, key, entries, _ = party
    jsonl = "".join(canonical_json(e.as_dict()) + "\n" for e in entries)
    export = SignedExport(name, jsonl).signed(key)
    assert export.verify(key.public_key()).entries() == entries
    with pytest.raises(CheckpointError, match=f"audit export of {name}"):
        replace(export, jsonl=jsonl.replace("data.read.3", "data.read.4")).verify(
            key.public_key())
    with pytest.raises(CheckpointError, match="audit export of elsewhere"):
        replace(export, party="elsewhere").verify(key.public_key())
