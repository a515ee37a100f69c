"""Run pages: start a run under a permit, follow it live, see metric and ε per round."""

from __future__ import annotations

import io
from typing import Any

from fastapi import Depends, Form
from fastapi.responses import Response

from access_control.policy import Action
from tre.portal.errors import DomainError
from tre.portal.schemas import RunIn
from tre.portal.services import access, runs
from tre.portal.web import forms
from tre.portal.web.pages import Ctx, needs, redirect, render, web_router

router = web_router()
#: the run parameters the form offers; their defaults are RunIn's, i.e. the run contract's
FORM_FIELDS = ("model", "rounds", "local_epochs", "batch_size", "lr")


@router.get("/runs")
def runs_list(ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    rows = sorted(runs.list_runs(ctx.portal, ctx.user), key=lambda r: r["created_at"],
                  reverse=True)
    return render(ctx, "runs.html", runs=rows)


def _new_page(ctx: Ctx, *, values: dict[str, str] | None = None,
              errors: forms.Errors | None = None, problem: str | None = None,
              status: int = 200) -> Response:
    permits = [p for p in access.list_permits(ctx.portal, ctx.user)
               if p["status"] == "active" and p["holder_sub"] == ctx.user.subject]
    return render(ctx, "run_new.html", status=status, permits=permits, values=values or {},
                  errors=errors or {}, problem=problem)


@router.get("/runs/new")
def run_new(permit: str = "", ctx: Ctx = Depends(needs(Action.RUN_START))) -> Response:
    defaults = {name: str(RunIn.model_fields[name].default) for name in FORM_FIELDS}
    return _new_page(ctx, values={"permit_id": permit, **defaults})


@router.post("/runs/new")
def run_start(permit_id: str = Form(""), model: str = Form(""), rounds: str = Form(""),
              local_epochs: str = Form(""), batch_size: str = Form(""), lr: str = Form(""),
              ctx: Ctx = Depends(needs(Action.RUN_START))) -> Response:
    values = {"permit_id": permit_id, "model": model, "rounds": rounds,
              "local_epochs": local_epochs, "batch_size": batch_size, "lr": lr}
    typed = {k: v.strip() for k, v in values.items() if v.strip()}
    typed |= {k: forms.number(typed[k]) for k in ("rounds", "local_epochs", "batch_size", "lr")
              if k in typed}
    body, errors = forms.parse(RunIn, typed, ctx._)
    if body is None:
        return _new_page(ctx, values=values, errors=errors, status=422)
    try:
        run = runs.start_run(ctx.portal, ctx.user, body)
    except DomainError as exc:
        return _new_page(ctx, values=values, problem=exc.message, status=exc.status_code)
    return redirect(f"/runs/{run['id']}")


@router.get("/runs/{run_id}")
def run_detail(run_id: str, ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    run = runs.get_run(ctx.portal, ctx.user, run_id)
    return render(ctx, "run_detail.html", run=run, live=run["state"] in runs.ACTIVE,
                  can_cancel=run["state"] in runs.ACTIVE and (
                      run["holder_sub"] == ctx.user.subject
                      or ctx.allowed(Action.RUN_CANCEL_ANY)))


@router.post("/runs/{run_id}/cancel")
def run_cancel(run_id: str, ctx: Ctx = Depends(needs(Action.RUN_CANCEL))) -> Response:
    try:
        runs.cancel_run(ctx.portal, ctx.user, run_id)
    except DomainError as exc:
        ctx.flash(exc.message)
    return redirect(f"/runs/{run_id}")


def progress_png(run: dict[str, Any], labels: dict[str, str]) -> bytes:
    """Test AUC and ε per hospital, round by round (aggregates only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    rounds = [r["round"] for r in run["rounds"]]
    left.plot(rounds, [(r.get("evaluate") or {}).get("auc") for r in run["rounds"]], "o-")
    left.set(title=labels["auc"], xlabel=labels["round"], ylim=(0.4, 1.0))
    hospitals = sorted({n["hospital_id"] for r in run["rounds"] for n in r["nodes"]
                        if n.get("hospital_id")})
    for hospital in hospitals:
        right.plot(rounds, [next((n["epsilon"] for n in r["nodes"]
                                  if n.get("hospital_id") == hospital), None)
                            for r in run["rounds"]], "o-", label=hospital)
    right.set(title=labels["epsilon"], xlabel=labels["round"])
    if hospitals:
        right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(rounds or [1])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@router.get("/runs/{run_id}/progress.png")
def run_plot(run_id: str, ctx: Ctx = Depends(needs(Action.RUN_READ))) -> Response:
    run = runs.get_run(ctx.portal, ctx.user, run_id)
    labels = {"auc": ctx._("Test AUC"), "epsilon": ctx._("ε spent per hospital"),
              "round": ctx._("Round")}
    return Response(progress_png(run, labels), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.get("/hospital")
def hospital_page(ctx: Ctx = Depends(needs(Action.NODE_VIEW))) -> Response:
    """The node operator's view: what ran on their hospital's data, ε per dataset."""
    hospital = ctx.user.hospital_id
    if hospital is None:
        return render(ctx, "hospital.html", activity=None)
    return render(ctx, "hospital.html",
                  activity=runs.hospital_activity(ctx.portal, ctx.user, hospital))
