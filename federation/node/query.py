"""Cohort counts over the common model, with disclosure control (`tre node query`,
and the answer a node gives to a feasibility request).

A cohort is a set of subjects. Person-level conditions (sex, age, clinical variable
ranges) apply to the subject; study-level conditions (modality, body site, label,
study date) require a matching imaging study. Counts per dataset: an imaging
dataset counts the subjects (and studies) with a matching study in it, by label; a
clinical dataset counts its subjects who meet the person-level conditions and, if
any study-level condition is given, have a matching study in some imaging dataset.

Age is computed as the year of the study date minus the birth year; without a
study date (and for clinical datasets) the current year is used. Subjects whose
birth year is unknown never match an age range. Modality, body site and sex are
compared case-insensitively. A clinical range matches numeric values only.

Every count goes through the node's gate (`count`): the operator's (`run_query`, with
the operator's own credential) as the researcher's feasibility count (with the portal's
ticket). The gate applies the consent filter for the count's purpose before anything is
counted and audits the query (or its refusal). Only disclosed values leave `count` (see
`disclosure`); the exact member sets stay inside this module.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from federation.node.authorisation import OperatorUse, QueryTicket
from federation.node.consent import ConsentFilter, RegimeConsentFilter
from federation.node.errors import DataError
from federation.node.gate import Action, Gate
from federation.node.home import NodeHome
from tre.core import disclosure
from tre.core.db import Database
from tre.core.disclosure import DISCLOSURE_KEY_PURPOSE, disclosed_count
from tre.core.schemas import CohortFilter, Purpose

AGE_REFERENCE = "year of study date (else current year) minus birth year"


@dataclass
class DatasetMembers:
    """Exact members of a cohort in one dataset (never leaves the node)."""

    dataset_id: str
    kind: str
    title: str
    label_names: dict[str, str]
    known_labels: set[int | None] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    studies: set[tuple[str, str]] = field(default_factory=set)  # (study_id, pseudonym)
    by_label: dict[int | None, set[str]] = field(default_factory=lambda: defaultdict(set))

    def restricted(self, keep: set[str]) -> DatasetMembers:
        """The same members, only the subjects in `keep` (consent applied before a count
        is disclosed: it must not count a subject that a run could not use)."""
        by_label: dict[int | None, set[str]] = defaultdict(set)
        for label, subjects in self.by_label.items():
            by_label[label] = subjects & keep
        return replace(self, subjects=self.subjects & keep,
                       studies={s for s in self.studies if s[1] in keep},
                       known_labels=set(self.known_labels), by_label=by_label)


def _study_conditions(c: CohortFilter, today: date) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if c.modality:
        where.append("upper(s.modality) IN (SELECT upper(unnest(?::VARCHAR[])))")
        params.append(list(c.modality))
    if c.body_site:
        where.append("upper(s.body_site) IN (SELECT upper(unnest(?::VARCHAR[])))")
        params.append(list(c.body_site))
    if c.label:
        where.append("s.label IN (SELECT unnest(?::INTEGER[]))")
        params.append(list(c.label))
    if c.study_date_from:
        where.append("s.study_date >= ?")
        params.append(c.study_date_from)
    if c.study_date_to:
        where.append("s.study_date <= ?")
        params.append(c.study_date_to)
    if c.age_min is not None:
        where.append("coalesce(year(s.study_date), ?) - p.birth_year >= ?")
        params += [today.year, c.age_min]
    if c.age_max is not None:
        where.append("coalesce(year(s.study_date), ?) - p.birth_year <= ?")
        params += [today.year, c.age_max]
    return where, params


def _has_study_conditions(c: CohortFilter) -> bool:
    return bool(c.modality or c.body_site or c.label or c.study_date_from or c.study_date_to)


def _person_conditions(c: CohortFilter, *, age_here: bool, today: date) -> tuple[list[str], list]:
    where: list[str] = []
    params: list[Any] = []
    if c.sex:
        where.append("upper(p.sex) IN (SELECT upper(unnest(?::VARCHAR[])))")
        params.append(list(c.sex))
    for variable, rng in sorted(c.clinical.items()):
        cond = ["cv.pseudonym = p.pseudonym", "cv.variable = ?", "cv.value_num IS NOT NULL"]
        params.append(variable)
        if rng.min is not None:
            cond.append("cv.value_num >= ?")
            params.append(rng.min)
        if rng.max is not None:
            cond.append("cv.value_num <= ?")
            params.append(rng.max)
        where.append(f"EXISTS (SELECT 1 FROM clinical cv WHERE {' AND '.join(cond)})")
    if age_here:
        if c.age_min is not None:
            where.append("? - p.birth_year >= ?")
            params += [today.year, c.age_min]
        if c.age_max is not None:
            where.append("? - p.birth_year <= ?")
            params += [today.year, c.age_max]
    return where, params


def cohort_members(
    db: Database, cohort: CohortFilter, *, today: date | None = None
) -> dict[str, DatasetMembers]:
    """Exact members per dataset. Internal: callers must disclose before showing."""
    today = today or date.today()
    out: dict[str, DatasetMembers] = {}
    with db.reader() as cur:
        sql = "SELECT dataset_id, kind, title, label_names FROM dataset"
        params: list[Any] = []
        if cohort.dataset_id:
            sql += " WHERE dataset_id = ?"
            params.append(cohort.dataset_id)
        for ds_id, kind, title, names in cur.execute(sql + " ORDER BY 1", params).fetchall():
            out[ds_id] = DatasetMembers(ds_id, kind, title, json.loads(names or "{}"))
        if not out:
            return out
        for ds_id, label in cur.execute(
            "SELECT DISTINCT dataset_id, label FROM imaging_study"
            " WHERE dataset_id IN (SELECT unnest(?::VARCHAR[]))", [list(out)],
        ).fetchall():
            if ds_id in out:
                out[ds_id].known_labels.add(label)

        imaging_ids = [d for d, m in out.items() if m.kind == "imaging"]
        s_where, s_params = _study_conditions(cohort, today)
        p_where, p_params = _person_conditions(cohort, age_here=False, today=today)
        where = ["s.dataset_id IN (SELECT unnest(?::VARCHAR[]))", *s_where, *p_where]
        rows = cur.execute(
            "SELECT s.dataset_id, s.label, s.pseudonym, s.study_id FROM imaging_study s"
            " JOIN person p ON p.pseudonym = s.pseudonym WHERE " + " AND ".join(where),
            [imaging_ids, *s_params, *p_params],
        ).fetchall() if imaging_ids else []
        for ds_id, label, pseudonym, study_id in rows:
            m = out[ds_id]
            m.subjects.add(pseudonym)
            m.studies.add((study_id, pseudonym))
            m.by_label[label].add(pseudonym)

        clinical_ids = [d for d, m in out.items() if m.kind == "clinical"]
        if clinical_ids:
            p_where, p_params = _person_conditions(cohort, age_here=True, today=today)
            where = p_where or ["TRUE"]
            params = [clinical_ids, *p_params]
            if _has_study_conditions(cohort):
                s_where, s_params = _study_conditions(cohort, today)
                where.append(
                    "EXISTS (SELECT 1 FROM imaging_study s WHERE s.pseudonym = p.pseudonym"
                    + "".join(f" AND {w}" for w in s_where) + ")"
                )
                params += s_params
            for ds_id, pseudonym in cur.execute(
                "SELECT c.dataset_id, c.pseudonym FROM (SELECT DISTINCT dataset_id, pseudonym"
                " FROM clinical WHERE dataset_id IN (SELECT unnest(?::VARCHAR[]))) c"
                " JOIN person p ON p.pseudonym = c.pseudonym WHERE " + " AND ".join(where),
                params,
            ).fetchall():
                out[ds_id].subjects.add(pseudonym)
    return out


def check_cohort(db: Database, cohort: CohortFilter) -> None:
    """An operator's cohort must ask about what this node holds: a dataset it does not
    hold, a clinical variable none of its datasets has, a label filter with no imaging
    dataset, or an age filter with no birth year recorded would otherwise answer `<10`
    or nothing, as if the cohort were merely small. Raises DataError naming what is
    known here."""
    with db.reader() as cur:
        held = dict(cur.execute("SELECT dataset_id, kind FROM dataset ORDER BY 1").fetchall())
        if cohort.dataset_id and cohort.dataset_id not in held:
            raise DataError(f"dataset {cohort.dataset_id!r} is not held here; held: "
                            f"{', '.join(held) or 'none'}")
        scope = [cohort.dataset_id] if cohort.dataset_id else list(held)
        if cohort.clinical:
            known = sorted(r[0] for r in cur.execute(
                "SELECT DISTINCT variable FROM clinical_variable"
                " WHERE dataset_id IN (SELECT unnest(?::VARCHAR[]))", [scope]).fetchall())
            unknown = sorted(set(cohort.clinical) - set(known))
            if unknown:
                raise DataError(f"no clinical variable {', '.join(map(repr, unknown))} in "
                                f"{', '.join(scope) or 'any dataset'}; known: "
                                f"{', '.join(known) or 'none'}")
        if cohort.label and not any(held[d] == "imaging" for d in scope):
            where = ", ".join(scope) or "this node"
            raise DataError(f"label filters imaging studies, and {where} holds none; "
                            "filter clinical values with 'clinical'")
        if (cohort.age_min is not None or cohort.age_max is not None) and not cur.execute(
                "SELECT count(*) FROM person p WHERE p.birth_year IS NOT NULL AND ("
                " p.pseudonym IN (SELECT pseudonym FROM imaging_study"
                "  WHERE dataset_id IN (SELECT unnest(?::VARCHAR[])))"
                " OR p.pseudonym IN (SELECT pseudonym FROM clinical"
                "  WHERE dataset_id IN (SELECT unnest(?::VARCHAR[]))))",
                [scope, scope]).fetchone()[0]:
            where = ", ".join(scope) or "any dataset"
            raise DataError(f"no birth year is recorded for {where}: an age filter "
                            "cannot be answered")


def _label_name(label: int | None, names: dict[str, str]) -> str:
    if label is None:
        return "unlabelled"
    return names.get(str(label), str(label))


def disclose_members(
    members: dict[str, DatasetMembers],
    *,
    secret: bytes,
    k: int = disclosure.DEFAULT_K,
    base: int = disclosure.DEFAULT_BASE,
) -> list[dict[str, Any]]:
    """Disclosed counts per dataset. Every known label of a dataset gets a cell, so an
    empty or small cell is hidden as "<k" rather than betrayed by its absence."""

    def cell(pseudonyms: list[str] | set[str]) -> disclosure.Disclosed:
        # Studies are keyed by their subject's key too: where every subject has one
        # study, the study and subject counts then get the same perturbation instead
        # of two independent looks at one number.
        return disclosed_count(pseudonyms, secret=secret, k=k, base=base)

    out = []
    for m in members.values():
        entry: dict[str, Any] = {"dataset_id": m.dataset_id, "kind": m.kind, "title": m.title,
                                 "subjects": cell(m.subjects)}
        if m.kind == "imaging":
            # a study count is published only where its subjects could be: ten studies
            # of three patients are a cell of three people
            entry["studies"] = entry["subjects"] if disclosure.is_suppressed(
                entry["subjects"]) else cell([p for _, p in m.studies])
            named = {int(x) for x in m.label_names if x.lstrip("-").isdigit()}
            labels = set(m.known_labels) | named
            entry["by_label"] = {
                _label_name(lab, m.label_names): cell(m.by_label.get(lab, set()))
                for lab in sorted(labels, key=lambda v: (v is None, v if v is not None else 0))
            }
        out.append(entry)
    return out


def count_cohort(home: NodeHome, cohort: CohortFilter, credential: OperatorUse | QueryTicket,
                 *, purpose: Purpose, consent_filter: ConsentFilter, k: int | None = None,
                 today: date | None = None) -> dict[str, Any]:
    """Disclosed counts of the cohort's subjects whose consent covers `purpose`, through
    the node's gate with `credential`: consent is applied before anything is disclosed
    (a count must not include a subject that a run for `purpose` could not use), and
    the gate audits the query, or its refusal. `k`: the node's by default."""
    k = k if k is not None else home.config.suppression_k
    members: dict[str, DatasetMembers] = {}

    def candidates(home: NodeHome, grant: object) -> dict[str, list[str]]:
        members.update(cohort_members(home.db, cohort, today=today))
        return {ds_id: sorted(m.subjects) for ds_id, m in members.items()}

    with Gate(home, consent_filter).open(Action("cohort count", "cohort", candidates),
                                         purpose, cohort.dataset_id, credential) as consented:
        kept = {ds_id: m.restricted(consented.allowed(ds_id)) for ds_id, m in members.items()}
        datasets = disclose_members(kept, secret=home.derive_key(DISCLOSURE_KEY_PURPOSE), k=k)
        consented.read(sum(len(m.subjects) for m in kept.values()), k=k,
                       datasets=[d["dataset_id"] for d in datasets])
    return {"hospital_id": home.config.hospital_id, "k": k,
            "rounding": disclosure.DEFAULT_BASE, "age_reference": AGE_REFERENCE,
            "datasets": datasets}


def run_query(home: NodeHome, cohort: CohortFilter, *, k: int | None = None,
              purpose: Purpose = Purpose.SCIENTIFIC_RESEARCH,
              consent_filter: ConsentFilter | None = None,
              today: date | None = None) -> dict[str, Any]:
    """The operator's own count (`tre node query`): checked against what this node holds
    before anything is asked, then `count_cohort` with the operator's credential. The
    default filter is the datasets' regimes with no consent records (the gate's); the
    CLI passes the node's snapshot filter."""
    if k is not None and k < 1:
        raise ValueError("k must be at least 1")
    check_cohort(home.db, cohort)
    return count_cohort(home, cohort, OperatorUse("query", cohort), purpose=purpose,
                        consent_filter=consent_filter or RegimeConsentFilter(), k=k,
                        today=today)
