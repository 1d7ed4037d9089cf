"""The API's listening socket: the connections asyncio (uvicorn) accepts on it have Nagle's
algorithm off, so a response written in two parts (head, body) does not wait for the
client's delayed ACK (40 ms per request before)."""

from __future__ import annotations

import asyncio
import socket

from coriolis.cmd.server import _listen
from coriolis.config import Settings


async def _accepted_nodelay() -> int:
    sock, _url = _listen(Settings(host="127.0.0.1", port=0))
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Recorder, sock=sock)
    try:
        _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_accepted_connections_have_nodelay() -> None:
    assert asyncio.run(_accepted_nodelay()) != 0
