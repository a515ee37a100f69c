"""The catalogue: what each hospital holds, as descriptors with suppressed counts only,
each with the summary of its newest synthetic release (published or withdrawn)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from access_control.tokens import Principal
from tre.core.audit import AuditAction
from tre.portal.context import Portal, utcnow
from tre.portal.errors import Forbidden, Invalid, NotFound
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
