"""Every audit action's details have one declared shape (`tre.core.audit_details`, issue 18).

At run time `AuditLog.append` refuses a member's details that lack its shape. Here every
product module is parsed too, so that a write site in a path the unit tests do not run
(a Flower task, a portal restart) fails fast: each literal details dict handed to an audit
`append`/`record` with a known action (or returned beside one, as the node's permits
describe their reads) must use only its shape's keys, name all its required ones (unless
spread from elsewhere) and give constants of the declared types.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_audit_actions import ROOT, product_modules
from tre.core import audit_details
from tre.core.audit import AuditAction, AuditLog
from tre.core.audit_details import DETAILS, AuditDetailsError
from tre.core.db import Database

pytestmark = pytest.mark.unit


def _actions(value: ast.expr) -> tuple[list[AuditAction], bool] | None:
    """The actions an `action=` expression may be, and whether the details must fit every
    one of them (a member, a choice of members) or one (built from data); None: unknown
    statically (a parameter)."""
    match value:
        case ast.Attribute(value=ast.Name(id="AuditAction"), attr=name):
            return [AuditAction[name]], True
        case ast.Call(func=ast.Name(id="AuditAction"), args=[ast.JoinedStr(values=parts)]):
            prefix = parts[0].value if isinstance(parts[0], ast.Constant) else ""
            return [a for a in AuditAction if a.value.startswith(prefix)], False
        case ast.IfExp(body=body, orelse=orelse):
            sides = [_actions(body), _actions(orelse)]
            if all(s is not None and s[1] for s in sides):
                return [a for s in sides for a in s[0]], True
    return None


class Literal:
    """The keys a details expression is seen to hold; `open` when part of it is spread
    from somewhere this walk cannot follow (then missing keys are not judged)."""

    def __init__(self) -> None:
        self.keys: dict[str, ast.expr] = {}
        self.optional: set[str] = set()
        self.open = False


def _dict_literal(expr: ast.expr, scope: ast.AST, line: int) -> Literal | None:
    """A dict display, or a name assigned one in the same function before `line` (with
    the keys later set on it by subscript, as optional); None when neither."""
    if isinstance(expr, ast.Name):
        assigned = [n for n in ast.walk(scope) if isinstance(n, ast.Assign)
                    and n.lineno < line and isinstance(n.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)]
        if not assigned:
            return None
        found = _dict_literal(assigned[-1].value, scope, line)
        for node in ast.walk(scope):
            if (isinstance(node, ast.Assign) and node.lineno < line
                    and isinstance(t := node.targets[0], ast.Subscript)
                    and isinstance(t.value, ast.Name) and t.value.id == expr.id
                    and isinstance(t.slice, ast.Constant)):
                found.keys[t.slice.value] = node.value
                found.optional.add(t.slice.value)
        return found
    if not isinstance(expr, ast.Dict):
        return None
    found = Literal()
    for key, value in zip(expr.keys, expr.values, strict=True):
        if key is None:  # **spread
            inner = _dict_literal(value, scope, line)
            if inner is None:
                found.open = True
            else:
                found.keys.update(inner.keys)
                found.optional |= inner.optional
                found.open |= inner.open
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.keys[key.value] = value
        else:
            found.open = True
    return found


def _misfit(shape: type, literal: Literal) -> list[str]:
    hints, required = audit_details.fields(shape)
    found = [f"unknown key {k!r}" for k in sorted(literal.keys.keys() - hints.keys())]
    if not literal.open:
        found += [f"missing {k!r}" for k in sorted(required - literal.keys.keys())]
    for key, value in sorted(literal.keys.items()):
        if (key in hints and isinstance(value, ast.Constant)
                and not audit_details.conforms(value.value, hints[key])):
            found.append(f"{key!r} is the constant {value.value!r}, not {hints[key]}")
    found += [f"{k!r} is set only sometimes but is required"
              for k in sorted(literal.optional & required)]
    return found


def _judge(actions: list[AuditAction], every: bool, literal: Literal) -> list[str]:
    """Problems, or [] when the literal fits (each of / one of) the actions' shapes."""
    verdicts = {a: [_misfit(shape, literal) for shape in DETAILS[a]] for a in actions}
    misfits = {a: v for a, v in verdicts.items() if all(v)}
    if not misfits or (not every and len(misfits) < len(verdicts)):
        return []
    return [" | ".join(f"{a.value}: " + "; or ".join(", ".join(p) for p in v)
                       for a, v in misfits.items())]


def details_problems(path: Path) -> tuple[list[str], int]:
    """(problems, how many literal details dicts were judged) of one module."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    scope_of: dict[int, ast.AST] = {}  # node -> its innermost enclosing function
    for fn in sorted((n for n in ast.walk(tree)
                      if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
                     key=lambda n: n.lineno):  # outer functions first: inner ones overwrite
        for node in ast.walk(fn):
            scope_of[id(node)] = fn
    found, judged = [], 0
    for node in ast.walk(tree):
        pair = None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("append", "record")):
            kws = {k.arg: k.value for k in node.keywords}
            if "action" in kws and "actor" in kws:
                pair = kws["action"], kws.get("details", ast.Dict(keys=[], values=[]))
        elif (isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple)
              and len(node.value.elts) == 4):  # (action, object type, object id, details)
            pair = node.value.elts[0], node.value.elts[3]
        if pair is None or (actions := _actions(pair[0])) is None:
            continue
        literal = _dict_literal(pair[1], scope_of.get(id(node), tree), node.lineno)
        if literal is None:
            continue
        judged += 1
        found += [f"{where}:{node.lineno}: {p}" for p in _judge(*actions, literal)]
    return found, judged


def test_every_action_has_a_details_shape():
    assert set(DETAILS) == set(AuditAction)
    for action, shapes in DETAILS.items():
        assert shapes, action
        for shape in shapes:
            audit_details.fields(shape)  # every annotation resolves


def test_literal_details_at_the_write_sites_have_their_actions_shape():
    problems, judged = [], 0
    for path in product_modules():
        found, n = details_problems(path)
        problems += found
        judged += n
    assert not problems, "\n".join(problems)
    assert judged >= 60, f"only {judged} write sites were judged: has the walk lost them?"


def test_the_static_check_catches_misfits(tmp_path):
    source = '''
def f(home, cur, kind, row):
    home.audit.record(actor="a", action=AuditAction.CONSENT_REFUSED, object_type="t",
                      object_id="1", details={"code": "x", "reasons": "typo"})
    home.audit.record(actor="a", action=AuditAction.CONSENT_REFUSED, object_type="t",
                      object_id="1", details={"code": "x"})
    home.audit.record(actor="a", action=AuditAction.AUDIT_CHECKPOINT, object_type="t",
                      object_id="1", details={"seq": "7", "hash": "h"})
    extra = {"stray": 1}
    home.audit.append(cur, actor="a", action=AuditAction(f"consent.{kind}"), object_type="t",
                      object_id="1", details={**extra, **row})
    home.audit.append(cur, actor="a", action=AuditAction.RUN_CANCEL, object_type="t",
                      object_id="1", details={"why": "x"})
    home.audit.record(actor="a", action=AuditAction.CONSENT_REFUSED, object_type="t",
                      object_id="1", details={"code": "x", **row})
    home.audit.record(actor="a", action=AuditAction.CATALOGUE_PUBLISH, object_type="t",
                      object_id="1", details={"portal_url": "u", "descriptor": {}})

def read_entry(self):
    return AuditAction.QUERY_COHORT, "cohort", "d", {"cohort": {}}
'''
    module = tmp_path / "misfits.py"  # parsed only, never imported
    module.write_text(source)
    problems, judged = details_problems(module)
    assert judged == 8
    assert len(problems) == 6, problems
    assert any("unknown key 'reasons'" in p for p in problems)
    assert any("missing 'reason'" in p for p in problems)
    assert any("'seq' is the constant '7'" in p for p in problems)
    assert any("unknown key 'stray'" in p for p in problems)
    assert any("missing 'purpose'" in p for p in problems)


@pytest.fixture
def log(tmp_path) -> Any:
    db = Database(tmp_path / "store.duckdb")
    yield AuditLog(db)
    db.close()


def test_append_refuses_details_without_their_shape_and_writes_nothing(log):
    with (pytest.raises(AuditDetailsError, match=r"'consent.refused'.*missing 'reason'.*"
                                                 r"unknown key 'reasons'"),
          log.db.transaction() as cur):
        log.append(cur, actor="a", action=AuditAction.CONSENT_REFUSED, object_type="t",
                   object_id="1", details={"code": "c", "reasons": "typo"})
    with pytest.raises(AuditDetailsError, match=r"'seq' is str, not int"):
        log.record(actor="a", action=AuditAction.AUDIT_CHECKPOINT, object_type="t",
                   object_id="1", details={"seq": "7", "hash": "h"})
    with pytest.raises(AuditDetailsError, match=r"'ok' is int, not bool"):
        log.record(actor="a", action=AuditAction.AUDIT_VERIFICATION, object_type="t",
                   object_id="1", details={"ok": 1, "rows": 2, "checkpoint_seq": None})
    with pytest.raises(AuditDetailsError, match="unknown key 'x'"):
        log.record(actor="a", action=AuditAction.RUN_CANCEL, object_type="run", object_id="r",
                   details={"x": 1})
    assert log.count() == 0


def test_append_takes_each_shape_of_an_action_and_the_stored_form(log):
    log.record(actor="portal", action=AuditAction.CATALOGUE_PUBLISH, object_type="dataset",
               object_id="d", details={"kind": "table", "title": "T"})
    log.record(actor="node", action=AuditAction.CATALOGUE_PUBLISH, object_type="dataset",
               object_id="d", details={"portal_url": "https://p", "descriptor": {"x": [1]}})
    # an int is a float; a tuple is stored as a list; optional keys may be left out
    log.record(actor="node", action=AuditAction.PRIVACY_BUDGET_SET, object_type="dataset",
               object_id="d", details={"epsilon_total": 3, "previous": None})
    log.record(actor="node", action=AuditAction.PERMIT_KEY_REFRESH, object_type="keys",
               object_id="k", details={"reason": "r", "added": ("k1",), "dropped": [],
                                       "retired": []})
    log.record(actor="system", action=AuditAction.RUN_FAIL, object_type="run", object_id="r",
               details={"state": "failed", "error": None})
    with pytest.raises(AuditDetailsError, match="as CatalogueReceived: .*; or as CatalogueSent"):
        log.record(actor="node", action=AuditAction.CATALOGUE_PUBLISH, object_type="dataset",
                   object_id="d", details={"kind": "table", "descriptor": {}})
    assert log.count() == 5 and log.verify().ok


def test_plain_string_actions_stay_unchecked(log):
    """Other parties' actions and older rows: the chain records and verifies them as given."""
    log.record(actor="a", action="consent.refused", object_type="t", object_id="1",
               details={"anything": True})
    log.record(actor="a", action="thing.change", object_type="t", object_id="2")
    assert log.verify().ok and log.count() == 2
