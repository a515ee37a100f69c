"""Dataset descriptors: what the catalogue may know about a node's dataset.

`dataset_facts` reads exact aggregates from the store (node-internal);
`build_descriptor` is pure and turns them into the published form: names, types
and disclosed counts only, never a row-level value. Every cell counts people
(distinct subjects), not studies: ten studies of three patients are a cell of three.
Categories (modalities, body sites, image shapes) with fewer than k subjects are left
out altogether, since even "<10" would reveal that such a study exists; declared
labels are always listed, their small cells shown as "<k". The one study count
(`counts.studies`) is shown only where its subjects could be.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tre.core import disclosure
from tre.core.db import Database

SCHEMA = "tre.dataset-descriptor/1"


@dataclass(frozen=True)
class Cell:
    """An exact count and the cell key of the records behind it (node-internal)."""

    count: int
    key: int = 0


@dataclass
class DatasetFacts:
    dataset_id: str
    kind: str
    title: str
    consent_regime: str
    label_names: dict[str, str]
    subjects: Cell
    studies: Cell | None = None
    splits: dict[str, dict[str, Cell]] = field(default_factory=dict)  # split -> label -> cell
    split_totals: dict[str, Cell] = field(default_factory=dict)
    modalities: dict[str, Cell] = field(default_factory=dict)
    body_sites: dict[str, Cell] = field(default_factory=dict)
    image_shapes: list[tuple[dict[str, Any], Cell]] = field(default_factory=list)
    clinical_variables: list[tuple[str, str]] = field(default_factory=list)


def _cell(secret: bytes, pseudonyms: list[str]) -> Cell:
    """The cell of the people behind some records (each subject once)."""
    people = sorted(set(pseudonyms))
    return Cell(len(people), disclosure.cell_key(disclosure.record_keys(secret, people)))


def dataset_facts(db: Database, dataset_id: str, *, secret: bytes) -> DatasetFacts:
    """Exact aggregates of one dataset, with cell keys for disclosure."""
    with db.reader() as cur:
        rows = cur.execute(
            "SELECT kind, title, consent_regime, label_names FROM dataset WHERE dataset_id = ?",
            [dataset_id],
        ).fetchall()
        if not rows:
            raise LookupError(f"no dataset {dataset_id}")
        kind, title, regime, names_json = rows[0]
        names = json.loads(names_json or "{}")
        if kind == "clinical":
            subjects = [r[0] for r in cur.execute(
                "SELECT DISTINCT pseudonym FROM clinical WHERE dataset_id = ?", [dataset_id]
            ).fetchall()]
            variables = cur.execute(
                "SELECT variable, kind FROM clinical_variable WHERE dataset_id = ?"
                " ORDER BY position", [dataset_id],
            ).fetchall()
            return DatasetFacts(dataset_id, kind, title, regime, names, _cell(secret, subjects),
                                clinical_variables=[(v, t) for v, t in variables])
        studies = cur.execute(
            "SELECT s.pseudonym, s.split, s.label, s.modality, s.body_site, i.height, i.width,"
            " i.channels, coalesce(i.frames, 1), i.dtype FROM imaging_study s"
            " JOIN image i ON i.image_ref = s.image_ref WHERE s.dataset_id = ?", [dataset_id],
        ).fetchall()
    by_split: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    split_all: dict[str, list[str]] = defaultdict(list)
    modalities: dict[str, list[str]] = defaultdict(list)
    sites: dict[str, list[str]] = defaultdict(list)
    shapes: dict[tuple, list[str]] = defaultdict(list)
    for p, split, label, modality, site, h, w, c, f, dtype in studies:
        split_name = split or "unsplit"
        label_name = "unlabelled" if label is None else names.get(str(label), str(label))
        by_split[split_name][label_name].append(p)
        split_all[split_name].append(p)
        if modality:
            modalities[modality].append(p)
        if site:
            sites[site].append(p)
        shapes[(h, w, c, f, dtype)].append(p)
    for split_name in by_split:  # every declared label gets a cell in every split
        for name in names.values():
            by_split[split_name].setdefault(name, [])
    return DatasetFacts(
        dataset_id, kind, title, regime, names,
        subjects=_cell(secret, [r[0] for r in studies]),
        studies=Cell(len(studies), disclosure.cell_key(
            disclosure.record_keys(secret, [r[0] for r in studies]))),
        splits={s: {lab: _cell(secret, ps) for lab, ps in d.items()} for s, d in by_split.items()},
        split_totals={s: _cell(secret, ps) for s, ps in split_all.items()},
        modalities={m: _cell(secret, ps) for m, ps in modalities.items()},
        body_sites={b: _cell(secret, ps) for b, ps in sites.items()},
        image_shapes=[
            ({"height": h, "width": w, "channels": c, "frames": f, "dtype": dt}, _cell(secret, ps))
            for (h, w, c, f, dt), ps in sorted(shapes.items(), key=lambda kv: -len(kv[1]))
        ],
    )


def build_descriptor(
    facts: DatasetFacts,
    *,
    hospital_id: str,
    k: int = disclosure.DEFAULT_K,
    base: int = disclosure.DEFAULT_BASE,
) -> dict[str, Any]:
    """The published descriptor of one dataset (pure: same facts, same descriptor)."""

    def d(cell: Cell) -> disclosure.Disclosed:
        return disclosure.disclose(cell.count, k=k, base=base, key=cell.key)

    def visible(cells: dict[str, Cell]) -> dict[str, disclosure.Disclosed]:
        shown = {name: d(c) for name, c in sorted(cells.items())}
        return {name: v for name, v in shown.items() if not disclosure.is_suppressed(v)}

    out: dict[str, Any] = {
        "schema": SCHEMA,
        "hospital_id": hospital_id,
        "dataset_id": facts.dataset_id,
        "kind": facts.kind,
        "title": facts.title,
        "consent_regime": facts.consent_regime,
        "counts": {"subjects": d(facts.subjects)},
        "disclosure": {
            "k": k,
            "rounding": base,
            "method": "counts below k shown as <k; others rounded to the nearest "
                      f"{base} after a cell-key perturbation of at most "
                      f"±{disclosure.DEFAULT_MAX_NOISE}; categories below k omitted",
        },
    }
    if facts.kind == "imaging":
        out["label_names"] = dict(sorted(facts.label_names.items()))
        if facts.studies is not None:
            subjects = out["counts"]["subjects"]
            out["counts"]["studies"] = subjects if disclosure.is_suppressed(subjects) \
                else d(facts.studies)
        out["splits"] = {
            split: {
                "total": d(facts.split_totals.get(split, Cell(0))),
                "by_label": {name: d(c) for name, c in sorted(labels.items())},
            }
            for split, labels in sorted(facts.splits.items())
        }
        out["modalities"] = visible(facts.modalities)
        out["body_sites"] = visible(facts.body_sites)
        out["image_shapes"] = [
            {**shape, "subjects": d(c)}
            for shape, c in facts.image_shapes
            if not disclosure.is_suppressed(d(c))
        ]
    else:
        out["clinical_variables"] = [{"name": n, "type": t} for n, t in facts.clinical_variables]
    return out


def publication_body(descriptor: dict[str, Any]) -> dict[str, Any]:
    """The request body of `POST /v1/catalogue/datasets`."""
    return {
        "hospital_id": descriptor["hospital_id"],
        "dataset_id": descriptor["dataset_id"],
        "kind": descriptor["kind"],
        "title": descriptor["title"],
        "descriptor": descriptor,
    }
