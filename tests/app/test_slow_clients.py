"""Slow clients (issue 15, item 2), against a real server: hundreds of connections that send part of their
headers or part of their body and stall do not stop /healthz or /predict for anyone else, and each is answered
408 and closed once its deadline passes, even one that keeps trickling bytes."""
from __future__ import annotations

import contextlib
import socket

import httpx

from tests.conftest import poll

STALLED = 100  # of each kind: partial headers, partial body
DEADLINE_S = 4  # short, so the test is quick; long enough that the other client is served while all are stalled
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: "
PARTIAL_BODY = (b"POST /predict HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n"
                b'{"start": ')


class Stalled:
    """A raw connection that sent `data` and stalls; `closed()` tells what the server sent once it hung up."""

    def __init__(self, port: int, data: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(data)
        self.sock.setblocking(False)
        self.received = b""
        self.done = False

    def closed(self) -> bool:
        while not self.done:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                chunk = b""
            self.received += chunk
            self.done = not chunk
        return True

    def trickle(self) -> None:
        if not self.done:
            with contextlib.suppress(OSError):  # it may have been closed already
                self.sock.send(b"x")


def test_stalled_connections_do_not_stop_others_and_are_closed_at_their_deadline(make_server):
    srv = make_server(SEQ2SEQ_HEADER_TIMEOUT_S=str(DEADLINE_S), SEQ2SEQ_BODY_TIMEOUT_S=str(DEADLINE_S),
                      SEQ2SEQ_MAX_CONNECTIONS="300").start()
    srv.wait_ready()
    slow_headers = [Stalled(srv.port, PARTIAL_HEADERS) for _ in range(STALLED)]
    slow_bodies = [Stalled(srv.port, PARTIAL_BODY) for _ in range(STALLED)]
    trickler = Stalled(srv.port, PARTIAL_HEADERS)  # a byte more at every look: the deadline does not move
    silent = Stalled(srv.port, b"")  # connected, never sent anything
    everyone = [*slow_headers, *slow_bodies, trickler, silent]
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as other:  # someone else, on fresh connections
            assert other.get("/healthz").status_code == 200
            r = other.post("/predict", json={"prefix": [7, 6]})
            assert r.status_code == 200 and r.json()["sequence"] == [7, 6, 5, 2, 8]
        # all of them were still connected while the other client was served
        assert not any(s.closed() for s in everyone), "a stalled connection was closed before its deadline"

        def all_closed() -> bool:
            trickler.trickle()
            return all(s.closed() for s in everyone)

        poll(all_closed, timeout=DEADLINE_S + 10, message="the server to close every stalled connection")
        for s in [*slow_headers, trickler]:
            assert s.received.startswith(b"HTTP/1.1 408 ") and f"headers did not arrive within {DEADLINE_S} s".encode() in s.received
        for s in slow_bodies:
            assert s.received.startswith(b"HTTP/1.1 408 ") and f"body did not arrive within {DEADLINE_S} s".encode() in s.received
        assert silent.received == b""  # nothing asked, nothing answered: just closed
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        for s in everyone:
            s.sock.close()
    metrics = httpx.get(f"{srv.url}/metrics").text
    assert 'route="/predict",status="408"' in metrics  # the abandoned /predict requests, counted as timed out
    assert "unhandled error" not in srv.log.read_text()  # a client that left is not an error of ours


def test_the_deadline_frees_the_connection_limit_that_stalled_clients_hold(make_server):
    """SEQ2SEQ_MAX_CONNECTIONS counts open connections: while stalled ones fill it everyone gets 503 at once
    (not a wait), and the header deadline is what gives the slots back."""
    srv = make_server(SEQ2SEQ_HEADER_TIMEOUT_S="2", SEQ2SEQ_MAX_CONNECTIONS="20").start()
    srv.wait_ready()
    stalled = [Stalled(srv.port, PARTIAL_HEADERS) for _ in range(25)]
    try:
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 503
        poll(lambda: all(s.closed() for s in stalled), timeout=12, message="the stalled connections to be closed")
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200
    finally:
        for s in stalled:
            s.sock.close()
