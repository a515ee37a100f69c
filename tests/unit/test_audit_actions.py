"""Audit actions are `AuditAction` members at every write site (issue 18).

Every product module is parsed: an audit `append`/`record` (and an `entries` filter)
must name its action as `AuditAction.X`, `AuditAction(...)` (built from data, failing on
an unknown value) or a parameter typed `AuditAction`; a helper that takes an
`AuditAction` must not be handed a string. The actions built from data are checked
against the code that produces their values. The chain itself stays generic: a member
is stored, hashed and exported as its plain string.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tre.core.audit import AuditAction, AuditLog, verify_entries
from tre.core.db import Database
from tre.portal.schemas import OutputDecision, RequestState

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tre", "access_control", "synthetic", "pseudonymisation", "federation")
AUDIT_METHODS = {"append", "record", "entries"}


def product_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _is_audit_action(annotation: ast.expr | None) -> bool:
    return annotation is not None and "AuditAction" in ast.unparse(annotation)


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _typed_ok(value: ast.expr, typed_params: set[str]) -> bool:
    """An AuditAction member, AuditAction(...), a parameter typed AuditAction, or a choice
    between those."""
    match value:
        case ast.Attribute(value=ast.Name(id="AuditAction")):
            return True
        case ast.Call(func=ast.Name(id="AuditAction")):
            return True
        case ast.IfExp(body=body, orelse=orelse):
            return _typed_ok(body, typed_params) and _typed_ok(orelse, typed_params)
        case ast.Name(id=name):
            return name in typed_params
    return False


def _is_string(value: ast.expr) -> bool:
    return isinstance(value, ast.JoinedStr) or (
        isinstance(value, ast.Constant) and isinstance(value.value, str))


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    # helpers of this module that take an AuditAction: name -> (positional index, keyword)
    helpers: dict[str, tuple[int, str]] = {}
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for fn in functions:
        positional = [*fn.args.posonlyargs, *fn.args.args]
        bound = 1 if positional and positional[0].arg in ("self", "cls") else 0
        for i, arg in enumerate(positional):
            if _is_audit_action(arg.annotation):
                helpers[fn.name] = (i - bound, arg.arg)
    # each call, judged with the parameters typed AuditAction in its enclosing function
    scopes: list[tuple[ast.AST, set[str]]] = [(tree, set())] + [
        (fn, {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
              if _is_audit_action(a.annotation)}) for fn in functions]
    seen: set[int] = set()
    for scope, typed in reversed(scopes):  # innermost functions first
        for call in ast.walk(scope):
            if not isinstance(call, ast.Call) or id(call) in seen:
                continue
            seen.add(id(call))
            name = _callee(call)
            if name in AUDIT_METHODS and isinstance(call.func, ast.Attribute):
                for kw in call.keywords:
                    if kw.arg != "action":
                        continue
                    # a read filter may be what an auditor typed (the web view), never a literal
                    if (_is_string(kw.value) if name == "entries"
                            else not _typed_ok(kw.value, typed)):
                        found.append(f"{where}:{call.lineno}: {name}(action="
                                     f"{ast.unparse(kw.value)}) is not an AuditAction")
            if name in helpers:
                index, keyword = helpers[name]
                args = [a for a in call.args if not isinstance(a, ast.Starred)]
                given = [args[index]] if 0 <= index < len(args) else []
                given += [kw.value for kw in call.keywords if kw.arg == keyword]
                found += [f"{where}:{call.lineno}: {name}(... {ast.unparse(v)} ...) passes a "
                          "string where an AuditAction is expected" for v in given
                          if _is_string(v)]
    return found


def test_product_code_names_audit_actions_as_enum_members():
    problems = [v for path in product_modules() for v in violations(path)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_free_strings(tmp_path):
    bad = tmp_path / "free_audit_strings.py"  # parsed only, never imported
    source = '''
def helper(portal, action: AuditAction | None = None): ...
def f(portal, cur, kind, action: str):
    portal.audit.append(cur, actor="a", action="x.y", object_type="t", object_id="1")
    portal.audit.record(actor="a", action=f"x.{kind}", object_type="t", object_id="1")
    portal.audit.record(actor="a", action=action, object_type="t", object_id="1")
    portal.audit.entries(action="x.y")
    helper(portal, "x.y")
    portal.audit.record(actor="a", action=AuditAction.RUN_START, object_type="t", object_id="1")
    portal.audit.record(actor="a", action=AuditAction(f"run.{kind}"), object_type="t",
                        object_id="1")
'''
    bad.write_text(source)
    found = violations(bad)
    assert len(found) == 5, found


def test_members_are_unique_and_named_party_dot_verb():
    values = [m.value for m in AuditAction]
    assert len(values) == len(AuditAction.__members__), "two names share one action (alias)"
    for member in AuditAction:
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", member.value), member
        assert member.name == member.value.upper().replace(".", "_"), member


def test_actions_built_from_data_cover_every_value():
    for state in (RequestState.APPROVED, RequestState.REJECTED,
                  RequestState.CHANGES_REQUESTED):  # the quorum outcomes (services/access.py)
        AuditAction(f"request.{state.value}")
    for decision in OutputDecision:
        AuditAction(f"output.{decision.value}")
    # consent.<change>: the classification in the consent store's SQL
    store_sql = (ROOT / "tre" / "portal" / "store" / "consent.py").read_text()
    case = re.search(r"CASE WHEN is_new THEN .*? END AS change", store_sql, re.S)
    changes = re.findall(r"(?:THEN|ELSE) '(\w+)'", case.group(0))
    assert set(changes) == {"record", "withdraw", "reconsent", "update"}
    for change in changes:
        AuditAction(f"consent.{change}")
    # ingest.<source_kind>: every IngestReport(source_kind=...) of the ingesters
    kinds = set()
    for path in (ROOT / "federation" / "node" / "ingest").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _callee(node) == "IngestReport":
                kind = next(kw.value for kw in node.keywords if kw.arg == "source_kind")
                assert isinstance(kind, ast.Constant), f"{path}: source_kind is not a literal"
                kinds.add(kind.value)
    assert kinds >= {"table", "images", "dicom", "medmnist"}
    for kind in kinds:
        AuditAction(f"ingest.{kind}")
    with pytest.raises(ValueError):
        AuditAction("consent.misspelt")


def test_a_member_is_stored_and_hashed_as_its_plain_string(tmp_path):
    db = Database(tmp_path / "store.duckdb")
    try:
        log = AuditLog(db)
        typed = log.record(actor="a", action=AuditAction.RUN_START, object_type="run",
                           object_id="r1", details={"permit_id": "p1", "params": {}})
        plain = log.record(actor="a", action="run.start", object_type="run", object_id="r2")
        assert type(typed.action) is str and typed.action == plain.action == "run.start"
        assert [e.object_id for e in log.entries(action=AuditAction.RUN_START)] == ["r1", "r2"]
        assert log.verify().ok and verify_entries(log.entries()).ok
    finally:
        db.close()
