"""HTTP routes: parse, ask the policy table, call one service function, return."""

from fastapi import Request

from tre.portal.context import Portal


async def portal(request: Request) -> Portal:
    """Dependency: the portal's store, audit log and keys (async: no thread-pool hop)."""
    return request.app.state.portal
