"""Wake-ups across processes for one SQLite file: SQLite has no LISTEN/NOTIFY.

A process whose worker waits for work binds a Unix datagram socket in ``<database>-wake/``,
beside the database file and its ``-wal`` and ``-shm`` files (so the file's directory, which
SQLite needs writable anyway, decides who may wake whom). After a commit that may have made
work, a process sends one byte to every other socket there; a waiting worker wakes at once
instead of at its next look at ``PRAGMA data_version``.

The wake-ups are hints. Polling stays (every 50 ms while a process reads its socket, every 5 ms
when it cannot), so a lost datagram, a full socket buffer, a path too long for a Unix socket,
a process that cannot reach the directory or a platform without Unix sockets only costs the
poll's delay. A socket left behind by a killed process
refuses datagrams; the next sender, or the next process to close the store, removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("corral.store")

#: seconds a sender keeps its list of the other processes' sockets, at most (it re-reads it
#: at once when the directory's mtime moves)
PEERS_TTL = 1.0
#: seconds before binding a socket is tried again after it failed (the directory removed by
#: another process between its mkdir and bind; a directory this process may not write)
LISTEN_RETRY = 1.0
#: the payload of a plain wake-up (a commit that may have made work)
WAKE = b"w"
#: the largest payload sent: far below any platform's datagram limit
MAX_PAYLOAD = 8192
#: the longest socket path AF_UNIX takes (sun_path is 108 bytes on Linux, 104 on macOS and
#: the BSDs, with the terminating NUL)
MAX_PATH = 107 if sys.platform.startswith("linux") else 103


def wake_directory(db_path: str) -> Path:
    """Where the sockets of the processes using ``db_path`` are (the same for every path
    that names the file: symbolic links resolved)."""
    return Path(os.path.realpath(db_path) + "-wake")


class WakeChannel:
    """One process's end: ``notify()`` the others; ``listen()`` to be woken by them."""

    def __init__(self, db_path: str) -> None:
        self._dir = wake_directory(db_path)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._own: str | None = None
        self._peers: list[str] = []
        self._peers_read_at = float("-inf")
        self._dir_changed = -1
        self._listen_failed_at = float("-inf")

    @staticmethod
    def supported() -> bool:
        return hasattr(socket, "AF_UNIX")

    def listen(self) -> socket.socket | None:
        """This process's socket, bound on first call; None if it cannot be (then the
        caller polls, as without wake-ups)."""
        if self._listener is not None:
            return self._listener
        # every idle wait asks: a socket that cannot be bound is not tried on each of them
        if time.monotonic() - self._listen_failed_at < LISTEN_RETRY:
            return None
        path = self._dir / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        if len(os.fsencode(path)) > MAX_PATH:
            self._listen_failed_at = float("inf")  # the path stays as long: never
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._dir.mkdir(exist_ok=True)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._listen_failed_at = time.monotonic()
            log.debug("no SQLite wake-up socket in %s (polling only): %s", self._dir, exc)
            return None
        self._listener, self._own = sock, str(path)
        return sock

    def drain(self) -> list[bytes]:
        """Read every wake-up waiting on this process's socket; their payloads."""
        payloads: list[bytes] = []
        if self._listener is None:
            return payloads
        with contextlib.suppress(OSError):  # BlockingIOError: none left
            while True:
                payloads.append(self._listener.recv(MAX_PAYLOAD))
        return payloads

    def notify(self, payload: bytes = WAKE, *, fresh: bool = False) -> None:
        """Wake the other processes' waiters (best effort, never raises). ``payload``: what
        they read (at most ``MAX_PAYLOAD`` bytes). ``fresh``: list their sockets anew rather
        than trust the list of the last second."""
        now = time.monotonic()
        try:
            # a socket bound or removed changes the directory's mtime: the list is re-read
            # then (and every PEERS_TTL anyway, for a file system with a coarse mtime)
            changed = os.stat(self._dir).st_mtime_ns
        except OSError:
            self._peers = []
            return
        if fresh or changed != self._dir_changed or now - self._peers_read_at > PEERS_TTL:
            self._peers_read_at, self._dir_changed = now, changed
            try:
                self._peers = [
                    entry.path
                    for entry in os.scandir(self._dir)
                    if entry.name.endswith(".sock") and entry.path != self._own
                ]
            except OSError:
                self._peers = []
        if not self._peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for peer in list(self._peers):
            try:
                self._sender.sendto(payload, peer)
            except (ConnectionRefusedError, FileNotFoundError):
                # its process is gone (killed: it never removed its socket)
                self._peers.remove(peer)
                with contextlib.suppress(OSError):
                    os.unlink(peer)
                if not self._peers and self._own is None:
                    with contextlib.suppress(OSError):
                        self._dir.rmdir()  # the last one: leave no empty directory behind
            except OSError:
                pass  # a full buffer: it has wake-ups to read already; or not ours to reach

    def close(self) -> None:
        # a last round: a spurious wake-up costs a waiter one look, and it finds the sockets
        # of killed processes, which no later sender may come to remove
        self.notify(fresh=True)
        for sock in (self._listener, self._sender):
            if sock is not None:
                sock.close()
        if self._own is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._own)
        if not self._peers:
            with contextlib.suppress(OSError):
                self._dir.rmdir()  # fails, harmlessly, if another process's socket is left
        self._listener = self._sender = None
        self._own = None
