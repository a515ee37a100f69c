"""`tre demo`: the whole story on real components, on loopback or on separate hosts.

Keycloak is fetched, started and bootstrapped; the portal, a Flower SuperLink and
three hospital nodes run as real processes; each node ingests its own label-skewed
share of the real PneumoniaMNIST file and of the breast-cancer table; a steward's
FHIR consent bundle withdraws some patients; a researcher's request is reviewed
into a permit; a DP training run goes through the portal to the nodes; two output
checkers release the result; every audit chain is verified. Each stage is timed;
a failing stage stops the demo with its name and a non-zero exit.

Where the parties run is one `tre.cli.hosts.Hosts`: loopback (default), or with
`--netns` a network namespace per party (portal with Keycloak, SuperLink, each
hospital), the SuperLink's Control API on a link only the portal's host has, and
each party seeing only its own state folder. Every address and port is planned
before the first stage (parties need each other's addresses in any order); each
party keeps its files in `hosts.state_dir(party)`. The demo process itself is the
operator's harness: it provisions the federation's PKI in its own folder, hands
each party only the files it needs, and talks to the portal and Keycloak over the
network like a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from access_control.keycloak.oidc import password_grant
from access_control.keycloak.realm import CLI_CLIENT, DEMO_PASSWORD
from access_control.keycloak.server import KeycloakServer
from federation.launch.params import param_default
from pseudonymisation.identifiers import TEST_PERSON
from tre.cli.common import console, fail
from tre.cli.hosts import Hosts, HostsError, Loopback, SeparateHosts, connects
from tre.core.audit import entries_from_store, verify_entries
from tre.core.schemas import PURPOSE_SYSTEM
from tre.core.settings import CommonSettings, cache_dir

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
PORTAL, SUPERLINK, PSEUDONYMISER = "portal", "superlink", "pseudonymiser"
#: One host each (with --netns); Keycloak runs on the portal's host.
PARTIES = (PORTAL, SUPERLINK, PSEUDONYMISER, *HOSPITALS)
#: The ports parties listen on when each has a host of its own.
KEYCLOAK_PORT, PORTAL_PORT, FLEET_PORT, CONTROL_PORT, NODE_RUNTIME_PORT, PSEUDONYMISER_PORT = (
    8080, 8400, 9092, 9093, 9094, 8600)
IMAGING = "pneumonia"
CLINICAL = "breast-cancer"
#: people of the imaging file (test-person identifiers) who withdrew, and who consented
WITHDRAWN = 45
CONSENTING = 75
STEWARD_ORG = "org-a"


class StageFailed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"stage '{stage}' failed: {reason}")
        self.stage = stage


class Processes:
    """The demo's child processes, each logging to its own file, all stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str],
              prefix: list[str] | None = None) -> subprocess.Popen:
        """Start `args` (run through `prefix`, a party's host, when given) in its own
        process group; the prefix execs in place, so the pid is the command's."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([*(prefix or []), *args], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _tre() -> str:
    return str(Path(sys.executable).with_name("tre"))


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 120,
               verify: str | bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def _wait_port(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 60,
               via: list[str] | None = None) -> None:
    """Wait until host:port accepts connections (from the party of `via`, else from
    here), failing early when `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if connects(host, port, via):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


@dataclass(frozen=True)
class Plan:
    """Every address and port of the demo, fixed before the first stage: the SuperLink
    and the portal each need the other's address, whichever starts first."""

    keycloak: tuple[str, int]
    portal: tuple[str, int]
    fleet: tuple[str, int]  # the Fleet gateway: what hospitals dial
    control: tuple[str, int]  # the SuperLink's Control API: the portal alone reaches it
    node_runtime: dict[str, int]  # each SuperNode's runtime API (on its host's loopback)
    pseudonymiser: tuple[str, int]

    @classmethod
    def for_hosts(cls, hosts: Hosts) -> Plan:
        return cls(
            pseudonymiser=(hosts.address(PSEUDONYMISER),
                           hosts.port(PSEUDONYMISER, PSEUDONYMISER_PORT)),
            keycloak=(hosts.address(PORTAL), hosts.port(PORTAL, KEYCLOAK_PORT)),
            portal=(hosts.address(PORTAL), hosts.port(PORTAL, PORTAL_PORT)),
            fleet=(hosts.address(SUPERLINK), hosts.port(SUPERLINK, FLEET_PORT)),
            control=(hosts.control_address(), hosts.port(SUPERLINK, CONTROL_PORT)),
            node_runtime={h: hosts.port(h, NODE_RUNTIME_PORT) for h in HOSPITALS})

    @property
    def keycloak_url(self) -> str:
        return "http://{}:{}".format(*self.keycloak)

    @property
    def portal_url(self) -> str:
        """Over TLS (the federation CA's certificate): nodes and the SuperLink send it
        tokens and run results."""
        return "https://{}:{}".format(*self.portal)

    @property
    def pseudonymiser_url(self) -> str:
        """Over TLS too: hospitals and the steward send it blinded identifiers."""
        return "https://{}:{}".format(*self.pseudonymiser)

    @property
    def fleet_address(self) -> str:
        return "{}:{}".format(*self.fleet)

    @property
    def control_address(self) -> str:
        return "{}:{}".format(*self.control)


class Demo:
    def __init__(self, state: Path, rounds: int, hosts: Hosts | None = None) -> None:
        self.state = state
        self.rounds = rounds
        self.hosts: Hosts = hosts or Loopback(state)
        self.plan = Plan.for_hosts(self.hosts)
        self.procs = Processes(state / "logs")
        self.seconds: dict[str, float] = {}
        self.summary: dict[str, Any] = {"nodes": len(HOSPITALS), "rounds": rounds,
                                        "hosts": self._hosts_summary()}
        self.kc: KeycloakServer | None = None
        self.realm: dict[str, Any] = {}
        self.portal_url = self.plan.portal_url
        self.superlink = self.plan.fleet_address  # the Fleet gateway: what hospitals dial
        self.control = self.plan.control_address  # Control API: the portal alone reaches it
        self.pki = state / "pki"  # the operator's: the CA key never leaves it
        self.verify = str(self.pki / "ca.crt")  # the harness checks the portal against it
        self.report_key = ""  # the SuperLink's: the portal seals run credentials to it
        self.env = dict(os.environ)
        self.teardown_error = ""
        self._stopped = False

    def _hosts_summary(self) -> dict[str, Any]:
        return {"separate": self.hosts.separate,
                "addresses": {p: self.hosts.address(p) for p in PARTIES},
                "fleet": self.plan.fleet_address, "control": self.plan.control_address}

    # -- plumbing ---------------------------------------------------------------------
    def stage(self, name: str, fn: Callable[[], str]) -> None:
        started = time.monotonic()
        with console.status(f"[bold]{name}[/] …"):
            try:
                note = fn()
            except StageFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure names its stage
                raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
        self.seconds[name] = round(time.monotonic() - started, 1)
        console.print(f"[green]✓[/] {name} [dim]({self.seconds[name]}s)[/] {note}")

    def token(self, user: str) -> dict[str, str]:
        assert self.kc is not None
        tok = password_grant(self.kc.base_url, "tre", user, DEMO_PASSWORD, client_id=CLI_CLIENT)
        return {"Authorization": f"Bearer {tok['access_token']}"}

    def api(self, method: str, path: str, user: str, *, timeout: float = 120,
            **kwargs: Any) -> Any:
        resp = httpx.request(method, f"{self.portal_url}{path}", headers=self.token(user),
                             timeout=timeout, verify=self.verify, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path} as {user}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.content

    def run_tre(self, *args: str, party: str | None = None) -> subprocess.CompletedProcess:
        """`tre ARGS` as `party` (on its host, seeing its own folder only), or as the
        operator's harness when no party is given."""
        prefix = self.hosts.prefix(party) if party else []
        return subprocess.run([*prefix, _tre(), *args], env=self.env, capture_output=True,
                              text=True, timeout=900)

    def tre(self, *args: str, party: str | None = None) -> str:
        proc = self.run_tre(*args, party=party)
        if proc.returncode != 0:
            raise RuntimeError(f"tre {' '.join(args[:3])}: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def home(self, hospital: str) -> Path:
        return self.hosts.state_dir(hospital) / "node"

    def ca_cert(self, party: str) -> Path:
        """The federation's CA certificate as the party holds it (in its own folder)."""
        return self.hosts.state_dir(party) / "ca.crt"

    def tls_dir(self, party: str) -> Path:
        """The party's own TLS certificate and key (the portal's, the SuperLink's)."""
        return self.hosts.state_dir(party) / "tls"

    # -- stages -----------------------------------------------------------------------
    def provision(self) -> str:
        """The operator's PKI, in the demo's own folder; each party gets a copy of what
        it needs in its own: the CA certificate, the SuperLink and the portal their
        key pairs. The SuperLink makes its report key on its own host; the operator
        passes its public half on to the portal."""
        names = list(dict.fromkeys((self.plan.fleet[0], self.plan.control[0])))
        self.tre("federation", "provision", "--out", str(self.pki),
                 *[a for h in names for a in ("--host", h)],
                 "--portal-host", self.plan.portal[0],
                 "--pseudonymiser-host", self.plan.pseudonymiser[0])
        for party in (PORTAL, *HOSPITALS):
            shutil.copy2(self.pki / "ca.crt", self.ca_cert(party))
        for party, files in ((SUPERLINK, ("ca.crt", "superlink.crt", "superlink.key")),
                             (PORTAL, ("portal.crt", "portal.key")),
                             (PSEUDONYMISER, ("pseudonymiser.crt", "pseudonymiser.key"))):
            self.tls_dir(party).mkdir(exist_ok=True)
            for name in files:
                shutil.copy2(self.pki / name, self.tls_dir(party) / name)
        self.report_key = self.tre(
            "federation", "report-key", "--state-dir",
            str(self.hosts.state_dir(SUPERLINK) / "flwr"), party=SUPERLINK).strip()
        return (f"federation CA, SuperLink certificate for {' and '.join(names)}, portal "
                f"certificate for {self.plan.portal[0]}, pseudonymisation service's for "
                f"{self.plan.pseudonymiser[0]}; each party holds the CA certificate and its own "
                "key only; the SuperLink's report key made on its host")

    def keycloak(self) -> str:
        from access_control.keycloak.bootstrap import admin_client, bootstrap

        host, port = self.plan.keycloak
        self.kc = KeycloakServer.start(
            port, self.hosts.state_dir(PORTAL) / "keycloak", host=host,
            command_prefix=self.hosts.prefix(PORTAL) or None)
        admin = admin_client(self.kc.base_url, self.kc.admin_username, self.kc.admin_password)
        self.realm = bootstrap(admin, hospitals=HOSPITALS)
        self.env.update(TRE_KEYCLOAK_URL=self.kc.base_url)
        return f"Keycloak {self.kc.base_url}, realm tre with demo users and 3 hospital clients"

    def pseudonymiser(self) -> str:
        """The trusted third party holding the OPRF key, on a host of its own: hospitals
        and the steward derive the same pseudonym of a person through it."""
        host, port = self.plan.pseudonymiser
        home = self.hosts.state_dir(PSEUDONYMISER) / "home"
        assert self.kc is not None
        env = self.env | {"TRE_PSEUDONYMISER_KEYCLOAK_URL": self.kc.base_url}
        self.tre("pseudonymiser", "init", "--home", str(home), party=PSEUDONYMISER)
        tls = self.tls_dir(PSEUDONYMISER)
        proc = self.procs.start("pseudonymiser", [
            _tre(), "pseudonymiser", "serve", "--home", str(home), "--host", host,
            "--port", str(port), "--ssl-certfile", str(tls / "pseudonymiser.crt"),
            "--ssl-keyfile", str(tls / "pseudonymiser.key")], env,
            self.hosts.prefix(PSEUDONYMISER))
        _wait_http(f"{self.plan.pseudonymiser_url}/v1/health", proc,
                   "the pseudonymisation service", verify=self.verify)
        return (f"pseudonymisation service {self.plan.pseudonymiser_url} (OPRF key in its own "
                "home; callers are hospitals and stewards with Keycloak tokens)")

    def portal(self) -> str:
        from federation.launch.fab import APP_ID, fab_hash

        host, port = self.plan.portal
        tls = self.tls_dir(PORTAL)
        env = self.env | {"TRE_STATE_DIR": str(self.hosts.state_dir(PORTAL) / "portal"),
                          "TRE_SUPERLINK": self.control,
                          "TRE_SUPERLINK_INSECURE": "false",
                          "TRE_SUPERLINK_ROOT_CERTIFICATES": str(self.ca_cert(PORTAL)),
                          "TRE_SUPERLINK_REPORT_KEY": self.report_key,
                          "TRE_OIDC_CLIENT_SECRET": self.realm["portal_client_secret"],
                          "TRE_PUBLIC_URL": self.portal_url,
                          # a citizen's view: their pseudonym, from the INS in their token
                          "TRE_PSEUDONYMISER_URL": self.plan.pseudonymiser_url,
                          "TRE_PSEUDONYMISER_CA": str(self.ca_cert(PORTAL))}
        proc = self.procs.start("portal", [
            _tre(), "portal", "serve", "--host", host, "--port", str(port),
            "--ssl-certfile", str(tls / "portal.crt"), "--ssl-keyfile", str(tls / "portal.key")],
            env, self.hosts.prefix(PORTAL))
        _wait_http(f"{self.portal_url}/healthz", proc, "the portal", verify=self.verify)
        app = self.api("POST", "/v1/apps", "admin1", json={
            "app_id": APP_ID, "app_hash": fab_hash(),
            "description": "Governed DP-SGD image classifier (node-installed code)"})
        return f"portal {self.portal_url}; approved app {app['app_id']} {app['app_hash'][:12]}…"

    def superlink_(self) -> str:
        """TLS with the federation's own CA, and SuperNode authentication: only node keys
        enrolled through the portal may connect."""
        home = self.hosts.state_dir(SUPERLINK)
        (fleet_host, fleet_port), (control_host, control_port) = self.plan.fleet, self.plan.control
        proc = self.procs.start("superlink", [
            _tre(), "federation", "superlink", "--host", fleet_host, "--port", str(fleet_port),
            "--control-host", control_host, "--control-port", str(control_port),
            "--secure", "--pki", str(self.tls_dir(SUPERLINK)), "--state-dir", str(home / "flwr"),
            "--database", str(home / "superlink.db"), "--portal-url", self.portal_url,
            "--portal-ca", str(self.tls_dir(SUPERLINK) / "ca.crt")],
            self.env, self.hosts.prefix(SUPERLINK))
        # the Control API as the portal reaches it (the harness may have no route to it)
        _wait_port(control_host, control_port, proc, "the SuperLink",
                   via=self.hosts.prefix(PORTAL))
        _wait_port(fleet_host, fleet_port, proc, "the Fleet gateway")
        note = ""
        if self.hosts.separate:
            seen = {h: {"fleet": connects(fleet_host, fleet_port, self.hosts.prefix(h)),
                        "control": connects(control_host, control_port, self.hosts.prefix(h))}
                    for h in HOSPITALS}
            self.summary["hosts"]["reachable_from_hospitals"] = seen
            if not all(v["fleet"] and not v["control"] for v in seen.values()):
                raise RuntimeError(f"hospitals must reach Fleet and not Control: {seen}")
            note = "; from each hospital's host Fleet answers, Control does not"
        return (f"Flower SuperLink: Fleet gateway {self.superlink} for hospitals, Control "
                f"{self.control} for the portal only (TLS, SuperNode authentication){note}")

    def nodes(self) -> str:
        data_root = CommonSettings().data_root
        npz = data_root / "medmnist" / "pneumoniamnist.npz"
        if not npz.exists():
            raise RuntimeError(f"{npz} is missing: set TRE_DATA_ROOT to the shared data folder")
        tables = self._breast_cancer_shares()
        records: dict[str, int] = {}
        for i, hospital in enumerate(HOSPITALS, start=1):
            home = self.home(hospital)
            creds = self.hosts.state_dir(hospital) / "credentials.json"
            creds.write_text(json.dumps(self.realm["hospitals"][hospital]))
            creds.chmod(0o600)
            self.tre("node", "init", "--hospital-id", hospital, "--portal", self.portal_url,
                     "--home", str(home), "--superlink", self.superlink,
                     "--keycloak-url", self.kc.base_url, "--credentials-file", str(creds),
                     "--portal-ca", str(self.ca_cert(hospital)),
                     "--pseudonymiser", self.plan.pseudonymiser_url,
                     "--id-system", TEST_PERSON, party=hospital)
            creds.unlink()
            out = json.loads(self.tre(
                "node", "ingest", "medmnist", str(npz), "--dataset-id", IMAGING,
                "--partition", f"{i}/{len(HOSPITALS)}", "--split-scheme", "label-skew",
                "--seed", "7", "--home", str(home), "--json", party=hospital))
            records[hospital] = out["ingested"]
            self.tre("node", "ingest", "table", str(tables[hospital]), "--id-column",
                     "patient_id", "--dataset-id", CLINICAL, "--title",
                     "Breast cancer FNA features", "--home", str(home), party=hospital)
            self.tre("node", "budget", "set", IMAGING, "20", "--home", str(home),
                     party=hospital)
        self.summary["records_per_node"] = records
        return "3 nodes enrolled, data ingested (label-skewed shares), ε budgets set"

    def synthetic(self) -> str:
        """Each node synthesizes its clinical table; only what passed the gate is published."""
        passed = []
        for hospital in HOSPITALS:
            home = str(self.home(hospital))
            proc = self.run_tre("node", "synthesize", CLINICAL, "--home", home, "--json",
                                party=hospital)
            if proc.returncode == 0:
                passed.append(hospital)
            self.tre("node", "publish", "--home", home, party=hospital)
        published = []
        for hospital in passed:
            resp = httpx.get(f"{self.portal_url}/v1/catalogue/{CLINICAL}/synthetic",
                             params={"hospital_id": hospital, "format": "csv"},
                             headers=self.token("alice"), timeout=60, verify=self.verify)
            if resp.status_code == 200:
                published.append(hospital)
        self.summary["synthetic_published"] = bool(published)
        if not published:
            raise RuntimeError("no synthetic table passed the privacy gate at any node")
        return (f"catalogue published; synthetic {CLINICAL} passed the gate and is "
                f"downloadable for {', '.join(published)}")

    def _breast_cancer_shares(self) -> dict[str, Path]:
        """Each hospital's share of the table, written into that hospital's own folder."""
        from sklearn.datasets import load_breast_cancer

        frame = load_breast_cancer(as_frame=True).frame
        frame.insert(0, "patient_id", [f"bc-{i:04d}" for i in range(len(frame))])
        paths = {}
        for i, hospital in enumerate(HOSPITALS):
            path = self.hosts.state_dir(hospital) / "breast-cancer.csv"
            frame.iloc[i::len(HOSPITALS)].to_csv(path, index=False)
            paths[hospital] = path
        return paths

    def consent(self) -> str:
        """The data-altruism organisation's FHIR bundle names people by identifier (here
        the imaging file's test persons); `tre consent import` pseudonymises them on the
        steward's side through the service, so the portal receives pseudonyms only."""
        entries = []
        for j in range(WITHDRAWN + CONSENTING):
            withdrawn = j < WITHDRAWN
            entries.append({"resource": {
                "resourceType": "Consent", "status": "inactive" if withdrawn else "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "consentscope", "code": "research"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
                "patient": {"identifier": {"system": TEST_PERSON,
                                           "value": f"pneumoniamnist-train-{j}"}},
                "organization": [{"identifier": {"value": STEWARD_ORG}}],
                "provision": {"type": "deny" if withdrawn else "permit", "purpose": [
                    {"system": PURPOSE_SYSTEM, "code": p}
                    for p in ("scientific_research", "ai_training")]}}})
        bundle = self.state / "steward" / "consents.json"
        bundle.parent.mkdir(exist_ok=True)
        bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                      "entry": entries}))
        token = self.token("steward1")["Authorization"].removeprefix("Bearer ")
        out = self.tre("consent", "import", str(bundle), "--portal", self.portal_url,
                       "--pseudonymiser", self.plan.pseudonymiser_url, "--ca", self.verify,
                       "--token", token)
        return (f"{len(entries)} FHIR Consents by identifier imported by steward1 "
                f"({WITHDRAWN} withdrawals): {out.strip()}")

    def serve_nodes(self) -> str:
        for hospital in HOSPITALS:
            self.procs.start(f"node-{hospital}", [
                _tre(), "node", "serve", "--home", str(self.home(hospital)),
                "--superlink", self.superlink, "--port", str(self.plan.node_runtime[hospital]),
                "--secure", "--root-certificates", str(self.ca_cert(hospital))], self.env,
                self.hosts.prefix(hospital))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            online = [n for n in self.api("GET", "/v1/nodes", "admin1") if n["online"]]
            if len(online) >= len(HOSPITALS):
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"only {len(online)} of 3 nodes enrolled their Flower key "
                               "and connected")
        return "3 SuperNodes enrolled their keys through the portal and connected over TLS"

    def feasibility(self) -> str:
        cohort = {"cohort": {"dataset_id": IMAGING, "label": [1]}, "purpose": "ai_training"}
        # a Flower query run: each node pulls consent, counts, suppresses (minutes on 2 cores)
        answer = self.api("POST", "/v1/feasibility", "alice", json=cohort, timeout=900)
        missing = [f"{h['hospital_id']} ({h['status']}: {h.get('reason', '')})"
                   for h in answer["hospitals"] if h["status"] != "answered"]
        if missing:
            raise RuntimeError(f"not every hospital answered: {'; '.join(missing)}")
        self.summary["feasibility"] = {"hospitals": answer["hospitals"],
                                       "total_subjects": answer["total_subjects"]}
        cells = ", ".join(f"{h['hospital_id']} {d['subjects']}" for h in answer["hospitals"]
                          for d in h.get("datasets", []))
        return (f"pneumonia-labelled subjects, suppressed per hospital: {cells}; total "
                f"{answer['total_subjects'].get(IMAGING)}")

    def request(self) -> str:
        from federation.launch.fab import APP_ID

        body = {
            "title": "Paediatric pneumonia detection with DP federated learning",
            "organisation": "KU Leuven", "purpose": "ai_training",
            "research_question": "Can a CNN trained under (ε, δ)-DP across three hospitals "
                                 "detect pneumonia on paediatric chest X-rays?",
            "datasets": [{"node_id": h, "dataset_id": IMAGING} for h in HOSPITALS],
            "variables": ["image", "label"], "epsilon": 8.0, "delta": 1e-5,
            "app_id": APP_ID, "duration_days": 30, "legal_basis": "ehds_art_68_data_permit",
            "data_form": "pseudonymised", "min_hospitals": 2,
            "expected_outputs": "model weights, aggregate test AUC and accuracy",
            "ethics_reference": "EC-DEMO-001",
        }
        rid = self.api("POST", "/v1/requests", "alice", json=body)["id"]
        self.api("POST", f"/v1/requests/{rid}/submit", "alice")
        decided = self.api("POST", f"/v1/requests/{rid}/reviews", "rev1", json={
            "decision": "approve", "rationale": "Proportionate: DP-SGD, aggregate outputs only."})
        self.permit_id = decided["permit_id"]
        self.summary["permit_id"] = self.permit_id
        self.summary["epsilon_cap"] = body["epsilon"]
        return f"request {rid} approved by rev1 → permit {self.permit_id}"

    def train(self) -> str:
        # the approved app's recipe (model, epochs, batch, lr: RunParams' defaults, issue
        # 17's sweep), only the number of rounds chosen here
        run = self.api("POST", "/v1/runs", "alice", json={
            "permit_id": self.permit_id, "rounds": self.rounds})
        seen = 0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            run = self.api("GET", f"/v1/runs/{run['id']}", "alice")
            for rnd in run["rounds"][seen:]:
                eps = {n.get("hospital_id"): round(n["epsilon"], 2) for n in rnd["nodes"]
                       if n.get("status") == "trained"}
                auc = (rnd.get("evaluate") or {}).get("auc")
                shown = "n/a" if auc is None else f"{auc:.3f}"
                console.print(f"    round {rnd['round']}: AUC {shown}, ε per node {eps}")
            seen = len(run["rounds"])
            if run["state"] not in ("queued", "running"):
                break
            time.sleep(2)
        if run["state"] != "completed":
            raise RuntimeError(f"run {run['id']} ended {run['state']}: {run.get('error')}")
        last = run["rounds"][-1]
        evaluation = last.get("evaluate") or {}
        self.summary["test_auc"] = evaluation.get("auc")
        self.summary["test_accuracy"] = evaluation.get("accuracy")
        self.summary["epsilon_per_node"] = run["epsilon_per_node"]
        self.summary["excluded_by_consent_per_node"] = {
            n["hospital_id"]: n.get("excluded_by_consent") for n in last["nodes"]
            if n.get("hospital_id")}
        self.output_id = run["output_id"]
        return (f"run {run['id']} completed: AUC {self.summary['test_auc']}, "
                f"ε {run['epsilon_per_node']}")

    def airlock(self) -> str:
        out = self.api("GET", f"/v1/outputs/{self.output_id}", "chk1")
        self.summary["airlock_checks"] = {c["check"]: {"passed": c["passed"], "detail":
                                                       c["detail"]} for c in out["checks"]}
        failed = [c for c in out["checks"] if not c["passed"]]
        if failed:
            raise RuntimeError("automated checks failed: " + "; ".join(
                f"{c['check']}: {c['detail']}" for c in failed))
        # what the checkers review: the model card, with the calibrated accuracy
        card = self.api("GET", f"/v1/outputs/{self.output_id}/card", "chk1")
        calibrated = card["metrics"].get("accuracy_calibrated") or {}
        self.summary["test_accuracy_calibrated"] = calibrated.get("value")
        self.summary["decision_threshold"] = calibrated.get("threshold")
        for checker in ("chk1", "chk2"):
            self.api("POST", f"/v1/outputs/{self.output_id}/reviews", checker, json={
                "decision": "approve", "rationale": "DP attested, aggregates only, MIA low."})
        model = self.api("GET", f"/v1/outputs/{self.output_id}/files/model.pt", "alice")
        (self.state / "released-model.pt").write_bytes(model)
        self.summary["output_released"] = True
        return f"output {self.output_id} released by chk1 and chk2; alice downloaded the model"

    def audit(self) -> str:
        verdict = self.api("GET", "/v1/audit/verify", "auditor1")
        entries = []
        after = 0
        while True:
            page = self.api("GET", "/v1/audit", "auditor1", params={"after": after,
                                                                   "limit": 1000})
            entries.extend(page["entries"])
            if page["next_after"] is None:
                break
            after = page["next_after"]
        from tre.core.audit import AuditEntry

        independent = verify_entries(AuditEntry(**e) for e in entries)
        result = {"portal": verdict["ok"] and independent.ok}
        for hospital in HOSPITALS:
            result[hospital] = verify_entries(
                entries_from_store(self.home(hospital) / "node.duckdb")).ok
        self.summary["audit_verified"] = result
        if not all(result.values()):
            raise RuntimeError(f"audit verification failed: {result}")
        return f"portal chain ({len(entries)} rows) and 3 node chains verified"

    def transparency(self) -> str:
        public = httpx.get(f"{self.portal_url}/v1/transparency", timeout=30,
                           verify=self.verify).json()
        permits = ", ".join(p["permit_id"] for p in public["permits"])
        return f"public register lists {len(public['permits'])} permit(s): {permits}"

    # -- driver -----------------------------------------------------------------------
    def run(self) -> None:
        stages = [
            ("pki", self.provision),
            ("keycloak", self.keycloak),
            ("pseudonymiser", self.pseudonymiser),
            ("superlink", self.superlink_),
            ("portal", self.portal),
            ("nodes", self.nodes),
            ("synthetic", self.synthetic),
            ("consent", self.consent),
            ("supernodes", self.serve_nodes),
            ("feasibility", self.feasibility),
            ("request", self.request),
            ("training", self.train),
            ("airlock", self.airlock),
            ("audit", self.audit),
            ("transparency", self.transparency),
        ]
        for name, fn in stages:
            self.stage(name, fn)
        self.summary["seconds"] = self.seconds

    def stop(self) -> None:
        """Stop everything the demo started, then remove its hosts (namespaces, links);
        idempotent. A teardown that leaves something behind is printed and kept in
        `teardown_error` (the demo then exits non-zero)."""
        if self._stopped:
            return
        self._stopped = True
        held: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: nothing to hold off
            for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C: finish tearing down
                held[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            self.procs.stop_all()
            if self.kc is not None:
                self.kc.stop()
        finally:
            try:
                self.hosts.close()
            except HostsError as exc:
                self.teardown_error = str(exc)
                console.print(f"[bold red]teardown:[/] {exc}")
            for sig, handler in held.items():
                signal.signal(sig, handler)


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops the demo like Ctrl-C does: everything it started is stopped."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def demo(
    exit_after: bool = typer.Option(False, "--exit", help="stop after the story"),
    json_path: Path = typer.Option(None, "--json", help="write a summary JSON here"),
    state_dir: Path = typer.Option(None, "--state-dir", help="where the demo keeps its state"),
    rounds: int = typer.Option(param_default("rounds"), "--rounds", min=1, max=20),
    netns: bool = typer.Option(
        False, "--netns", help="each party on a host of its own: a network namespace each "
        "on a private bridge, Control on a portal-only link, each party seeing only its own "
        "state folder (needs root and iproute2)"),
) -> None:
    """Run the whole TRE story end to end on real components, on loopback (or, with
    --netns, with every party on a separate host)."""
    state = (state_dir or cache_dir() / "demo").resolve()
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    _interrupt_on_sigterm()
    try:
        # the operator's own folders (CA key, logs) are no party's to see
        hosts: Hosts = (SeparateHosts(PARTIES, state, hidden=[state / "pki", state / "logs"])
                        if netns else Loopback(state))
    except HostsError as exc:
        fail(str(exc))
    show = Demo(state, rounds, hosts)
    try:
        show.run()
    except StageFailed as exc:
        show.stop()
        if json_path:
            json_path.write_text(json.dumps(show.summary | {"failed_stage": exc.stage,
                                                             "seconds": show.seconds},
                                            indent=2, default=str))
        fail(f"{exc} (logs in {state / 'logs'})")
    except BaseException:
        show.stop()
        raise
    if json_path:
        json_path.write_text(json.dumps(show.summary, indent=2, default=str))
    table = Table(title="TRE demo", show_header=False)
    for key in ("nodes", "records_per_node", "excluded_by_consent_per_node", "permit_id",
                "rounds", "test_auc", "test_accuracy", "test_accuracy_calibrated",
                "decision_threshold", "epsilon_per_node", "epsilon_cap",
                "output_released", "audit_verified"):
        table.add_row(key, json.dumps(show.summary.get(key), default=str))
    console.print(table)
    console.print(f"Open the portal: {show.portal_url}  (users alice, rev1, chk1, steward1, "
                  f"auditor1 …; password {DEMO_PASSWORD})")
    console.print(f"Transparency register: {show.portal_url}/v1/transparency · "
                  f"Keycloak: {show.kc.base_url if show.kc else ''}")
    if exit_after:
        show.stop()
        if show.teardown_error:
            fail(f"the demo did not remove all it set up: {show.teardown_error}")
        return
    console.print("The stack keeps running: Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        show.stop()
