"""The protocol's CoalescingWriter: a small answer's head and body leave in one write, a head alone leaves when the
event loop turns (a streamed answer's first bytes are not held back), and nothing held is lost on close."""
from __future__ import annotations

import asyncio

from app.http.protocol import CoalescingWriter


class Recorder:
    """The three transport methods a response cycle calls, recording each write as it is made."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def run(body) -> Recorder:
    async def main() -> Recorder:
        transport = Recorder()
        await body(CoalescingWriter(transport, asyncio.get_running_loop()), transport)  # type: ignore[arg-type]
        return transport

    return asyncio.run(main())


def test_head_and_body_sent_back_to_back_leave_in_one_write():
    async def body(writer, transport):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writer.write(b"{}")
        assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        await asyncio.sleep(0)  # the pending flush finds nothing held
        assert len(transport.writes) == 1

    run(body)


def test_a_head_alone_leaves_when_the_loop_turns_and_later_chunks_go_straight_out():
    async def body(writer, transport):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert transport.writes == []
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        writer.write(b"5\r\nhello\r\n")
        writer.write(b"0\r\n\r\n")  # joins the chunk before it: one write per pair, never held past a loop turn
        await asyncio.sleep(0)
        assert b"".join(transport.writes).endswith(b"5\r\nhello\r\n0\r\n\r\n")

    run(body)


def test_close_sends_what_is_held_first_and_a_closed_transport_gets_nothing():
    async def body(writer, transport):
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()
        assert transport.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"] and transport.closed
        writer.write(b"late")
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]

    run(body)
