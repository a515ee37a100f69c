"""Ingestion throughput vs a plain read of the same files, side by side in one run.

MedMNIST: `tre node ingest medmnist` (partition 1/1: every image) against `np.load`
touching every array; also the 1/3 share a simulated hospital takes. DICOM: the
decodable, distinct instances of pydicom's bundled test files, ingested as a folder,
against `pydicom.dcmread` + `pixel_array` of the same files.

Each measurement ingests into a fresh node home (creating it is not timed) and the
median of --repeats runs is reported. Writes bench/results/ingest.json.

    python bench/ingest.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pydicom  # noqa: E402

from bench.common import write_result  # noqa: E402
from federation.node.home import NodeHome  # noqa: E402
from federation.node.ingest import ingest_dicom, ingest_medmnist  # noqa: E402
from federation.node.ingest.dicom import read_instance  # noqa: E402
from federation.node.settings import StoredNodeSettings  # noqa: E402
from tre.core.settings import CommonSettings  # noqa: E402


def fresh_home(root: Path, name: str) -> NodeHome:
    return NodeHome.create(root / name, StoredNodeSettings(
        hospital_id="bench", portal_url="http://x"),
                           {"keys": []})


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def plain_medmnist(path: Path) -> int:
    with np.load(path) as d:
        return sum(int(d[k].sum()) for k in d.files)  # every array read and touched


def plain_dicom(files: list[Path]) -> int:
    total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            total += int(pydicom.dcmread(f).pixel_array.size)
    return total


def dicom_set(root: Path) -> Path:
    """Copy the decodable bundled instances, one file per SOPInstanceUID, to `root`."""
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm")).parent
    root.mkdir(parents=True)
    seen = set()
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        ds, arr, reason, _ = read_instance(f)
        if reason is None and ds is not None and ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            shutil.copy(f, root / f.name)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    npz = CommonSettings().data_root / "medmnist" / "pneumoniamnist.npz"
    with np.load(npz) as d:
        n_images = sum(len(d[f"{s}_images"]) for s in ("train", "val", "test"))
    pa.array([0])  # pyarrow's one-off initialisation is not part of either side
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dicom_dir = dicom_set(root / "dicom")
        dicom_files = sorted(dicom_dir.iterdir())
        # warm-up: imports, codecs, DuckDB extension loading
        plain_medmnist(npz)
        plain_dicom(dicom_files)
        ingest_medmnist(fresh_home(root, "warm"), npz, dataset_id="w")
        ingest_dicom(fresh_home(root, "warm2"), dicom_dir, dataset_id="w")

        rows: dict[str, list[float]] = {k: [] for k in (
            "mm_plain", "mm_ingest", "mm_ingest_third", "dcm_plain", "dcm_ingest")}
        for r in range(args.repeats):
            rows["mm_plain"].append(timed(lambda: plain_medmnist(npz)))
            home = fresh_home(root, f"m{r}")
            rows["mm_ingest"].append(timed(lambda h=home: ingest_medmnist(
                h, npz, dataset_id="pneumonia")))
            home = fresh_home(root, f"t{r}")
            rows["mm_ingest_third"].append(timed(lambda h=home: ingest_medmnist(
                h, npz, dataset_id="pneumonia", partition=(1, 3), scheme="label-skew")))
            rows["dcm_plain"].append(timed(lambda: plain_dicom(dicom_files)))
            home = fresh_home(root, f"d{r}")
            report = None

            def run_dicom(h=home):
                nonlocal report
                report = ingest_dicom(h, dicom_dir, dataset_id="scans")

            rows["dcm_ingest"].append(timed(run_dicom))
            assert report is not None and report.ingested == len(dicom_files), report.skipped
    med = {k: statistics.median(v) for k, v in rows.items()}
    n_dicom = len(dicom_files)
    result = {
        "versions": {"numpy": np.__version__, "duckdb": duckdb.__version__,
                     "pydicom": pydicom.__version__, "pyarrow": pa.__version__},
        "repeats": args.repeats,
        "medmnist": {
            "file": npz.name,
            "images": n_images,
            "plain_read_s": med["mm_plain"],
            "ingest_s": med["mm_ingest"],
            "plain_images_per_s": n_images / med["mm_plain"],
            "ingest_images_per_s": n_images / med["mm_ingest"],
            "ratio_ingest_to_plain": med["mm_ingest"] / med["mm_plain"],
            "partition_1_of_3_ingest_s": med["mm_ingest_third"],
            "ratio_partition_1_of_3_to_plain": med["mm_ingest_third"] / med["mm_plain"],
            "runs_s": {k: rows[k] for k in ("mm_plain", "mm_ingest", "mm_ingest_third")},
        },
        "dicom": {
            "files": n_dicom,
            "source": "pydicom bundled test files: decodable, one per SOPInstanceUID",
            "plain_read_s": med["dcm_plain"],
            "ingest_s": med["dcm_ingest"],
            "plain_images_per_s": n_dicom / med["dcm_plain"],
            "ingest_images_per_s": n_dicom / med["dcm_ingest"],
            "ratio_ingest_to_plain": med["dcm_ingest"] / med["dcm_plain"],
            "runs_s": {k: rows[k] for k in ("dcm_plain", "dcm_ingest")},
        },
    }
    path = write_result("ingest", result)
    date = json.loads(path.read_text())["date"][:10]
    m, dc = result["medmnist"], result["dicom"]
    print(f"| ingest | MedMNIST {m['images']} images: {m['ingest_images_per_s']:,.0f} img/s vs "
          f"np.load {m['plain_images_per_s']:,.0f} img/s (×{m['ratio_ingest_to_plain']:.2f} "
          f"time); DICOM {dc['files']} files: {dc['ingest_images_per_s']:,.0f} img/s vs "
          f"dcmread+pixel_array {dc['plain_images_per_s']:,.0f} img/s "
          f"(×{dc['ratio_ingest_to_plain']:.2f}) | `python bench/ingest.py` | "
          f"{date} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
