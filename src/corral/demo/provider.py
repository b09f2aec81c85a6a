"""A simulated LLM provider, shared over HTTP by every process that calls it.

It behaves like a rate-limited API: each completion takes a latency drawn from a log-normal
distribution (a long right tail, as real ones have); above ``concurrency`` calls in flight or
``rpm`` accepted requests in the last minute it answers ``429`` with ``Retry-After`` at once.

    python -m corral.demo.provider --port 8790 --concurrency 8 --rpm 600
    POST /v1/complete {"agent": "...", "tokens": 300}  ->  200 {"tokens": 300, "latency": ...}
    GET  /stats                                        ->  accepted, throttled, peak in flight
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class ProviderLimits:
    concurrency: int = 8
    rpm: int = 600
    #: median latency in seconds, and the log-normal shape (sigma)
    latency_median: float = 0.2
    latency_sigma: float = 0.5
    seed: int | None = None


@dataclass
class ProviderState:
    limits: ProviderLimits
    in_flight: int = 0
    peak_in_flight: int = 0
    accepted: int = 0
    throttled: int = 0
    tokens: int = 0
    window: deque[float] = field(default_factory=deque)
    rng: random.Random = field(default_factory=random.Random)

    def admit(self, now: float) -> float | None:
        """None when the call is admitted, else the seconds to wait before retrying."""
        while self.window and self.window[0] <= now - 60.0:
            self.window.popleft()
        if len(self.window) >= self.limits.rpm:
            return max(0.01, self.window[0] + 60.0 - now)
        if self.in_flight >= self.limits.concurrency:
            return 0.05
        self.window.append(now)
        return None

    def latency(self) -> float:
        median, sigma = self.limits.latency_median, self.limits.latency_sigma
        return min(10 * median, self.rng.lognormvariate(0.0, sigma) * median)


def create_provider(limits: ProviderLimits | None = None) -> Starlette:
    state = ProviderState(limits or ProviderLimits())
    if state.limits.seed is not None:
        state.rng.seed(state.limits.seed)

    async def complete(request: Request) -> JSONResponse:
        body = await request.json()
        tokens = int(body.get("tokens", 100))
        retry_after = state.admit(time.monotonic())
        if retry_after is not None:
            state.throttled += 1
            return JSONResponse(
                {"error": {"code": "rate_limited", "message": "slow down"}},
                status_code=429,
                headers={"Retry-After": f"{retry_after:.3f}"},
            )
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            latency = state.latency()
            await asyncio.sleep(latency)
        finally:
            state.in_flight -= 1
        state.accepted += 1
        state.tokens += tokens
        return JSONResponse({"tokens": tokens, "latency": latency})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "accepted": state.accepted,
                "throttled": state.throttled,
                "tokens": state.tokens,
                "in_flight": state.in_flight,
                "peak_in_flight": state.peak_in_flight,
                "concurrency": state.limits.concurrency,
                "rpm": state.limits.rpm,
            }
        )

    app = Starlette(
        routes=[
            Route("/v1/complete", complete, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )
    app.state.provider = state
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.2, help="median seconds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    limits = ProviderLimits(args.concurrency, args.rpm, args.latency, seed=args.seed)
    uvicorn.run(create_provider(limits), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
