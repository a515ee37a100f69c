"""The catalogue: what each hospital holds, as descriptors with suppressed counts only,
each with the summary of its newest synthetic release (published or withdrawn).

Its counts are also all the portal knows of a dataset's size: a SecAgg+ run's weight
bound is derived from them (`secagg_max_weight`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from access_control.tokens import Principal
from tre.core import disclosure
from tre.core.audit import AuditAction
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Conflict, Forbidden, Invalid, NotFound
from tre.portal.schemas import DatasetDescriptorIn
from tre.portal.services import synthetic
from tre.portal.store import catalogue as store


def _counts(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in {"count", "n", "records", "subjects"} and isinstance(item, int | float):
                yield sub, item
            elif key == "counts" and isinstance(item, dict):
                for label, count in item.items():
                    if isinstance(count, int | float):
                        yield f"{sub}.{label}", count
                    else:
                        yield from _counts(count, f"{sub}.{label}")
            else:
                yield from _counts(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _counts(item, f"{path}[{i}]")


def check_suppressed(descriptor: dict[str, Any], k: int) -> None:
    """Defence in depth: refuse a descriptor carrying an exact count below k."""
    for path, count in _counts(descriptor, "descriptor"):
        if 0 < count < k or (isinstance(count, float) and not count.is_integer()):
            raise Invalid(f"{path} is {count}: counts below {k} must be published as '<{k}'")


def publish(portal: Portal, principal: Principal, body: DatasetDescriptorIn) -> dict[str, Any]:
    if principal.hospital_id != body.hospital_id:
        raise Forbidden(
            f"this node's service account belongs to {principal.hospital_id!r}: it cannot "
            f"publish for {body.hospital_id!r}"
        )
    check_suppressed(body.descriptor, portal.settings.suppression_k)
    key = f"{body.hospital_id}/{body.dataset_id}"
    with portal.db.transaction() as cur:
        store.upsert_dataset(cur, body.hospital_id, body.dataset_id, body.kind, body.title,
                             body.descriptor, utcnow())
        portal.audit.append(cur, actor=principal.username, action=AuditAction.CATALOGUE_PUBLISH,
                            object_type="dataset", object_id=key,
                            details={"kind": body.kind, "title": body.title})
        return store.get_dataset(cur, body.hospital_id, body.dataset_id)


def list_datasets(portal: Portal) -> list[dict[str, Any]]:
    with portal.db.reader() as cur:
        datasets = store.list_datasets(cur)
    releases = synthetic.catalogue_summaries(portal)
    return [{**d, "synthetic": releases.get((d["hospital_id"], d["dataset_id"]))}
            for d in datasets]


def get_dataset(portal: Portal, hospital_id: str, dataset_id: str) -> dict[str, Any]:
    with portal.db.reader() as cur:
        found = store.get_dataset(cur, hospital_id, dataset_id)
    if found is None:
        raise NotFound(f"dataset {hospital_id}/{dataset_id} is not in the catalogue")
    return {**found, "synthetic": synthetic.latest_summary(portal, hospital_id, dataset_id)}


def weight_bound(descriptor: dict[str, Any]) -> int | None:
    """The largest training count a node can disclose for this published dataset (its
    FedAvg weight), or None when the descriptor shows no subject count.

    Nodes train on one record per person and weigh an update by the disclosed count of
    its consented training subjects, so the dataset's subject count bounds it once the
    rounding, the perturbation and the suppression ("<k") are undone (the descriptor
    says which k and rounding its node applied)."""
    rule = descriptor.get("disclosure") or {}
    try:
        k = int(rule.get("k", disclosure.DEFAULT_K))
        base = int(rule.get("rounding", disclosure.DEFAULT_BASE))
    except (TypeError, ValueError):  # a rule that cannot be undone bounds nothing
        return None
    subjects = (descriptor.get("counts") or {}).get("subjects")
    if subjects == disclosure.suppressed_marker(k) or (
            isinstance(subjects, int) and not isinstance(subjects, bool) and subjects >= 0):
        return disclosure.largest_within(subjects, k=k, base=base)
    return None


def secagg_max_weight(portal: Portal, datasets: list[dict[str, Any]]) -> int:
    """SecAgg+'s `max_weight` for a run over `datasets` (a permit's node and dataset ids):
    the largest weight any of them can send, from the catalogue alone.

    A dataset without a published count has no honest bound, so the run is refused
    (409) rather than given a guess: too low weighs that hospital less than its data,
    too high costs every update quantisation precision. Its hospital publishes the
    dataset, or the researcher starts the run without SecAgg+."""
    bounds: list[int] = []
    unknown: list[str] = []
    with portal.db.reader() as cur:
        for d in datasets:
            row = store.get_dataset(cur, d["node_id"], d["dataset_id"])
            bound = None if row is None else weight_bound(row["descriptor"])
            if bound is None:
                unknown.append(f"{d['node_id']}/{d['dataset_id']}")
            else:
                bounds.append(bound)
    if unknown:
        raise Conflict(f"secure aggregation needs a bound on every hospital's training "
                       f"examples from the catalogue; none is published for "
                       f"{', '.join(unknown)}: its hospital publishes the dataset "
                       "(`tre node publish`), or the run starts with secagg false")
    return max(bounds)
