"""A TCP proxy in front of a real service, cut and restored to simulate the service restarting.

Shared services on this machine (PostgreSQL, RabbitMQ) must not be restarted by a benchmark;
servers are pointed at this proxy instead, and `cut()` refuses and drops every connection
as a restarting service does.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import struct

# The ports `free_port` handed out in this process: none is handed out twice.
_handed_out: set[int] = set()


def free_port() -> int:
    """A local port nothing listens on now, for a server (or a proxy) to bind later.

    The port is free only until someone binds it: a proxy holds none while it is cut, a
    server none until it has started. Meanwhile the kernel could hand it out again, to this
    process (a second server of the same test) or to another of pytest-xdist's workers,
    whose server then took it: a restore failed "address in use", or a client meant to find
    nothing there talked to another test's server. So a port is never handed out twice in a
    process, and each of pytest-xdist's workers takes only ports of its own share (port // 2
    modulo the number of workers: Linux gives bind() odd ports, connect() even ones)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    shares = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "") or 1)
    share = int(worker[2:]) if worker[:2] == "gw" and worker[2:].isdigit() else 0
    for _ in range(100 * shares):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (port // 2) % shares == share % shares and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError(f"no free local port of share {share} of {shares} found")


# SO_ATTACH_FILTER (Linux), and a classic BPF program of one instruction: "ret #0", keep
# nothing of the packet.
_SO_ATTACH_FILTER = 26
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)


def drop_arriving_packets(sock: socket.socket) -> None:
    """The kernel drops every packet arriving for `sock` before TCP sees it: nothing is
    acknowledged, as when the network between the two ends lost the connection. A socket
    filter needs no privilege; the kernel copies the program."""
    program = ctypes.create_string_buffer(_DROP_ALL)
    sock.setsockopt(
        socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("HL", 1, ctypes.addressof(program))
    )


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target` while up; `cut()` drops everything."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Connections the network forgot (`forget_open_connections`): what is sent on them
        # goes nowhere, either way, and nobody is told.
        self._forgotten: set[asyncio.StreamWriter] = set()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def restore(self) -> None:
        """Accept and forward connections (again)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def cut(self) -> None:
        """Refuse new connections and close every open one, both ways."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._writers.clear()

    async def set_away(self, away: bool) -> None:
        """The service goes away (`cut`) or comes back (`restore`)."""
        if away:
            await self.cut()
        else:
            await self.restore()

    def forget_open_connections(self) -> None:
        """The connections open now go dead without a word, as a NAT gateway or a load
        balancer forgets an idle one; new connections are forwarded as before. What arrives
        on them is dropped by this side's kernel too (no acknowledgement, keepalive probes
        unanswered), so the client's TCP sees a peer that vanished, as it would."""
        for writer in self._writers:
            if writer not in self._forgotten:
                drop_arriving_packets(writer.transport.get_extra_info("socket"))
        self._forgotten.update(self._writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, writer, upstream=False)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        """Passes one chunk on (`upstream`: from the client towards the service); False ends
        this direction. A subclass injects faults here."""
        writer.write(data)
        await writer.drain()
        return True

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._forgotten:
                    continue
                if not await self.forward(data, writer, upstream):
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._forgotten.discard(writer)
            writer.close()


class SilentProxy(TcpProxy):
    """Forwards while `silent` is False; while True, passes nothing on, either way: a
    service that took the connection and stopped answering (hung, a dead host behind a
    load balancer, packets dropped)."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self._answering = asyncio.Event()
        self._answering.set()

    @property
    def silent(self) -> bool:
        return not self._answering.is_set()

    @silent.setter
    def silent(self, value: bool) -> None:
        if value:
            self._answering.clear()
        else:
            self._answering.set()

    async def set_away(self, away: bool) -> None:
        """The service falls silent or answers again; connections stay open."""
        self.silent = away

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        await self._answering.wait()
        return await super().forward(data, writer, upstream)


class SilentFrom(SilentProxy):
    """A SilentProxy that falls silent by itself once a client sends `trigger` (which is not
    passed on): a database that stops answering in the middle of a given piece of work."""

    def __init__(self, target: tuple[str, int], trigger: bytes) -> None:
        super().__init__(target)
        self.trigger = trigger
        self.triggered = asyncio.Event()

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        if upstream and self.trigger in data:
            self.silent = True
            self.triggered.set()
        return await super().forward(data, writer, upstream)
