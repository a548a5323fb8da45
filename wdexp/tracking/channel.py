"""The pipe between the two processes: length-prefixed pickles over non-blocking file descriptors.

``multiprocessing.connection`` blocks on a full pipe, and a signal that interrupts it mid-message
leaves half a message behind. Here a message is queued whole, written as the pipe takes it, and
every wait is a ``select`` a signal can interrupt: SIGTERM stops the training process within a
fraction of a second in any state, and the bytes still queued are sent by whoever writes next.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
from typing import Any

from wdexp.signals import critical

HEADER = struct.Struct("!Q")
SLICE_S = 0.2  # the longest a wait sleeps before looking at its deadline again
F_SETPIPE_SZ = 1031  # Linux: a larger pipe lets training run ahead of a slow store
PIPE_BYTES = 1 << 20


class Closed(EOFError):
    """The other process closed its end (it exited or was killed)."""


def widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, OSError):  # not Linux, or over the system's limit: the default will do
        pass


class Sender:
    """Queues whole messages and writes them as the pipe drains."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._queued = bytearray()

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def put(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with critical():  # the header and its body go in together
            self._queued += HEADER.pack(len(data)) + data

    def drain(self, deadline: float | None = None) -> bool:
        """Write queued bytes until none are left (True) or ``deadline`` (monotonic) passes;
        ``None``: only what the pipe takes now."""
        while self._queued:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                select.select([], [self.fd], [], min(remaining, SLICE_S))
            with critical():  # the bytes written leave the queue in the same breath
                try:
                    written = os.write(self.fd, self._queued)
                except BlockingIOError:
                    written = 0
                except (BrokenPipeError, ConnectionResetError):
                    raise Closed("the other process closed the pipe") from None
                del self._queued[:written]
            if deadline is None and not written:
                return False
        return True

    def close(self) -> None:
        os.close(self.fd)


class Receiver:
    """Whole messages from the pipe, as many as have arrived."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buffer = bytearray()
        self.closed = False

    def wait(self, timeout: float) -> bool:
        """Until something can be read or ``timeout`` seconds passed; interruptible."""
        if self.closed:
            return True
        return bool(select.select([self.fd], [], [], timeout)[0])

    def take(self) -> list[Any]:
        while not self.closed:
            with critical():  # bytes read are bytes kept
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    break
                if chunk:
                    self._buffer += chunk
                else:
                    self.closed = True
        messages = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + size:
                break
            messages.append(pickle.loads(self._buffer[HEADER.size:HEADER.size + size]))
            del self._buffer[:HEADER.size + size]
        return messages

    def close(self) -> None:
        os.close(self.fd)
