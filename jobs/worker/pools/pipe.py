"""The line between the prefork parent and one of its children: length-prefixed frames over a
socket pair, several written with one system call and all that have arrived read with one.

A job's hand-over is a few small frames (the delivery there, its outcome back), and each
read or write a system call, which may wake the other side; :class:`multiprocessing`'s
``Connection`` spends two reads on every frame. The parent here writes the deliveries it
hands a child in one turn together (:meth:`Pipe.put`, then :meth:`Pipe.flush`), and either
side takes whatever the other has sent in one read (:meth:`Pipe.frames`).
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("!I")  # a frame's length, before it
READ_SIZE = 1 << 18


class Pipe:
    """One end of a parent-child socket pair. Not thread-safe: the pool writes under its
    lock, and each end is read by one thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._in = bytearray()
        self._out: list[bytes] = []

    @classmethod
    def pair(cls) -> tuple[Pipe, Pipe]:
        one, other = socket.socketpair()
        return cls(one), cls(other)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def put(self, data: bytes) -> None:
        """Add a frame to those the next :meth:`flush` writes."""
        self._out += (HEADER.pack(len(data)), data)

    def flush(self) -> None:
        """Write the frames put since the last flush, in order, with one call (OSError if
        the other end is gone: they are dropped)."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        """Write ``data`` as a frame now, behind those put before it."""
        self.put(data)
        self.flush()

    def frames(self, block: bool = True) -> list[bytes]:
        """The whole frames that have arrived, in order: at least one if ``block`` (waiting
        for it), else possibly none. EOFError once the other end is closed and every frame
        it sent has been returned."""
        while True:
            frames = self._parse()
            if frames:
                return frames
            try:
                chunk = self.sock.recv(READ_SIZE, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return []
            if not chunk:
                raise EOFError
            self._in += chunk

    def _parse(self) -> list[bytes]:
        buffer, frames, start = self._in, [], 0
        size = len(buffer)
        while size - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + length
            if end > size:
                break
            frames.append(bytes(buffer[start + HEADER.size:end]))
            start = end
        if start:
            del buffer[:start]
        return frames
