"""Deployment manifests (deploy/): what can be checked without a Docker engine or helm.

Parsed YAML, a health check on every service and container, TLS material referenced
by every endpoint, no secret value inlined, every `tre` command and option the
manifests run accepted by the real CLI (and Flower's by `flower-superlink --help`),
and every `.Values.x.y` a Helm template reads defined in values.yaml. `docker
compose config` and `helm template` are not run: neither works on the build machines
(no compose plugin, no helm binary), see deploy/HOSPITAL.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tre.cli.main import app

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = {"central": DEPLOY / "compose" / "compose.yaml",
           "hospital": DEPLOY / "compose" / "hospital.yaml"}
CHARTS = [DEPLOY / "helm" / "tre", DEPLOY / "helm" / "tre-node"]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE", re.IGNORECASE)
# What shows that a service's endpoint (or its client side) is TLS.
TLS_MARKERS = {
    "postgres": "ssl=on",
    "keycloak": "KC_HTTPS_CERTIFICATE_FILE",
    "superlink": "--secure",
    "portal": "TRE_SSL_CERTFILE",
    "node": "--root-certificates",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def services() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    out = []
    for kind, path in COMPOSE.items():
        doc = load(path)
        out += [(kind, name, svc, doc) for name, svc in doc["services"].items()]
    return out


def test_every_yaml_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    plain = [f for f in files if "templates" not in f.parts]
    assert len(plain) >= 6
    for f in plain:
        assert load(f) is not None, f


@pytest.mark.parametrize(("kind", "name", "svc", "doc"), services(),
                         ids=[f"{k}-{n}" for k, n, _, _ in services()])
def test_compose_service(kind: str, name: str, svc: dict, doc: dict) -> None:
    check = svc.get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{name}: no health check"
    text = json.dumps(svc)
    assert TLS_MARKERS[name] in text, f"{name}: no TLS configuration"
    declared = doc.get("secrets") or {}
    mounted = {s if isinstance(s, str) else s.get("target", s["source"]): s
               for s in svc.get("secrets", [])}
    for secret in mounted.values():
        source = secret if isinstance(secret, str) else secret["source"]
        assert source in declared, f"{name}: secret {source} not declared"
    for used in re.findall(r"/run/secrets/([a-z_.]+)", text):
        assert used in mounted, f"{name}: reads {used} without mounting it"
    for key, value in (svc.get("environment") or {}).items():
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            assert str(value).startswith("${"), f"{name}: {key} has an inline value"
        if key.endswith("_FILE"):
            assert str(value).startswith("/run/secrets/"), f"{name}: {key} not a secret file"


def test_compose_secrets_are_files_that_git_ignores() -> None:
    for path in COMPOSE.values():
        for name, spec in load(path)["secrets"].items():
            assert set(spec) == {"file"} and spec["file"].startswith("./secrets/"), name
    ignore = (DEPLOY / "compose" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore
    tracked = subprocess.run(["git", "ls-files", "deploy/compose/secrets"], cwd=DEPLOY.parent,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked in ([], ["deploy/compose/secrets/.gitignore"])


def help_text(args: list[str]) -> str:
    """`tre ARGS --help` through typer's runner: fails if the subcommand does not exist."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result.output


def tre_invocations() -> list[tuple[str, list[str]]]:
    """Every `tre ...` command line the compose files and Helm templates run."""
    found = []
    for kind, name, svc, _ in services():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[0] == "tre":
            found.append((f"{kind}/{name}", [str(c) for c in cmd]))
    for chart in CHARTS:
        for tpl in (chart / "templates").glob("*.yaml"):
            for m in re.finditer(r'command: \[("tre".*?)\]', tpl.read_text(), re.S):
                tokens = re.findall(r'"([^"]*)"|\{\{[^}]*\}\}', m.group(1))
                found.append((tpl.name, [t or "VALUE" for t in tokens]))
    return found


@pytest.mark.parametrize(("where", "cmd"), tre_invocations(),
                         ids=[w for w, _ in tre_invocations()])
def test_tre_commands_exist_with_their_options(where: str, cmd: list[str]) -> None:
    words = list(cmd[1:])
    sub = []
    while words and not words[0].startswith("-"):
        sub.append(words.pop(0))
    text = help_text(sub)
    for opt in (w.split("=")[0] for w in words if w.startswith("--")):
        assert re.search(rf"{re.escape(opt)}\b", text), f"{where}: tre {' '.join(sub)} {opt}?"


def test_flower_commands_we_build_use_flowers_own_options(tmp_path: Path) -> None:
    """The SuperLink and SuperNode command lines of federation/ against the installed
    Flower: every option exists; both run in process isolation (Flower runs no app
    code); runtime dependency installation stays off everywhere."""
    from federation.node.home import NodeHome
    from federation.node.serve import supernode_command
    from federation.node.settings import StoredNodeSettings
    from federation.superlink import TLSFiles, superlink_command

    link = superlink_command("127.0.0.1", 9093, tls=TLSFiles.in_dir(tmp_path),
                             supernode_auth=True, secret_file=tmp_path / "s")
    home = NodeHome.create(tmp_path / "home", StoredNodeSettings(
        hospital_id="h", portal_url="http://x"),
                           {"keys": []})
    node = supernode_command(home, "127.0.0.1:9092", port=9094, insecure=False,
                             node_key=tmp_path / "k", root_certificates=tmp_path / "ca",
                             secret_file=tmp_path / "s")
    for cmd in (link, node):
        program = cmd[:3] if cmd[1:2] == ["-m"] else cmd[:1]  # a module: our SuperNode entry
        out = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        for opt in (c for c in cmd if c.startswith("--")):
            assert opt in out, f"{Path(cmd[0]).name} has no {opt}"
        assert cmd[cmd.index("--isolation") + 1] == "process"
        assert "--allow-runtime-dependency-installation" not in cmd
    assert "--disable-runtime-dependency-installation" in link  # on by default at a SuperLink
    assert "--enable-supernode-auth" in link and "--ssl-certfile" in link


def values_paths(values: Any, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= values_paths(value, path)
    return paths


def crude_render(text: str) -> str:
    """Enough of Go templating to parse the YAML: control lines go, actions become `x`."""
    lines = [line for line in text.splitlines()
             if not re.match(r"^\s*\{\{-?\s*(if|end|else|range|with)\b.*\}\}\s*$", line)]
    text = "\n".join(lines)
    text = re.sub(r"\s*\{\{-[^}]*nindent[^}]*\}\}", " {}", text)
    return re.sub(r"\{\{[^}]*\}\}", "x", text)


@pytest.mark.parametrize("chart", CHARTS, ids=[c.name for c in CHARTS])
def test_helm_chart(chart: Path) -> None:
    meta = load(chart / "Chart.yaml")
    assert meta["apiVersion"] == "v2" and meta["name"] == chart.name
    defined = values_paths(load(chart / "values.yaml"))
    helpers = "".join(p.read_text() for p in (chart / "templates").glob("*.tpl"))
    for tpl in (chart / "templates").glob("*.yaml"):
        text = tpl.read_text()
        for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text + helpers):
            assert ref in defined, f"{tpl.name}: .Values.{ref} is not in values.yaml"
        for inc in re.findall(r'include "([^"]+)"', text):
            assert f'define "{inc}"' in helpers, f"{tpl.name}: no template {inc}"
        docs = [d for d in yaml.safe_load_all(crude_render(text)) if d]
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), tpl.name
            if doc["kind"] in ("Deployment", "StatefulSet"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    assert "readinessProbe" in c and "livenessProbe" in c, (tpl.name, c["name"])
                    for env in c.get("env", []):
                        if SECRET_NAME.search(env["name"]):
                            assert "secretKeyRef" in env.get("valueFrom", {}), \
                                f"{tpl.name}: {env['name']} must come from a Secret"
        # TLS material mounted wherever a pod serves or dials
        assert re.search(r"tls|ca\.crt|ssl", text, re.I), tpl.name


def test_helm_values_hold_no_secret_values() -> None:
    for chart in CHARTS:
        values = values_paths(load(chart / "values.yaml"))
        for path in values:
            leaf = path.rsplit(".", 1)[-1]
            assert not re.fullmatch(r"(?i)password|client_?secret|token|key", leaf), path


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and "pip install ." in text
    assert "docker-entrypoint.sh" in text
