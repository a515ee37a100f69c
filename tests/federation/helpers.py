"""Test helpers: node homes holding a label-skewed partition of the real PneumoniaMNIST
(or a share of scikit-learn's breast-cancer table), and permits signed by the portal's
real key ring class."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from access_control.permits import PermitKeyRing
from federation.launch.fab import fab_hash
from federation.node.home import NodeHome
from federation.node.settings import StoredNodeSettings
from tre.core.schemas import PermitClaims, PermitDataset, Purpose, RunTicket
from tre.core.settings import default_data_root
from tre.portal.services import airlock

NPZ = default_data_root() / "medmnist" / "pneumoniamnist.npz"
BREAST_LABEL = "diagnosis=benign|malignant"
"""The breast-cancer table's label as a run names it: class 1 is malignant."""
DIABETES_LABEL = "target>140"
"""The diabetes table's outcome as a protocol defines it: disease progression a year
after baseline above 140 (about the median of its 25-346) is class 1."""
TABLE_LABELS = {"breast-cancer": BREAST_LABEL, "diabetes": DIABETES_LABEL}
"""scikit-learn's tables the tests and `bench/utility.py --table` train on, and their labels."""
TABLE_TITLES = {"breast-cancer": "Wisconsin breast cancer (scikit-learn)",
                "diabetes": "Diabetes progression (scikit-learn)"}


def label_skew_indices(labels: np.ndarray, index: int, count: int, seed: int,
                       major: float = 0.6) -> np.ndarray:
    """Indices of partition `index` of `count`: class c goes mostly (share `major`) to
    partition c mod count, the rest evenly to the others. Disjoint, covering, seeded."""
    rng = np.random.default_rng(seed)
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        probs = np.full(count, (1 - major) / max(count - 1, 1))
        probs[int(c) % count] = major if count > 1 else 1.0
        owner[idx] = rng.choice(count, size=len(idx), p=probs)
    return np.flatnonzero(owner == index)


def populate(home: NodeHome, dataset_id: str, index: int, count: int, *, seed: int = 7,
             regime: str = "opt-out", limit: int | None = None) -> dict[str, int]:
    """Insert partition index/count of every split through the common data model."""
    data = np.load(NPZ)
    counts: dict[str, int] = {}
    rows_person, rows_image, rows_study = [], [], []
    for split in ("train", "val", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        idx = label_skew_indices(labels, index, count, seed)
        if limit is not None:
            idx = idx[:limit]
        counts[split] = len(idx)
        for i in idx:
            local = f"{split}-{i}"
            ps = home.pseudonymise(local)
            ref = f"img-{dataset_id}-{local}"
            img = images[i]
            rows_person.append((ps, None, None))
            rows_image.append((ref, img.shape[0], img.shape[1], 1, "uint8",
                               np.ascontiguousarray(img).tobytes()))
            rows_study.append((f"st-{dataset_id}-{local}", dataset_id, ps, "XR", "chest",
                               int(labels[i]), split, ref))
    person = pa.table({k: v for k, v in zip(["pseudonym", "sex", "birth_year"],
                                            map(list, zip(*rows_person, strict=True)),
                                            strict=True)})
    image = pa.table({
        "image_ref": [r[0] for r in rows_image], "height": [r[1] for r in rows_image],
        "width": [r[2] for r in rows_image], "channels": [r[3] for r in rows_image],
        "dtype": [r[4] for r in rows_image],
        "pixels": pa.array([r[5] for r in rows_image], type=pa.binary()),
    })
    study = pa.table({k: [r[j] for r in rows_study] for j, k in enumerate(
        ["study_id", "dataset_id", "pseudonym", "modality", "body_site", "label", "split",
         "image_ref"])})
    with home.db.transaction() as cur:
        cur.execute(
            "INSERT INTO dataset (dataset_id, kind, title, source, consent_regime)"
            " VALUES (?, 'imaging', ?, 'pneumoniamnist.npz', ?)",
            [dataset_id, f"PneumoniaMNIST partition {index}/{count}", regime],
        )
        cur.register("p_src", person)
        cur.execute("INSERT INTO person SELECT pseudonym, sex::VARCHAR, birth_year::INTEGER"
                    " FROM p_src")
        cur.register("i_src", image)
        cur.execute("INSERT INTO image (image_ref, height, width, channels, dtype, pixels)"
                    " SELECT * FROM i_src")
        cur.register("s_src", study)
        cur.execute("INSERT INTO imaging_study (study_id, dataset_id, pseudonym, modality,"
                    " body_site, label, split, image_ref) SELECT * FROM s_src")
    return counts


def sklearn_table(name: str) -> pd.DataFrame:
    """scikit-learn's `breast-cancer` or `diabetes` table as a hospital holds it: a local
    id `mrn` first; the breast-cancer diagnosis as text, the diabetes table in its
    original units with its continuous outcome `target` (binarised by the run's label)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    if name == "breast-cancer":
        frame, prefix = load_breast_cancer(as_frame=True).frame, "BC"
        frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    elif name == "diabetes":
        frame, prefix = load_diabetes(as_frame=True, scaled=False).frame, "DB"
    else:
        raise ValueError(f"no scikit-learn table {name!r}: one of {', '.join(TABLE_LABELS)}")
    frame.insert(0, "mrn", [f"{prefix}{i:04d}" for i in range(len(frame))])
    return frame


def table_features(name: str) -> str:
    """A scikit-learn table's variables but its id and label, as a run's `features`."""
    from federation.launch.columns import parse_label

    label = parse_label(TABLE_LABELS[name]).name
    return ",".join(c for c in sklearn_table(name).columns if c not in ("mrn", label))


def breast_features() -> str:
    """The breast-cancer table's 30 numeric variables, as a run's `features`."""
    return table_features("breast-cancer")


def populate_table(home: NodeHome, dataset_id: str, index: int, count: int, *,
                   seed: int = 7, table: str = "breast-cancer") -> dict[str, int]:
    """Ingest share `index` of `count` (a seeded random partition) of a scikit-learn
    table (`sklearn_table`) through the node's table ingestion; returns the labelled
    subjects per split under the table's label (`TABLE_LABELS`)."""
    import tempfile

    from federation.launch.columns import parse_label
    from federation.node.data import table_split_pseudonyms
    from federation.node.ingest import ingest_table

    frame = sklearn_table(table)
    owner = np.random.default_rng(seed).integers(0, count, len(frame))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{dataset_id}-{index}.csv"
        frame[owner == index].to_csv(path, index=False)
        ingest_table(home, path, id_column="mrn", dataset_id=dataset_id,
                     title=TABLE_TITLES[table])
    label = parse_label(TABLE_LABELS[table])
    return {split: len(table_split_pseudonyms(home.db, dataset_id, split, label))
            for split in ("train", "val", "test")}


def make_home(root: Path, hospital: str, ring: PermitKeyRing, *, portal: str = "http://127.0.0.1:9",
              ) -> NodeHome:
    return NodeHome.create(root / hospital, StoredNodeSettings(
        hospital_id=hospital, portal_url=portal),
                           ring.public_jwks())


def claims(datasets: list[tuple[str, str]], *, eps: float = 4.0, delta: float = 1e-5,
           app_hash: str | None = None, nbf: int | None = None, exp: int | None = None,
           **extra: Any) -> PermitClaims:
    now = int(time.time())
    return PermitClaims(
        iss="tre-portal-test", permit_id=f"pmt_{uuid.uuid4().hex[:10]}",
        request_id="req_test", sub="researcher-1", purpose=Purpose.AI_TRAINING,
        datasets=[PermitDataset(node_id=h, dataset_id=d, epsilon_cap=eps, delta_cap=delta)
                  for h, d in datasets],
        app_id="tre/tre-train", app_hash=app_hash or fab_hash(),
        iat=now, nbf=now - 60 if nbf is None else nbf, exp=now + 3600 if exp is None else exp,
        **extra,
    )


def run_ticket(ring: PermitKeyRing, token: str, run_id: str,
               hospitals: list[str] | None = None) -> str:
    """The portal's run ticket binding permit `token` to run `run_id` (flwr-<id> on a node)."""
    from access_control.permits import unverified_claims

    c = unverified_claims(token)
    now = int(time.time())
    return ring.sign_run_ticket(RunTicket(
        iss="tre-portal-test", ticket_id=f"rtk_{uuid.uuid4().hex[:10]}", run=run_id,
        permit_id=c["permit_id"], app_hash=c["app_hash"], rounds=5,
        hospitals=hospitals or sorted({d["node_id"] for d in c["datasets"]}),
        iat=now, nbf=now - 60, exp=now + 3600))


def tickets_for(ring: PermitKeyRing, token: str):  # noqa: ANN201 - Callable[[str], str]
    """A node's run-ticket source for tests that drive the tasks directly: the portal's
    ticket for whichever run id the node asks about, under permit `token`."""
    return lambda run_id: run_ticket(ring, token, run_id)


class Portal:
    """The portal's revocation list and run tickets, served over real HTTP for the node."""

    def __init__(self) -> None:
        self.revoked: list[str] = []
        self.tickets: dict[int, str] = {}  # Flower run id -> signed run ticket
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                parts = self.path.strip("/").split("/")
                if parts[:3] == ["v1", "runs", "flower"] and parts[-1] == "ticket":
                    ticket = outer.tickets.get(int(parts[3]))
                    if ticket is None:
                        self.send_error(404)
                        return
                    body = json.dumps({"ticket": ticket}).encode()
                elif self.path == "/v1/permits/revoked":
                    body = json.dumps({"revoked": outer.revoked}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def assert_only_disclosed(run: dict) -> None:
    """Every number of a run (its report, or the portal's view of it), classified as
    the airlock does: no count below 10 anywhere, and no hospital's own loss."""
    small = [(p, v) for p, v, kind in airlock.classify("run", run)
             if kind == "count" and 0 < v < 10]
    assert not small, small
    for rnd in run["rounds"]:
        for node in rnd["nodes"]:
            assert not [key for key in node if "loss" in key], node
