"""The Fleet gateway: the SuperLink's only published address.

Hospitals' SuperNodes need the Fleet API; nobody but the portal may reach the
Control API (it submits runs and hands out every run's configuration) or the
Runtime API (it hands ServerApp tasks to whoever holds the task secret). Flower
1.42 serves all three on one address, so the SuperLink listens on a private one
and this gateway publishes `/v1/fleet/<method>` alone, forwarding each request
unchanged (SuperNode authentication signs headers, which pass through) and
answering 404 to anything else. TLS ends here with the SuperLink's certificate and
starts again towards the SuperLink, verified with the federation CA.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


def fleet_paths() -> frozenset[str]:
    """The Fleet API's routes as the installed Flower defines them, and nothing else."""
    from flwr.superlink.routers.fleet.router import router

    return frozenset(route.path for route in router.routes)

# Flower's SuperLink serves the Fleet API with uvicorn, which closes a connection idle for
# 5 s (its default keep-alive), and httpx keeps an idle connection for 5 s too: a request
# could go out on a connection the SuperLink was closing at that instant and fail with a
# ReadError (seen under load: a node's SecAgg+ share lost mid-round, the node then missing
# from the run). The gateway drops its idle connections well before the upstream does.
UPSTREAM_KEEPALIVE_S = 2.0

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "host", "content-length"}


def fleet_gateway(upstream: str, *, ca_cert: Path | None = None) -> Starlette:
    """The ASGI app: Fleet requests to `upstream` (HOST:PORT), everything else 404."""
    allowed = fleet_paths()
    scheme = "https" if ca_cert else "http"
    client = httpx.AsyncClient(base_url=f"{scheme}://{upstream}",
                               verify=str(ca_cert) if ca_cert else False, timeout=None,
                               limits=httpx.Limits(keepalive_expiry=UPSTREAM_KEEPALIVE_S))

    async def forward(request: Request) -> Response:
        path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        if request.method != "POST" or path not in allowed:
            return PlainTextResponse("only the Fleet API is published here", status_code=404)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        upstream_req = client.build_request("POST", path, headers=headers,
                                            content=await request.body())
        resp = await client.send(upstream_req, stream=True)
        return StreamingResponse(
            resp.aiter_raw(), status_code=resp.status_code,
            headers={k: v for k, v in resp.headers.items() if k.lower() not in _HOP},
            background=BackgroundTask(resp.aclose))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward,
                                   methods=["GET", "POST", "PUT", "PATCH", "DELETE"])],
                     lifespan=lifespan)


@dataclass
class Gateway:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_gateway(listen: str, upstream: str, *, ca_cert: Path | None = None,
                  certfile: Path | None = None, keyfile: Path | None = None) -> Gateway:
    """Serve the gateway on `listen` (HOST:PORT) in a thread; TLS with certfile/keyfile."""
    host, _, port = listen.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(
        fleet_gateway(upstream, ca_cert=ca_cert), host=host.strip("[]"), port=int(port),
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="fleet-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the Fleet gateway could not listen on {listen}")
    return Gateway(server, thread)
