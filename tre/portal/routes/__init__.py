"""HTTP routes: parse, ask the policy table, call one service function, return."""

from fastapi import Request

from tre.portal.context import Portal


def portal(request: Request) -> Portal:
    """Dependency: the portal's store, audit log and keys."""
    return request.app.state.portal
