"""Worker processes for the integration tests: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(
        self,
        url: str,
        log: Path,
        *,
        app: str = "tests.integration.workload:app",
        concurrency: int = 8,
        ttl: float = 2.0,
        drain_timeout: float = 5.0,
        poll_interval: float = 0.2,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``options``: more ``corral worker`` options; ``env``: more environment."""
        environment = dict(
            os.environ,
            CORRAL_DATABASE_URL=url,
            CORRAL_TEST_LOG=str(log),
            CORRAL_TEST_TTL=str(ttl),
            PYTHONPATH=str(ROOT),
            **(env or {}),
        )
        self.stderr_path = log.with_name(f"{log.stem}-worker-{id(self):x}.err")
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli.main",
                "worker",
                app,
                "--concurrency",
                str(concurrency),
                "--lease-ttl",
                str(ttl),
                "--drain-timeout",
                str(drain_timeout),
                "--poll-interval",
                str(poll_interval),
                *options,
            ],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text()
