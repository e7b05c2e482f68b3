"""The throughput ceiling for bench/load.py: a bare ASGI app, no framework and no middleware, that reads the
whole request body and answers a fixed JSON body (CEILING_BODY: one of our own answers to the same load, so the
bytes on the wire match). Whatever ours does beyond this is the cost of being a service.

It runs under the uvicorn options `python -m app` uses with one process (app.__main__.serve_options: the same
SEQ2SEQ_* host, port, log level, timeouts and connection limit, access log off, the service's connection protocol,
httptools with read deadlines and one write per answer, and uvloop when installed, as it is here), so both sides
share the server, parser, protocol and event loop.

CEILING_FRAMEWORK=fastapi serves the same answer from inside a FastAPI app instead: its default middleware stack and
router, and one lean Starlette route (any path, GET or POST) that reads the body and returns the fixed bytes. That is
the least a hot route kept inside the app's router can cost, before any check, middleware of ours or model work: the
framework's floor, between the bare app and ours.

  CEILING_BODY='{"ok":true}' SEQ2SEQ_PORT=8001 python -m bench.ceiling
"""
from __future__ import annotations

import os

BODY = os.environ.get("CEILING_BODY", '{"ok":true}').encode()
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send) -> None:
    if scope["type"] == "http":
        while (await receive()).get("more_body"):  # read the body to its end, as a real handler must
            pass
        await send(START)
        await send(END)
    elif scope["type"] == "lifespan":  # answered, so uvicorn's lifespan "auto" runs the same steps as for ours
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def framework_app():
    """The fixed answer from a lean route inside a FastAPI app (the framework's floor)."""
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    floor = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    floor.router.routes.append(Route("/{rest:path}", answer, methods=["GET", "POST"]))
    return floor


def main() -> None:
    import uvicorn

    from app.__main__ import serve_options
    from app.settings import get_settings

    framework = os.environ.get("CEILING_FRAMEWORK", "none")
    if framework not in ("none", "fastapi"):
        raise SystemExit(f"CEILING_FRAMEWORK must be none or fastapi, got {framework!r}")
    uvicorn.run(app if framework == "none" else framework_app(), **serve_options(get_settings()))


if __name__ == "__main__":
    main()
