"""`tre node`: a hospital node's data plane — enrol, ingest, query, synthesize, publish, audit.

Every command works on a node home (`--home`, default $TRE_NODE_HOME or
./node-home). Bad input ends with one line on stderr and a non-zero exit; nothing
is half-written (each ingestion is one transaction).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import duckdb
import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.node.errors import DataError, IngestError, SynthesisError
from federation.node.home import NodeHome, NodeHomeError, default_home_path
from federation.node.partition import PartitionError, parse_partition, parse_scheme
from federation.node.portal_client import PortalError
from federation.node.refusal import Refusal
from tre.cli.common import console, err_console, fail, print_json
from tre.core.schemas import CohortFilter, Purpose

if TYPE_CHECKING:
    from federation.node.ingest import IngestReport

app = typer.Typer(
    no_args_is_help=True,
    help="Operate a hospital node: enrol, ingest, query, synthesize, publish, audit.",
)
ingest_app = typer.Typer(no_args_is_help=True, help="Ingest local data into the common model.")
audit_app = typer.Typer(no_args_is_help=True, help="Verify and export the node's audit log.")
synthetic_app = typer.Typer(no_args_is_help=True,
                            help="Manage this node's published synthetic releases.")
app.add_typer(ingest_app, name="ingest")
app.add_typer(audit_app, name="audit")
app.add_typer(synthetic_app, name="synthetic")

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Node home directory [default: $TRE_NODE_HOME or ./node-home]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
ConsentFilterOpt = Annotated[str, typer.Option(
    "--consent-filter", help="snapshot: the portal's consent registry; regime: the "
    "dataset's regime with no consent records")]
DatasetOpt = Annotated[str, typer.Option("--dataset-id", help="Dataset to ingest into.")]
IdSystemOpt = Annotated[str | None, typer.Option(
    "--id-system", help="System of the patient ids, e.g. urn:oid:1.2.250.1.213.1.4.8 (INS): "
    "the federation pseudonym is derived from system and value [default: node.toml "
    "identifier_system]")]
TitleOpt = Annotated[str | None, typer.Option("--title", help="Dataset title (new datasets).")]
RegimeOpt = Annotated[
    str | None,
    typer.Option("--consent-regime", help="opt-in or opt-out [default for new datasets: opt-out]"),
]


def home_path(home: Path | None) -> Path:
    return home if home is not None else default_home_path()


@contextmanager
def node_errors() -> Iterator[None]:
    """Turn the node's expected failures into one-line errors with a non-zero exit."""
    try:
        yield
    except (NodeHomeError, IngestError, PartitionError, PortalError, DataError,
            SynthesisError) as exc:
        fail(str(exc))
    except Refusal as exc:  # e.g. no fresh consent snapshot: nothing is read
        fail(f"refused: {exc.reason}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "input"
        fail(f"invalid {where}: {first.get('msg')}")
    except duckdb.IOException as exc:
        fail(f"cannot open the node store (is another `tre node` process using it?): {exc}")
    except duckdb.Error as exc:
        fail(f"the node store refused the change, nothing was stored: {exc}")


def open_home(home: Path | None) -> NodeHome:
    """The node home, checked to exist, with its store opened and migrated."""
    node = NodeHome(home_path(home)).require()
    node.db  # noqa: B018 - open early so a locked store fails here, with a clear message
    return node


class RichProgress:
    """Adapter from the ingesters' progress hook to a rich bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, total: int | None, description: str) -> None:
        self.task = self.progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[RichProgress]:
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, disable=not enabled,
    )
    with progress:
        yield RichProgress(progress)


def _ingest(ingest: Callable[..., IngestReport], home: Path | None, as_json: bool,
            *args: Any, **kwargs: Any) -> None:
    """Every ingester the same way: open the home, show progress, report the batch."""
    with node_errors():
        node = open_home(home)
        with progress_bar(not as_json) as bar:
            report = ingest(node, *args, progress=bar, **kwargs)
    report_ingestion(report, as_json)


def report_ingestion(report: IngestReport, as_json: bool, *, show: int = 20) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    for item in report.skipped[:show]:
        console.print(f"  skipped {item.name}: {item.reason}"
                      + (f" ({item.detail.splitlines()[0][:120]})" if item.detail else ""),
                      highlight=False, soft_wrap=True)
    if len(report.skipped) > show:
        console.print(f"  ... and {len(report.skipped) - show} more (use --json for all)")
    console.print(report.summary_line(), highlight=False, soft_wrap=True)


# -- enrolment and status ----------------------------------------------------------------
@app.command("init")
def init(
    hospital_id: Annotated[str, typer.Option("--hospital-id", help="This hospital's id.")],
    portal: Annotated[str, typer.Option("--portal", help="Portal base URL.")],
    home: HomeOpt = None,
    superlink: Annotated[
        str | None, typer.Option("--superlink", help="Flower SuperLink HOST:PORT.")] = None,
    keycloak_url: Annotated[
        str | None, typer.Option("--keycloak-url", help="Keycloak base URL for the token "
                                 "[default: $TRE_KEYCLOAK_URL, else http://127.0.0.1:8180]")
    ] = None,
    keycloak_realm: Annotated[
        str | None, typer.Option("--keycloak-realm", help="Realm of that Keycloak "
                                 "[default: $TRE_KEYCLOAK_REALM, else tre]")
    ] = None,
    credentials_file: Annotated[
        Path | None,
        typer.Option("--credentials-file",
                     help="JSON {client_id, client_secret}; copied into the home as a 0600 file. "
                          "Else TRE_NODE_CLIENT_ID / TRE_NODE_CLIENT_SECRET are read at use."),
    ] = None,
    portal_ca: Annotated[
        Path | None, typer.Option("--portal-ca", help="CA certificate the portal's TLS "
                                  "certificate must chain to (the federation CA); pinned in "
                                  "the home [default: the system's CAs]")] = None,
    pseudonymiser: Annotated[str | None, typer.Option(
        "--pseudonymiser", help="The pseudonymisation service's URL: patient ids become the "
        "federation-wide pseudonym (one person, one pseudonym at every hospital)")] = None,
    offline_pseudonyms: Annotated[bool, typer.Option(
        "--offline-pseudonyms", help="No pseudonymisation service: pseudonyms from this "
        "node's own key. Consent recorded by identifier and cross-site linkage are then "
        "off")] = False,
    id_system: IdSystemOpt = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Development only: accept plain http portal and service URLs")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-enrol an existing home.")] = False,
) -> None:
    """Create the node home and pin the portal's permit keys (GET /v1/permit-keys, over
    verified TLS); the node follows later rotations and retirements by itself."""
    from federation.node.pseudonyms import OFFLINE_NOTE
    from federation.node.service import init_node

    if (pseudonymiser is None) == (not offline_pseudonyms):
        fail("choose how patient ids are pseudonymised: --pseudonymiser URL (the federation's "
             "pseudonymisation service) or --offline-pseudonyms (this node's own key)")
    with node_errors():
        node = init_node(
            home_path(home), hospital_id=hospital_id, portal_url=portal, superlink=superlink,
            keycloak_url=keycloak_url, keycloak_realm=keycloak_realm,
            credentials_file=credentials_file, portal_ca=portal_ca,
            pseudonymiser_url=pseudonymiser, identifier_system=id_system, insecure=insecure,
            force=force,
        )
        kids = [k.get("kid") for k in node.permit_jwks()["keys"]]
    console.print(f"node {hospital_id} ready at {node.path}; pinned permit key(s) "
                  f"{', '.join(kids)} from {portal}", highlight=False, soft_wrap=True)
    if offline_pseudonyms:
        err_console.print(f"[yellow]note:[/] {OFFLINE_NOTE}", highlight=False, soft_wrap=True)


@app.command("status")
def status(
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    offline: Annotated[bool, typer.Option("--offline", help="Skip the network checks.")] = False,
) -> None:
    """Datasets held (exact local counts), audit head, portal and SuperLink reachability."""
    from federation.node.service import node_status

    with node_errors():
        info = node_status(open_home(home), check_network=not offline)
    if as_json:
        print_json(info)
        return
    console.print(f"node [bold]{info['hospital_id']}[/] at {info['home']}", highlight=False)
    table = Table("dataset", "kind", "consent", "subjects", "studies", "clinical values", "title")
    for d in info["datasets"]:
        table.add_row(d["dataset_id"], d["kind"], d["consent_regime"], str(d["subjects"]),
                      str(d["studies"]), str(d["clinical_values"]), d["title"])
    console.print(table)
    audit = info["audit"]
    console.print(f"audit: {audit['rows']} rows, head {audit['head_hash'][:16]}…, "
                  + ("chain intact" if audit["ok"] else f"[red]BROKEN: {audit['problem']}[/]"))
    console.print(f"permit keys: {', '.join(info['permit_key_ids']) or 'none pinned'}; "
                  f"credentials: {info['credentials']}", highlight=False)
    if not offline:
        for name, key, where in (("portal", "portal", info["portal_url"]),
                                 ("SuperLink", "superlink_reachable", info["superlink"])):
            r = info[key]
            mark = "[green]reachable[/]" if r["reachable"] else "[red]unreachable[/]"
            console.print(f"{name} {where}: {mark} ({r['detail']})", highlight=False)


# -- ingestion ----------------------------------------------------------------------------
@ingest_app.command("medmnist")
def ingest_medmnist_cmd(
    file: Annotated[Path, typer.Argument(help="MedMNIST .npz file.")],
    dataset_id: DatasetOpt,
    partition: Annotated[str, typer.Option("--partition", help="This node's share i/n.")] = "1/1",
    split_scheme: Annotated[
        str, typer.Option("--split-scheme", help="iid, label-skew or quantity-skew.")] = "iid",
    seed: Annotated[int, typer.Option("--seed", help="Partition seed (same on all nodes).")] = 0,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Dirichlet alpha of the skewed schemes.")] = 0.5,
    label_names: Annotated[
        str | None, typer.Option("--label-names", help='JSON, e.g. {"0":"normal"}.')] = None,
    title: TitleOpt = None,
    consent_regime: RegimeOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest this node's partition of a MedMNIST file (every split)."""
    from federation.node.ingest import ingest_medmnist

    with node_errors():
        share = parse_partition(partition)
        scheme = parse_scheme(split_scheme)
        names = _label_names(label_names)
        node = open_home(home)
        with progress_bar(not as_json) as bar:
            report = ingest_medmnist(
                node, file, dataset_id=dataset_id, partition=share, scheme=scheme, seed=seed,
                alpha=alpha, title=title, consent_regime=consent_regime, label_names=names,
                progress=bar,
            )
    report_ingestion(report, as_json)


@ingest_app.command("dicom")
def ingest_dicom_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder of DICOM files (recursive).")],
    dataset_id: DatasetOpt,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV: label and file (relative path) or sop_instance_uid."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Split for rows the CSV gives none (default: per "
                     "person, 70/15/15 train/val/test)."),
    ] = None,
    title: TitleOpt = None,
    consent_regime: RegimeOpt = None,
    id_system: IdSystemOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest DICOM instances: pixels decoded, PatientID replaced by a pseudonym."""
    from federation.node.ingest import ingest_dicom

    _ingest(ingest_dicom, home, as_json, directory, dataset_id=dataset_id, labels_csv=labels,
            split=split, title=title, consent_regime=consent_regime, id_system=id_system)


@ingest_app.command("images")
def ingest_images_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder of PNG / JPEG images.")],
    labels: Annotated[Path, typer.Option("--labels", help="CSV: file, label [, patient_id, "
                                         "split, sex, birth_year, study_date, ...].")],
    dataset_id: DatasetOpt,
    modality: Annotated[
        str | None, typer.Option("--modality", help="DICOM modality code, e.g. CR.")] = None,
    body_site: Annotated[str | None, typer.Option("--body-site", help="e.g. CHEST.")] = None,
    title: TitleOpt = None,
    consent_regime: RegimeOpt = None,
    id_system: IdSystemOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest the images a labels CSV lists (its patient_id column names the person)."""
    from federation.node.ingest import ingest_images

    _ingest(ingest_images, home, as_json, directory, labels_csv=labels, dataset_id=dataset_id,
            modality=modality, body_site=body_site, title=title, consent_regime=consent_regime,
            id_system=id_system)


@ingest_app.command("table")
def ingest_table_cmd(
    file: Annotated[Path, typer.Argument(help="Clinical table, .csv or .parquet.")],
    id_column: Annotated[str, typer.Option("--id-column", help="Column of local patient ids.")],
    dataset_id: DatasetOpt,
    sex_column: Annotated[
        str | None, typer.Option("--sex-column", help="Column with M/F/O.")] = None,
    birth_year_column: Annotated[
        str | None, typer.Option("--birth-year-column", help="Column with birth years.")] = None,
    title: TitleOpt = None,
    consent_regime: RegimeOpt = None,
    id_system: IdSystemOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest clinical variables (one row per subject) into the long clinical table."""
    from federation.node.ingest import ingest_table

    _ingest(ingest_table, home, as_json, file, id_column=id_column, dataset_id=dataset_id,
            sex_column=sex_column, birth_year_column=birth_year_column, title=title,
            consent_regime=consent_regime, id_system=id_system)


def _label_names(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise IngestError(f"--label-names is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IngestError('--label-names must be a JSON object like {"0": "normal"}')
    return {str(k): str(v) for k, v in data.items()}


# -- queries and publication ----------------------------------------------------------------
COHORT_EXAMPLE = '{"dataset_id": "pneumonia", "label": [1], "age_min": 40}'
QUERY_HELP = escape(
    "Count a cohort's consented subjects with disclosure control (<k suppressed, others "
    "rounded to 5).\n\n"
    "COHORT_FILE is a JSON cohort filter (or - for stdin); every field is optional: "
    + ", ".join(CohortFilter.model_fields) + f". Example: {COHORT_EXAMPLE}; clinical "
    'ranges as {"clinical": {"mean radius": {"min": 15}}}. A dataset, variable or filter '
    "this node cannot answer is an error naming what it holds.")


@app.command("query", help=QUERY_HELP)
def query(
    cohort_file: Annotated[str, typer.Argument(help="Cohort filter JSON file, or -.")],
    k: Annotated[
        int | None, typer.Option("--k", min=1, help=escape(
            "Suppression threshold [default: the node's configuration]."))
    ] = None,
    purpose: Annotated[Purpose, typer.Option(
        "--purpose", help="Count only subjects whose consent covers this purpose.")
    ] = Purpose.SCIENTIFIC_RESEARCH,
    consent_filter: ConsentFilterOpt = "snapshot",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from federation.node.consent import consent_filter_for
    from federation.node.query import run_query

    with node_errors():
        if cohort_file == "-":
            text = sys.stdin.read()
        else:
            path = Path(cohort_file)
            if not path.is_file():
                fail(f"cohort file {path} does not exist")
            text = path.read_text()
        try:
            cohort = CohortFilter.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "cohort"
            fail(f"invalid cohort filter ({where}): {first.get('msg')}")
        node = open_home(home)
        result = run_query(node, cohort, k=k, purpose=purpose,
                           consent_filter=consent_filter_for(node, consent_filter))
    if as_json:
        print_json(result)
        return
    table = Table("dataset", "kind", "subjects", "studies", "by label")
    for d in result["datasets"]:
        labels = ", ".join(f"{n}: {v}" for n, v in d.get("by_label", {}).items())
        table.add_row(d["dataset_id"], d["kind"], str(d["subjects"]), str(d.get("studies", "")),
                      labels)
    console.print(table)
    console.print(f"counts below {result['k']} shown as <{result['k']}, others rounded to "
                  f"{result['rounding']}; age = {result['age_reference']}", highlight=False)


@app.command("synthesize")
def synthesize_cmd(
    dataset_id: Annotated[str, typer.Argument(
        help="Dataset: a clinical table, or an imaging dataset (its study metadata).")],
    synthesizer: Annotated[
        str, typer.Option("--synthesizer", help="gaussian_copula, ctgan or tvae.")
    ] = "gaussian_copula",
    rows: Annotated[
        int | None, typer.Option("--rows", help="Synthetic rows [default: as many as real].")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Categorical column for the utility check and the "
                     "inference attack [default: label, diagnosis, outcome... by name]."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Hold-out split and sampling seed.")] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (ctgan, tvae).")] = None,
    consent_filter: ConsentFilterOpt = "snapshot",
    if_cohort_changed: Annotated[bool, typer.Option(
        "--if-cohort-changed", help="Only when the consented cohort differs from the one the "
        "latest run modelled (a consent withdrawn or given, new data); for a daily timer.")
    ] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic table, report fidelity and privacy, and run the release gate.

    Reports are kept in the node home either way; the table and plots are kept as
    releasable (for `tre node publish`) only when every gate check passed.
    """
    from federation.node.synthesis import synthesize, synthesize_if_cohort_changed
    from synthetic.progress import rich_progress

    run = synthesize_if_cohort_changed if if_cohort_changed else synthesize
    options: dict[str, Any] = {"synthesizer": synthesizer, "rows": rows, "target": target,
                               "seed": seed, "epochs": epochs, "consent_filter": consent_filter}
    with node_errors():
        node = open_home(home)
        if as_json or not err_console.is_terminal:  # bars only for a person watching
            outcome = run(node, dataset_id, **options)
        else:
            with rich_progress(console=err_console) as progress:
                outcome = run(node, dataset_id, progress=progress, **options)
    if outcome is None:
        if as_json:
            print_json({"dataset_id": dataset_id, "cohort_changed": False})
        else:
            console.print(f"the consented cohort of {dataset_id} is unchanged since its latest "
                          "synthesis: nothing to do", highlight=False, soft_wrap=True)
        return
    where = outcome.release_dir or outcome.run_dir
    if as_json:
        print_json({"dataset_id": dataset_id, "run_id": outcome.run_id,
                    "passed": outcome.passed, "stored": str(where),
                    "release_files": outcome.files, "report": outcome.result.report()})
    else:
        console.print(outcome.result.summary(), highlight=False, soft_wrap=True)
    if not outcome.passed:
        failed = ", ".join(c.name for c in outcome.result.gate.failed)
        stale = (f"; the release already published was built from the previous cohort: "
                 f"`tre node synthetic withdraw {dataset_id}` withdraws it"
                 if if_cohort_changed else "")
        fail(f"release gate failed ({failed}): nothing stored as releasable, report in "
             f"{outcome.run_dir}. Try fewer rows, coarser variables or another synthesizer "
             f"(not new seeds until one passes){stale}")
    if not as_json:
        console.print(f"stored {outcome.run_id} in {where}; `tre node publish` uploads it",
                      highlight=False, soft_wrap=True)


@app.command("publish")
def publish_cmd(
    dataset_id: Annotated[
        list[str] | None, typer.Option("--dataset-id", help="Only these (repeatable).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the descriptors; send nothing.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the node's datasets in the portal catalogue (suppressed descriptors only),
    with the synthetic version of each dataset whose latest synthesis passed the gate."""
    from federation.node.service import descriptors, publish

    with node_errors():
        node = open_home(home)
        if dry_run:
            print_json(descriptors(node, dataset_id or None))
            return
        results = publish(node, dataset_id or None)
    if as_json:
        print_json(results)
        return
    for r in results:
        console.print(f"published {r['dataset_id']} to {node.config.portal_url}", highlight=False)
        syn = r.get("synthetic") or {}
        if syn.get("published"):
            console.print(f"  synthetic version {syn['run_id']} uploaded ({syn.get('rows')} rows)",
                          highlight=False)
        elif syn.get("reason") and syn["reason"] != "never synthesised":
            console.print(f"  synthetic version not published: {syn['reason']}",
                          highlight=False, soft_wrap=True)
    if not results:
        console.print("no datasets to publish")


@synthetic_app.command("withdraw")
def synthetic_withdraw(
    dataset_id: Annotated[str, typer.Argument(help="Dataset whose release to withdraw.")],
    reason: Annotated[str, typer.Option(
        "--reason", help="Why (researchers see it when a download is refused).")],
    release_id: Annotated[str | None, typer.Option(
        "--release-id", help="The portal's release id [default: the one this node last "
        "published for the dataset].")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw this hospital's synthetic release at the portal: downloads are refused
    from then on. A later `tre node publish` offers a new one as usual."""
    from federation.node.service import withdraw_synthetic

    with node_errors():
        answer = withdraw_synthetic(open_home(home), dataset_id, reason,
                                    release_id=release_id)
    if as_json:
        print_json(answer)
    else:
        console.print(f"synthetic release {answer['release_id']} of {dataset_id} withdrawn",
                      highlight=False)


# -- audit ----------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Walk the hash chain; exit 1 naming the first row that breaks it."""
    with node_errors():
        result = open_home(home).audit.verify()
    if as_json:
        print_json(result.as_dict())
    elif result.ok:
        console.print(f"audit log intact: {result.rows} rows, head {result.head_hash}",
                      highlight=False)
    if not result.ok:
        if not as_json:
            fail(f"audit log broken at row {result.first_bad_seq}: {result.problem}")
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Sign this node's audit chain head with its enrolled key and send it to the portal.
    Run it daily (cron or a systemd timer): a later cut or rewrite of the log then
    contradicts a checkpoint the portal holds (`tre audit verify --checkpoints`)."""
    from federation.node.enrol import send_checkpoint

    with node_errors():
        sent = send_checkpoint(open_home(home))
    if as_json:
        print_json(sent)
    else:
        console.print(f"checkpoint of row {sent['seq']} ({sent['hash'][:12]}…) held by the "
                      "portal", highlight=False)


@audit_app.command("export")
def audit_export(
    home: HomeOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JSONL file [default: stdout].")
    ] = None,
    upload: Annotated[
        bool, typer.Option("--upload", help="Sign the log with the node's enrolled key and "
                           "upload it to the portal for a remote audit (audit rows only).")
    ] = False,
) -> None:
    """Export the log as JSON lines (verifiable offline with `tre audit verify --file`),
    or upload it signed for an auditor (`tre audit verify --portal URL --party ID`)."""
    if upload:
        from federation.node.enrol import upload_audit_export

        if output is not None:
            fail("give --output or --upload, not both: the upload goes to the portal")

        with node_errors():
            sent = upload_audit_export(open_home(home))
        console.print(f"audit log of {sent['party']} uploaded: {sent['row_count']} rows, "
                      f"sha256 {sent['sha256'][:12]}…", highlight=False)
        return
    with node_errors():
        lines = list(open_home(home).audit.export_jsonl())
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err_console.print(f"wrote {len(lines)} entries to {output}", highlight=False)
