"""``corral demo``'s script: the service (HTTP API, dashboard, embedded workers) and the
simulated provider in this process, three kinds of tenants, live progress, a report.

Timeline: the noisy tenant submits its burst at once; quiet tenants submit researcher runs at
a steady random rate for ``duration`` seconds. Then quiet submissions stop, the noisy tenant's
unfinished runs are cancelled (it asked for far more than its free plan drains in the time:
they are reported as cancelled, not lost), and the demo waits — at most ``drain`` seconds —
for everything in flight to end. Whatever is still unfinished then is cancelled and, if it
still has not ended a few seconds later, counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from corral.api.server import run_service
from corral.api.settings import ApiSettings
from corral.api.tokens import create_key
from corral.app import Corral
from corral.demo.agents import ProviderClient, build_app
from corral.demo.provider import ProviderLimits, ProviderState, create_provider
from corral.demo.report import TenantRole, build_report
from corral.demo.servers import InProcessServer
from corral.models import Run

QUIET_NAMES = ("acme", "globex", "umbrella", "hooli", "stark", "wayne", "tyrell", "wonka")
NOISY_NAME = "initech"
#: a researcher fans out to this many sub-agents
FANOUT = 3
#: budgets, in tokens: ample for the work each run does (so a run fails only on a real error)
RESEARCHER_BUDGET = 8_000.0
NOISY_BUDGET = 600.0


@dataclass(frozen=True)
class DemoOptions:
    duration: float = 60.0
    quiet_tenants: int = 2
    noisy_runs: int = 1000
    #: researcher runs each quiet tenant submits per second (Poisson arrivals)
    quiet_rate: float = 0.5
    workers: int = 3
    concurrency: int = 8
    provider_concurrency: int = 6
    provider_rpm: int = 600
    latency_median: float = 0.25
    drain: float = 20.0
    db: str | None = None
    host: str = "127.0.0.1"
    keep_serving: bool = False
    seed: int | None = None


def redact(url: str) -> str:
    """The database URL without its password, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class DemoInterrupted(Exception):
    """The service stopped before the demo ended (Ctrl-C)."""


def tenant_roles(quiet: int) -> list[TenantRole]:
    roles = [
        TenantRole(QUIET_NAMES[i], "pro" if i % 2 == 0 else "free", noisy=False)
        for i in range(quiet)
    ]
    return [*roles, TenantRole(NOISY_NAME, "free", noisy=True)]


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.o = options
        self.console = console
        self.rng = random.Random(options.seed)
        self.roles = tenant_roles(options.quiet_tenants)
        #: the demo's own database directory, removed when it ends (none with --db)
        self.tmpdir: Path | None = None
        if options.db:
            self.url = options.db
        else:
            self.tmpdir = Path(tempfile.mkdtemp(prefix="corral-demo-"))
            self.url = f"sqlite:///{self.tmpdir / 'corral.db'}"
        limits = ProviderLimits(
            concurrency=options.provider_concurrency,
            rpm=options.provider_rpm,
            latency_median=options.latency_median,
            latency_sigma=0.6,
            seed=options.seed,
        )
        self.provider_app = create_provider(limits)
        self.provider_state: ProviderState = self.provider_app.state.provider
        self.provider_server = InProcessServer(
            self.provider_app, host=options.host, name="provider"
        )
        self.client = ProviderClient("http://unset")
        self.app: Corral = build_app(
            self.url,
            self.client,
            capacity=options.provider_concurrency,
            rpm=options.provider_rpm,
        )
        self.roots: dict[str, str] = {}  # run id -> tenant
        self.started = time.time()
        self.dashboard = ""
        self.api_url = ""
        self.phase = "starting"

    # -- the whole demo ------------------------------------------------------------------------

    async def run(
        self, on_report: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        """The whole demo; ``on_report`` gets the report before ``--keep-serving`` waits."""
        provider_url = await self.provider_server.start()
        self.client.base_url = provider_url
        await self.client.open()
        service: asyncio.Task[None] | None = None
        workers = []
        try:
            await self.app.open()
            self.started = self.app.store.clock()
            await self._setup_tenants()
            _, token = await create_key(self.app.store, "demo", admin=True, label="corral demo")
            workers = [
                self.app.worker(
                    concurrency=self.o.concurrency, poll_interval=0.05, drain_timeout=10.0
                )
                for _ in range(self.o.workers)
            ]
            listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            settings = ApiSettings(slots_per_worker=self.o.concurrency)
            service = asyncio.create_task(
                run_service(
                    self.app,
                    settings,
                    workers,
                    host=self.o.host,
                    port=0,
                    on_listening=listening.set_result,
                ),
                name="corral-demo-service",
            )
            started: set[asyncio.Future[Any]] = {service, listening}
            await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
            if not listening.done():
                await service  # raises why it could not start
                raise DemoInterrupted
            self.api_url = listening.result()
            self.dashboard = f"{self.api_url}/?key={token}"
            self.console.print(
                f"[bold]corral demo[/bold] on {redact(self.url)}\n"
                f"  service   {self.api_url}  ({self.o.workers} workers x "
                f"{self.o.concurrency} slots)\n"
                f"  dashboard [link={self.dashboard}]{self.dashboard}[/link]\n"
                f"  provider  {provider_url}  (simulated LLM: {self.o.provider_concurrency} "
                f"concurrent, {self.o.provider_rpm} rpm, 429 above)"
            )
            interrupted = await self._traffic(service)
            if interrupted:
                # the workers are gone: end what they left (queued, waiting, released runs)
                self.console.print("interrupted: cancelling the demo's unfinished runs")
                await self._cancel(self.roots.items())
            report = await self._report(interrupted)
            if on_report is not None:
                await on_report(report)
            if self.o.keep_serving and not service.done():
                self.console.print(f"\nstill serving: dashboard {self.dashboard}  (Ctrl-C to stop)")
                await service
            return report
        finally:
            for w in workers:
                w.stop()
            if service is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await service
            await self.provider_server.stop()
            await self.client.close()
            await self.app.close()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    async def _setup_tenants(self) -> None:
        for role in self.roles:
            await self.app.set_tenant(role.name, plan=role.plan)

    # -- traffic -------------------------------------------------------------------------------

    async def _traffic(self, service: asyncio.Task[None]) -> bool:
        """Submit, show progress, stop, drain. True when interrupted (the service stopped)."""
        stop_submitting = asyncio.Event()
        t0 = time.monotonic()
        noisy = next(r for r in self.roles if r.noisy)
        burst = [
            {
                "agent": "classify",
                "tenant": noisy.name,
                "input": {"item": i, "tokens": self.rng.randint(80, 250)},
                "budget": NOISY_BUDGET,
            }
            for i in range(self.o.noisy_runs)
        ]
        for run_id in await self.app.submit_many(burst):
            self.roots[run_id] = noisy.name
        submitters = [
            asyncio.create_task(self._quiet(role, stop_submitting), name=f"demo-{role.name}")
            for role in self.roles
            if not role.noisy
        ]
        display = _Display(self)
        try:
            with display.live():
                self.phase = "submitting"
                while time.monotonic() - t0 < self.o.duration:
                    if service.done():
                        return True
                    await display.refresh(time.monotonic() - t0)
                    await asyncio.sleep(0.5)
                stop_submitting.set()
                await asyncio.gather(*submitters)
                self.phase = "cancelling the noisy tenant's backlog"
                await display.refresh(time.monotonic() - t0)
                await self._cancel(t for t in self.roots.items() if t[1] == noisy.name)
                self.phase = "draining"
                deadline = time.monotonic() + self.o.drain
                while time.monotonic() < deadline:
                    if service.done():
                        return True
                    pending = await display.refresh(time.monotonic() - t0)
                    if pending == 0:
                        break
                    await asyncio.sleep(0.25)
                else:
                    self.phase = "cancelling what did not finish in time"
                    await self._cancel(self.roots.items())
                    end = time.monotonic() + 5.0
                    while time.monotonic() < end:
                        if not await display.refresh(time.monotonic() - t0):
                            break
                        await asyncio.sleep(0.25)
                self.phase = "done"
                await display.refresh(time.monotonic() - t0)
        finally:
            stop_submitting.set()
            for task in submitters:
                task.cancel()
            await asyncio.gather(*submitters, return_exceptions=True)
        return False

    async def _quiet(self, role: TenantRole, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            tokens = [self.rng.randint(300, 1200) for _ in range(FANOUT + 1)]
            run_id = await self.app.submit(
                "researcher",
                {"topic": f"{role.name} question {n}", "tokens": tokens},
                tenant=role.name,
                budget=RESEARCHER_BUDGET,
            )
            self.roots[run_id] = role.name
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.o.quiet_rate))

    async def _cancel(self, items: Any) -> None:
        ids = [run_id for run_id, _ in items]
        for outcome in await self._outcomes(ids):
            if not outcome[1]:
                await self.app.cancel(outcome[0])

    async def _outcomes(self, ids: Sequence[str]) -> list[tuple[str, bool, str]]:
        """(run id, terminal, status) for each id."""
        out: list[tuple[str, bool, str]] = []
        for i in range(0, len(ids), 500):
            for o in await self.app.store.outcomes(ids[i : i + 500]):
                out.append((o.run_id, o.status.terminal, o.status.value))
        return out

    # -- the report ----------------------------------------------------------------------------

    async def _runs(self) -> list[Run]:
        """Every run of the demo's tenants created since it started, children included."""
        runs: list[Run] = []
        for role in self.roles:
            async for page in self.app.iter_runs(tenant=role.name):
                fresh = [r for r in page if r.created_at >= self.started - 1.0]
                runs.extend(fresh)
                if len(fresh) < len(page):
                    break  # newest first: the rest is older still
        return runs

    async def _report(self, interrupted: bool) -> dict[str, Any]:
        runs = await self._runs()
        state = self.provider_state
        return build_report(
            self.roles,
            runs,
            now=self.app.store.clock(),
            provider={
                "accepted": state.accepted,
                "throttled": state.throttled,
                "tokens": state.tokens,
                "peak_in_flight": state.peak_in_flight,
                "concurrency": state.limits.concurrency,
                "rpm": state.limits.rpm,
            },
            calls_by_tenant=dict(self.client.calls_by_tenant),
            client_throttled=self.client.throttled,
            meta={
                "duration": self.o.duration,
                "elapsed": self.app.store.clock() - self.started,
                "db": redact(self.url),
                "dashboard": self.api_url,
                "interrupted": interrupted,
                "workers": self.o.workers,
                "concurrency": self.o.concurrency,
                "noisy_runs": self.o.noisy_runs,
                "shared_resource": {
                    "name": "llm",
                    "capacity": self.o.provider_concurrency,
                    "rpm": self.o.provider_rpm,
                },
            },
        )


class _Display:
    """Live per-tenant progress: a refreshing table on a terminal, a line every few seconds
    otherwise (CI logs)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.console = demo.console
        self._live: Live | None = None
        self._last_line = -10.0

    @contextlib.contextmanager
    def live(self) -> Any:
        if not self.console.is_terminal:
            yield
            return
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    async def refresh(self, elapsed: float) -> int:
        """Redraw; returns how many submitted runs are not finished yet."""
        demo = self.demo
        stats = await demo.app.stats()
        ids = list(demo.roots)
        done: dict[str, int] = {}
        submitted: dict[str, int] = {}
        pending = 0
        for run_id, terminal, _ in await demo._outcomes(ids):
            tenant = demo.roots[run_id]
            submitted[tenant] = submitted.get(tenant, 0) + 1
            if terminal:
                done[tenant] = done.get(tenant, 0) + 1
            else:
                pending += 1
        state = demo.provider_state
        if self._live is not None:
            table = Table(
                "tenant",
                "plan",
                "submitted",
                "queued",
                "in flight",
                "cap",
                "done",
                title=f"{demo.phase}   {elapsed:5.1f}s / {demo.o.duration:.0f}s",
                title_justify="left",
            )
            for role in demo.roles:
                t = stats.tenant(role.name)
                table.add_row(
                    role.name + (" (noisy)" if role.noisy else ""),
                    role.plan,
                    str(submitted.get(role.name, 0)),
                    str(t.queued if t else 0),
                    str(t.in_flight if t else 0),
                    str(t.cap if t and t.cap is not None else "-"),
                    str(done.get(role.name, 0)),
                )
            line = Text(
                f"provider: {state.accepted} calls, {state.throttled} x 429, "
                f"{state.in_flight} in flight (peak {state.peak_in_flight}/"
                f"{state.limits.concurrency})   runs waiting on children: {stats.waiting}"
            )
            self._live.update(Group(table, line))
        elif elapsed - self._last_line >= 5.0 or demo.phase == "done":
            self._last_line = elapsed
            parts = [
                f"{r.name} {done.get(r.name, 0)}/{submitted.get(r.name, 0)}" for r in demo.roles
            ]
            self.console.print(
                f"[{elapsed:5.1f}s] {demo.phase}: done/submitted "
                + ", ".join(parts)
                + f"; provider {state.accepted} calls, {state.throttled} x 429",
                highlight=False,
            )
        return pending
