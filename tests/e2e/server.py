"""Real ``corral serve`` processes for the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e.service_app:app"


def corral(*args: str, url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``corral`` CLI command against ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args, "--db", url],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def create_key(url: str, tenant: str, *, admin: bool = False) -> str:
    out = corral("keys", "create", "--tenant", tenant, *(["--admin"] if admin else []), url=url)
    return out.stdout.strip()


class ServeProcess:
    def __init__(self, url: str, log: Path, args: Sequence[str] = ()) -> None:
        self.log = log
        self._stderr = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli.main",
                "serve",
                "--app",
                APP,
                "--db",
                url,
                "--port",
                "0",
                "--poll-interval",
                "0.05",
                *args,
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.url = self._wait_listening(timeout=60)

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", self.log.read_text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"corral serve exited {self.proc.returncode}:\n{self.log.read_text()}"
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"corral serve did not start:\n{self.log.read_text()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


@contextmanager
def serve(url: str, log: Path, args: Sequence[str] = ()) -> Iterator[ServeProcess]:
    server = ServeProcess(url, log, args)
    try:
        yield server
    finally:
        server.stop()
