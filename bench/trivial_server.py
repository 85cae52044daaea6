"""A trivial HTTP/1.1 server for generator benchmarks: every GET gets the same 200 "ok".

    python bench/trivial_server.py [--port 0]

Prints ``URL http://127.0.0.1:PORT`` once listening, serves keep-alive connections until
SIGTERM. It parses nothing but the blank line ending each request head (requests without a
body only), so it costs the machine far less CPU per request than the demo server: what a
generator benchmark on a 2-core machine needs, where the server shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
END = b"\r\n\r\n"


class Canned(asyncio.Protocol):
    """Answers every complete request head on the connection with :data:`RESPONSE`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.pending = transport, b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        n = self.pending.count(END)
        if n:
            self.pending = self.pending[self.pending.rfind(END) + len(END) :]
            self.transport.write(RESPONSE * n)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Canned, "127.0.0.1", port, backlog=1024)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print(f"URL http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    asyncio.run(serve(ap.parse_args().port))


if __name__ == "__main__":
    main()
