"""The demo's agents and the client of the simulated LLM provider.

* ``researcher`` plans a few questions (a journaled step), fans out one ``subagent`` per
  question (``ctx.spawn_many``), suspends until they end (``ctx.wait``: it holds no slot
  meanwhile), then synthesises their findings with one more LLM call.
* ``subagent`` makes a journaled "search" step and one LLM call.
* ``classify`` is the noisy tenant's small job: one LLM call.

Every LLM call goes through the app's shared resource ``llm`` (``ctx.acquire``): at most the
provider's concurrency at once and its requests per minute, across every worker. The tokens the
provider reports are charged to the run tree's budget. Should the provider still answer 429,
the call tells the shared scheduler (``report_throttled``: every process backs off), gives its
slot back and queues again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from corral.app import Corral
from corral.runs import RunContext

LLM = "llm"
#: attempts of one LLM call before its step gives up (the run is then retried by the queue)
MAX_THROTTLED = 20


class ProviderThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"provider answered 429 (retry after {retry_after:.2f}s)")
        self.retry_after = retry_after


@dataclass
class ProviderClient:
    """One HTTP connection pool to the provider, shared by every run of this process."""

    base_url: str
    client: httpx.AsyncClient | None = None
    calls: int = 0
    throttled: int = 0
    #: accepted calls by tenant (the part of the agent id before the slash)
    calls_by_tenant: dict[str, int] = field(default_factory=dict)

    async def open(self) -> None:
        if self.client is None:
            self.client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(30.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def complete(self, agent: str, tokens: int) -> dict[str, Any]:
        await self.open()
        assert self.client is not None
        self.calls += 1
        response = await self.client.post("/v1/complete", json={"agent": agent, "tokens": tokens})
        if response.status_code == 429:
            self.throttled += 1
            raise ProviderThrottled(float(response.headers.get("Retry-After", "0.1")))
        response.raise_for_status()
        tenant = agent.partition("/")[0]
        self.calls_by_tenant[tenant] = self.calls_by_tenant.get(tenant, 0) + 1
        body: dict[str, Any] = response.json()
        return body


def build_app(url: str, provider: ProviderClient, *, capacity: int, rpm: int) -> Corral:
    """The demo's app: its agents, and the provider declared as the shared resource ``llm``."""
    app = Corral(url, lease_ttl=10, max_children=8, max_depth=2)
    llm = app.shared_resource(LLM, capacity=capacity, rpm=rpm, max_waiters=10_000)

    async def call_llm(ctx: RunContext, tokens: int) -> dict[str, Any]:
        for _ in range(MAX_THROTTLED):
            async with ctx.acquire(LLM, tokens=tokens) as handle:
                try:
                    reply = await provider.complete(f"{ctx.tenant}/{ctx.agent}", tokens)
                except ProviderThrottled as throttled:
                    retry_after = throttled.retry_after
                else:
                    handle.report_usage(int(reply["tokens"]))
                    return {"tokens": int(reply["tokens"]), "latency": float(reply["latency"])}
            # the slot is given back; nobody is granted the resource until the pause is over
            await llm.report_throttled(retry_after)
            await asyncio.sleep(retry_after)
        raise ProviderThrottled(0.0)

    async def search(question: str) -> list[str]:
        await asyncio.sleep(0.02)  # a cheap local tool call (an index lookup)
        words = question.split()
        return [f"source on {w}" for w in words[-3:]]

    async def plan(topic: str, fanout: int) -> list[str]:
        return [f"{topic}: angle {i + 1} of {fanout}" for i in range(fanout)]

    @app.agent("researcher")
    async def researcher(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        topic = str(input["topic"])
        tokens = [int(t) for t in input["tokens"]]
        questions: list[str] = await ctx.step("plan", plan, topic, len(tokens) - 1)
        children = await ctx.spawn_many(
            {"agent": "subagent", "input": {"question": q, "tokens": t}}
            for q, t in zip(questions, tokens, strict=False)
        )
        findings = await ctx.wait(children)
        summary = await ctx.step("synthesise", call_llm, ctx, tokens[-1])
        await ctx.emit("report", {"topic": topic, "findings": len(findings)})
        used = summary["tokens"] + sum(int(f["tokens"]) for f in findings)
        return {"topic": topic, "findings": len(findings), "tokens": used}

    @app.agent("subagent")
    async def subagent(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        sources = await ctx.step("search", search, str(input["question"]))
        answer = await ctx.step("answer", call_llm, ctx, int(input["tokens"]))
        return {"question": input["question"], "sources": len(sources), "tokens": answer["tokens"]}

    @app.agent("classify")
    async def classify(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        answer = await ctx.step("label", call_llm, ctx, int(input["tokens"]))
        return {"item": input["item"], "tokens": answer["tokens"]}

    return app
