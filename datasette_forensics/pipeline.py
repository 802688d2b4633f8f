"""Reading and parsing on the second core: a chunk producer run in a forked child.

An import has two halves. Reading, decoding, parsing and hashing lines is pure
Python; storing them is SQLite's work on the one write connection. Run in one
process they take turns, so on a machine with two or more cores the producer of
chunks runs in a forked child process and sends each finished chunk to the
importer through a pipe, while the importer stores the chunk before it.

The child never touches the database: it inherits the importer's state when it
forks (the open input, the dictionaries' caches, whose ids never change), reads,
and sends. It ignores Ctrl-C, which the importer handles (marking the batch
interrupted), and it exits when the importer stops reading or dies, as its next
send then fails. At most one chunk waits in each process, so memory stays
bounded by the chunk size.

``FORENSICS_PARSE_PROCESS`` chooses: ``auto`` (the default: a child for inputs of
MIN_BYTES or more, or of unknown size, when there is more than one core),
``always`` or ``never``.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Callable, Generator, Iterator

from .errors import ForensicsError
from .processes import FORK_LOCK
from .readers import DamagedInput

# Below this (some 30,000 lines of a combined log, a second or two of work) an
# import stays in one process: there is little for a second core to win.
MIN_BYTES = 8 << 20

# A producer is called with in_child (True in the child process) and returns a
# generator of chunks; what the generator returns becomes Chunks.end. When the
# generator resumes after yielding a chunk, every chunk before that one is stored,
# in the child as here (see ingest.ChunkReader.resume).
Producer = Callable[[bool], Generator[object, None, object]]


def use_child(size: int | None) -> bool:
    """Whether to produce an input's chunks in a child process (see the module doc)."""
    mode = os.environ.get("FORENSICS_PARSE_PROCESS", "auto")
    if mode == "never" or not hasattr(os, "fork"):
        return False
    if mode == "always":
        return True
    return (os.cpu_count() or 1) > 1 and (size is None or size >= MIN_BYTES)


class Chunks:
    """The chunks of a producer, made here or in a child; ``end`` is what it returned.

    DamagedInput raised by the producer reaches the iterating loop, from the
    child as well, after every chunk made before it. The child starts at once.
    """

    def __init__(self, produce: Producer, in_child: bool, name: str):
        self.end = None
        # Work the consumer may do while the next chunk is not there yet: called until
        # it returns False or the chunk comes (a child only; None: nothing).
        self.idle: Callable[[], bool] | None = None
        self.in_child = in_child
        self._child: tuple[int, Connection, int] | None = None
        if in_child:
            try:
                self._child = self._fork(produce)
            except OSError:  # no process to spare (EAGAIN, ENOMEM): read here instead
                self.in_child = False
        self._iterator = self._receive(name) if self.in_child else self._here(produce)

    def __iter__(self) -> Iterator:
        return self._iterator

    def close(self) -> None:
        """Stop the producer, and end and reap its child: call it whatever happened."""
        self._iterator.close()
        if self._child is not None:
            pid, receive, stored = self._child
            self._child = None
            receive.close()
            os.close(stored)
            try:
                os.kill(pid, signal.SIGKILL)  # a zombie already, when it finished
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)

    def _here(self, produce: Producer) -> Iterator:
        self.end = yield from produce(False)

    @staticmethod
    def _fork(produce: Producer) -> tuple[int, Connection, int]:
        """Start the child: chunks come back through one pipe, "stored" goes to it through another."""
        read_fd, write_fd = os.pipe()
        stored_read, stored_write = os.pipe()
        try:
            with FORK_LOCK:  # no thread of this process is inside SQLite as it forks
                pid = os.fork()
        except OSError:
            for fd in (read_fd, write_fd, stored_read, stored_write):
                os.close(fd)
            raise
        if pid == 0:  # the child: produce, send, and leave without running any cleanup
            code = 1
            try:
                os.close(read_fd)
                os.close(stored_write)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _serve(produce, Connection(write_fd, readable=False), stored_read)
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        os.close(stored_read)
        return pid, Connection(read_fd, writable=False), stored_write

    def _receive(self, name: str) -> Iterator:
        pid, receive, stored = self._child
        while True:
            while self.idle is not None and not receive.poll() and self.idle():
                pass
            try:
                message = receive.recv()
            except EOFError:
                _, status = os.waitpid(pid, 0)
                self._child = None
                receive.close()
                raise ForensicsError(
                    f"Reading {name} stopped unexpectedly (the parsing process ended with "
                    f"status {os.waitstatus_to_exitcode(status)})."
                ) from None
            kind = message[0]
            if kind == "chunk":
                chunk, message = message[1], None  # hold no chunk while the next one comes
                yield chunk
                chunk = None
                try:
                    os.write(stored, b".")  # the loop asks for the next chunk: this one is stored
                except BrokenPipeError:
                    pass  # the child has finished (or died): the next message says which
            elif kind == "end":
                self.end = message[1]
                return
            elif kind == "damaged":
                raise DamagedInput(message[1], message[2])
            else:
                raise ForensicsError(f"Reading {name} failed: {message[1]}.")


def _serve(produce: Producer, send: Connection, stored_fd: int) -> None:
    """The child's loop: every chunk, then how the producer ended.

    A chunk is sent once the one before it is stored, so the producer, resuming,
    finds every earlier chunk in the database; it is pickled before the wait, so
    the importer gets it the moment it asks.
    """
    sent = stored = 0
    try:
        try:
            chunks = produce(True)
            while True:
                data = ForkingPickler.dumps(("chunk", next(chunks)))
                while stored < sent:
                    news = os.read(stored_fd, 4096)
                    if not news:
                        raise BrokenPipeError("the importer stopped")
                    stored += len(news)
                send.send_bytes(data)
                sent += 1
        except StopIteration as stop:
            send.send(("end", stop.value))
        except DamagedInput as damage:
            send.send(("damaged", damage.last_complete_line, str(damage)))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:
            send.send(("error", f"{type(exc).__name__}: {exc}"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the importer stopped reading (interrupted, or killed)
    finally:
        send.close()
