"""uvicorn's httptools protocol with read deadlines, so slow clients cannot hold connections forever.

uvicorn closes a keep-alive connection that stays idle, but waits without limit for a request's headers and
body: a client that sends a few bytes now and then keeps its connection, and with `limit_concurrency` (which
counts connections) enough of them would get every other client a 503. Here a connection must deliver a
request's line and headers within SEQ2SEQ_HEADER_TIMEOUT_S (counted from the connection, or from the
request's first byte on a kept-alive one) and its body within SEQ2SEQ_BODY_TIMEOUT_S of its headers; past
either deadline it gets 408 (if anything of the request arrived and no answer has begun) and is closed. An
application waiting for the body is told the client disconnected.

The deadlines live in the protocol, not in the application, so they hold for every route whether it reads
its body or not, and they cost the request path nothing: a timer is armed only when a read ends part-way
through a request (and once per new connection).

The protocol also sends each small answer in one write: uvicorn writes a response's head and its body with a
system call each, and on loopback a write costs more than the rest of a small request (bench/load.py). The head
waits for the body's first part, within the same turn of the event loop (CoalescingWriter).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ..settings import get_settings
from .errors import error_body
from .middleware import TIMED_OUT

IDLE, WAITING, HEADERS, BODY = 0, 1, 2, 3  # WAITING: a new connection that has sent nothing yet
DEADLINE_KIND = {IDLE: IDLE, WAITING: HEADERS, HEADERS: HEADERS, BODY: BODY}


def timeout_response(what: str, seconds: float) -> bytes:
    body = json.dumps(error_body(None, 408, f"the request's {what} did not arrive within {seconds:g} s")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body))


class CoalescingWriter:
    """The transport as a response sees it: a write is held until the next one joins it, or until the event loop
    turns (a streamed answer's head goes out then), or until the connection closes. uvicorn's response cycle
    writes the head on http.response.start and the body on http.response.body; an answer sent as the two
    messages back to back (every JSON answer here) leaves in one system call and one TCP segment."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()


class DeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus a header deadline and a body deadline (SEQ2SEQ_HEADER_TIMEOUT_S,
    SEQ2SEQ_BODY_TIMEOUT_S); `python -m app` passes it to uvicorn as `http=`."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self._timeouts = {HEADERS: settings.header_timeout_s, BODY: settings.body_timeout_s}
        self._phase = WAITING
        self._armed_for = IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._writer: CoalescingWriter | None = None

    # -- the deadline ------------------------------------------------------------------------------------
    def _follow_phase(self) -> None:
        kind = DEADLINE_KIND[self._phase]
        if kind == self._armed_for:
            return  # still in the same part of the request: the deadline already set holds
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._armed_for = kind
        if kind != IDLE:
            self._deadline = self.loop.call_later(self._timeouts[kind], self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        kind, began = self._armed_for, self._phase != WAITING
        cycle = self.cycle if kind == BODY else None
        answered = cycle is not None and cycle.response_started
        if began and not answered:
            self.transport.write(timeout_response("headers" if kind == HEADERS else "body", self._timeouts[kind]))
        if cycle is not None and not cycle.response_complete:  # the application stops waiting for the body
            cycle.scope["state"][TIMED_OUT] = True
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # -- uvicorn's protocol and parser callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = CoalescingWriter(transport, self.loop)
        self._follow_phase()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_phase()

    def on_message_begin(self) -> None:
        self._phase = HEADERS
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = BODY
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport and self._writer is not None:
            cycle.transport = self._writer  # type: ignore[assignment]  # the three methods a cycle calls

    def on_message_complete(self) -> None:
        self._phase = IDLE
        super().on_message_complete()
