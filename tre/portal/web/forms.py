"""HTML forms ⇄ the API's schemas.

Pages validate with the very models the JSON API uses (`RequestFields`,
`ReviewIn`, …); this module only turns form fields into those models' input and
pydantic's errors into a message per form field, in the page's language.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from tre.portal.schemas import AccessRequest, RequestFields
from tre.portal.web.i18n import Translator

Errors = dict[str, list[str]]
TEXT_FIELDS = ("title", "organisation", "purpose", "research_question", "app_id",
               "legal_basis", "data_form", "expected_outputs")
NUMBER_FIELDS = ("epsilon", "delta", "duration_days", "min_hospitals")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def number(text: str) -> int | float | str:
    """A typed number as a number (the API takes no numbers as text), with a decimal
    comma accepted as French and Belgian users type it; what is no number stays text,
    for the model to name."""
    cleaned = text.replace(",", ".").replace(" ", "").replace("\u202f", "")
    for kind in (int, float):
        try:
            return kind(cleaned)
        except ValueError:
            continue
    return cleaned


def request_values(form: FormData) -> dict[str, Any]:
    """What the user typed, as the template re-displays it (also after an error)."""
    values: dict[str, Any] = {name: _text(form, name) for name in
                              (*TEXT_FIELDS, *NUMBER_FIELDS, "ethics_reference", "variables")}
    nodes = [v.strip() for v in form.getlist("dataset_node") if isinstance(v, str)]
    sets = [v.strip() for v in form.getlist("dataset_id") if isinstance(v, str)]
    rows = [{"node_id": n, "dataset_id": d} for n, d in zip(nodes, sets, strict=False)
            if n or d]
    values["datasets"] = rows
    return values


def request_input(values: dict[str, Any]) -> dict[str, Any]:
    """The input for `RequestFields`: blanks left out so that pydantic names them."""
    data: dict[str, Any] = {k: values[k] for k in TEXT_FIELDS if values.get(k)}
    data.update({k: number(values[k]) for k in NUMBER_FIELDS if values.get(k)})
    data["datasets"] = values["datasets"]
    data["variables"] = [v.strip() for v in values.get("variables", "").splitlines()
                         if v.strip()]
    data["ethics_reference"] = values.get("ethics_reference") or None
    return data


def values_from_request(req: AccessRequest) -> dict[str, Any]:
    """A stored request as form values (for the edit page)."""
    return {
        **{k: str(getattr(req, k).value if hasattr(getattr(req, k), "value")
                  else getattr(req, k)) for k in TEXT_FIELDS},
        "epsilon": repr(req.epsilon), "delta": repr(req.delta),
        "duration_days": str(req.duration_days), "min_hospitals": str(req.min_hospitals),
        "ethics_reference": req.ethics_reference or "",
        "variables": "\n".join(req.variables),
        "datasets": [d.model_dump() for d in req.datasets],
    }


def parse(model: type[BaseModel], data: dict[str, Any], _: Translator
          ) -> tuple[BaseModel | None, Errors]:
    """Validate `data` with `model`; on failure, translated messages keyed by field path."""
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        errors: Errors = {}
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "__all__"
            errors.setdefault(key, []).append(message(err, _))
        return None, errors


def parse_request(values: dict[str, Any], _: Translator) -> tuple[RequestFields | None, Errors]:
    fields, errors = parse(RequestFields, request_input(values), _)
    if "datasets" in errors and not values["datasets"]:
        errors["datasets"] = [_("Add at least one dataset.")]
    return fields, errors  # type: ignore[return-value]


def _n(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def message(err: dict[str, Any], _: Translator) -> str:
    """One pydantic error as a sentence for a person, in their language."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return _("This field is required.")
    if kind == "string_too_short":
        if ctx.get("min_length", 1) <= 1:
            return _("This field is required.")
        return _("Enter at least {n} characters.", n=ctx["min_length"])
    if kind == "string_too_long":
        return _("Enter at most {n} characters.", n=ctx["max_length"])
    if kind in ("float_parsing", "float_type", "finite_number"):
        return _("Enter a number.")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return _("Enter a whole number.")
    if kind == "greater_than":
        return _("Must be greater than {n}.", n=_n(ctx["gt"]))
    if kind == "greater_than_equal":
        return _("Must be at least {n}.", n=_n(ctx["ge"]))
    if kind == "less_than":
        return _("Must be less than {n}.", n=_n(ctx["lt"]))
    if kind == "less_than_equal":
        return _("Must be at most {n}.", n=_n(ctx["le"]))
    if kind in ("enum", "literal_error"):
        return _("Choose one of the options.")
    if kind == "string_pattern_mismatch":
        return _("Use only letters, digits and . _ : -")
    if kind == "too_short":
        return _("Give at least {n}.", n=ctx.get("min_length", 1))
    if kind == "too_long":
        return _("Give at most {n}.", n=ctx.get("max_length", 1))
    if kind == "extra_forbidden":
        return _("Unexpected field.")
    return str(err.get("msg", kind))
