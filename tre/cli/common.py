"""Small helpers every CLI module uses: one console, one way to fail."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr naming the problem (and what to do), non-zero exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """Machine-readable output on stdout (plain, so pipes and `jq` work)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def supervise(proc: Any) -> NoReturn:
    """Wait in the foreground for a child started in its own process group; SIGTERM,
    SIGINT (Ctrl-C) or SIGHUP stop the whole group, so nothing it started outlives us."""
    import contextlib
    import os
    import signal

    def stop(*_: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    raise typer.Exit(proc.wait())


def check_portal_url(url: str, option: str, *, allow_http: bool) -> None:
    """A portal URL another party will send secrets or trust to: https, or plain http
    only where the command runs in development mode (`--insecure`)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        fail(f"{option} {url!r} is not an http(s) URL of the portal (e.g. "
             "https://portal.example.org)")
    if parts.scheme == "http" and not allow_http:
        fail(f"{option} {url} is plain http: give the portal's https URL (its certificate "
             "checked against the federation CA), or --insecure for development")


class PortalCalls:
    """A person's calls to the portal API from the CLI, with their bearer token; a
    refusal or an unreachable portal ends the command with one line naming it."""

    def __init__(self, url: str, token: str, *, verify: str | bool = True,
                 timeout_s: float = 60) -> None:
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), verify=verify, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> PortalCalls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        from federation.node.portal_client import problem_detail

        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"cannot reach the portal at {self.http.base_url} ({type(exc).__name__})")
        if resp.status_code >= 400:
            fail(f"the portal answered {resp.status_code} for {method} {path}: "
                 f"{problem_detail(resp)}")
        return resp.json()
