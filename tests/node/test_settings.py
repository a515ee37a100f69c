"""A node's typed settings: node.toml under TRE_NODE_ environment overrides, unknown keys
and bad values refused by name, older homes with an `[extra]` table still loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.node.home import CONFIG_FILE, NodeHome, NodeHomeError
from federation.node.portal_client import PortalClient
from federation.node.settings import StoredNodeSettings
from tre.cli.main import app

pytestmark = pytest.mark.unit

#: node.toml as `tre node init --keycloak-url` wrote it before the settings were typed.
OLD_HOME_TOML = """\
hospital_id = "hospital-a"
portal_url = "https://portal.example.org"
superlink = "127.0.0.1:9092"
suppression_k = 10
consent_max_age_s = 86400
feasibility_queries_per_day = 50
pseudonymiser_url = ""
identifier_system = ""

[extra]
keycloak_url = "https://id.hospital-a.example.org"
keycloak_realm = "hospitals"
revocation_max_age_s = 3600
"""


@pytest.fixture(autouse=True)
def no_node_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the files these tests write, not from the shell that runs them."""
    import os

    for name in list(os.environ):
        if name.startswith("TRE_NODE_") or name in ("TRE_KEYCLOAK_URL", "TRE_KEYCLOAK_REALM"):
            monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path: Path) -> NodeHome:
    home = NodeHome.create(tmp_path / "node", StoredNodeSettings(
        hospital_id="hospital-a", portal_url="https://portal.example.org"), {"keys": []})
    home.close()
    return home


def write_toml(home: NodeHome, text: str) -> None:
    (home.path / CONFIG_FILE).write_text(text)


def fresh(home: NodeHome) -> NodeHome:
    """Another process's view of the home (nothing cached)."""
    return NodeHome(home.path)


def status(home: NodeHome):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(app, ["node", "status", "--home", str(home.path), "--offline"],
                              catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:  # noqa: ANN001 - click's Result
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_settings_load_from_node_toml(home: NodeHome) -> None:
    write_toml(home, 'hospital_id = "hospital-a"\nportal_url = "https://portal.example.org/"\n'
                     'superlink = "superlink.example.org:9092"\nsuppression_k = 20\n'
                     'keycloak_url = "https://id.example.org"\nkeycloak_realm = "hospitals"\n'
                     'revocation_max_age_s = 600\nfeasibility_queries_per_day = 0\n')
    cfg = fresh(home).config
    assert cfg.portal_url == "https://portal.example.org"  # one spelling of the URL
    assert (cfg.superlink, cfg.suppression_k, cfg.revocation_max_age_s) == (
        "superlink.example.org:9092", 20, 600)
    assert cfg.feasibility_queries_per_day == 0
    client = PortalClient.for_home(fresh(home))
    assert client.token_endpoint == ("https://id.example.org/realms/hospitals/protocol/"
                                     "openid-connect/token")
    # left out: the defaults, which node.toml does not freeze
    assert cfg.consent_max_age_s == 24 * 3600 and cfg.pseudonymiser_url == ""


def test_the_environment_overrides_node_toml_and_is_never_written_back(
    home: NodeHome, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRE_NODE_SUPPRESSION_K", "25")
    monkeypatch.setenv("TRE_NODE_KEYCLOAK_URL", "https://id.override.example.org/")
    cfg = fresh(home).config
    assert cfg.suppression_k == 25 and cfg.keycloak_url == "https://id.override.example.org"
    fresh(home).update_config(superlink="superlink.example.org:9092")
    text = (home.path / CONFIG_FILE).read_text()
    assert "suppression_k" not in text and "id.override" not in text
    assert fresh(home).stored_config().suppression_k == 10


def test_node_toml_names_its_own_keycloak_over_the_shared_default(
    home: NodeHome, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TRE_KEYCLOAK_URL is every service's default: a node initialised with its own
    Keycloak keeps it; a node that names none follows the default."""
    monkeypatch.setenv("TRE_KEYCLOAK_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRE_KEYCLOAK_REALM", "shared")
    assert (fresh(home).config.keycloak_url, fresh(home).config.keycloak_realm) == (
        "http://127.0.0.1:9", "shared")
    fresh(home).update_config(keycloak_url="https://id.example.org", keycloak_realm="own")
    assert (fresh(home).config.keycloak_url, fresh(home).config.keycloak_realm) == (
        "https://id.example.org", "own")


def test_an_unknown_key_is_refused_with_its_name(home: NodeHome) -> None:
    write_toml(home, 'hospital_id = "hospital-a"\nportal_url = "https://portal.example.org"\n'
                     "suppresion_k = 5\n")
    with pytest.raises(NodeHomeError, match="unknown setting 'suppresion_k'"):
        fresh(home).config  # noqa: B018
    assert_one_line_error(status(home), "suppresion_k", "node.toml")
    write_toml(home, OLD_HOME_TOML.replace("[extra]", "[extra]\nkeycloak_ulr = 'x'"))
    assert_one_line_error(status(home), "unknown setting 'keycloak_ulr'")


@pytest.mark.parametrize(("line", "field"), [
    ("suppression_k = -3", "suppression_k"),
    ('keycloak_url = "id.example.org"', "keycloak_url"),
    ('portal_url = "portal.example.org"', "portal_url"),
    ('superlink = "no-port"', "superlink"),
    ('hospital_id = "bad id"', "hospital_id"),
    ('consent_max_age_s = "a day"', "consent_max_age_s"),
])
def test_a_bad_value_is_refused_naming_the_field(home: NodeHome, line: str, field: str) -> None:
    key = line.split(" = ")[0]
    base = {"hospital_id": '"hospital-a"', "portal_url": '"https://portal.example.org"'}
    base.pop(key, None)
    write_toml(home, "".join(f"{k} = {v}\n" for k, v in base.items()) + line + "\n")
    assert_one_line_error(status(home), f"invalid setting {field}", "node.toml")


def test_a_bad_value_from_the_environment_names_its_variable(
    home: NodeHome, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRE_NODE_SUPPRESSION_K", "0")
    assert_one_line_error(status(home), "invalid setting suppression_k",
                          "TRE_NODE_SUPPRESSION_K")


def test_a_bad_update_leaves_node_toml_as_it_was(home: NodeHome) -> None:
    before = (home.path / CONFIG_FILE).read_text()
    with pytest.raises(NodeHomeError, match="invalid setting suppression_k"):
        fresh(home).update_config(suppression_k=-1)
    with pytest.raises(NodeHomeError, match="unknown setting 'supression_k'"):
        fresh(home).update_config(supression_k=5)
    assert (home.path / CONFIG_FILE).read_text() == before


def test_an_old_home_with_an_extra_table_loads(
    home: NodeHome, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hospitals have homes written before the settings were typed: their `[extra]` keys
    are the fields of the same name, and the next write drops the table."""
    monkeypatch.setenv("TRE_KEYCLOAK_URL", "http://127.0.0.1:9")
    write_toml(home, OLD_HOME_TOML)
    cfg = fresh(home).config
    assert (cfg.keycloak_url, cfg.keycloak_realm, cfg.revocation_max_age_s) == (
        "https://id.hospital-a.example.org", "hospitals", 3600)
    assert PortalClient.for_home(fresh(home)).token_endpoint.startswith(
        "https://id.hospital-a.example.org/realms/hospitals/")
    assert status(home).exit_code == 0
    fresh(home).update_config(suppression_k=11)
    text = (home.path / CONFIG_FILE).read_text()
    assert "[extra]" not in text and 'keycloak_url = "https://id.hospital-a.example.org"' in text
    assert fresh(home).config.suppression_k == 11
    write_toml(home, OLD_HOME_TOML.replace("[extra]", 'keycloak_url = "https://x.example.org"'
                                                      "\n\n[extra]"))
    assert_one_line_error(status(home), "keycloak_url", "set both")
