"""Agents for the durable-execution integration tests, run by worker subprocesses
(``corral worker tests.integration.durable_workload:app``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from corral import BudgetExceeded, Corral, RunContext
from corral.store.user_sql import StepTransaction

app = Corral(
    os.environ.get("CORRAL_DATABASE_URL", "sqlite:///corral-test.db"),
    lease_ttl=float(os.environ.get("CORRAL_TEST_TTL", "1")),
    max_attempts=100,
    max_children=200,
)


def record(line: str) -> None:
    with open(os.environ["CORRAL_TEST_LOG"], "a") as f:
        f.write(line + "\n")


async def write_effect(tx: StepTransaction, run_id: str, step: int) -> int:
    # A plain insert, no unique key: a second execution would leave a second row.
    await tx.execute(
        "INSERT INTO test_effects (run_id, step) VALUES (:run_id, :step)",
        {"run_id": run_id, "step": step},
    )
    return step


@app.agent("fifty_steps")
async def fifty_steps(ctx: RunContext, input: Any) -> int:
    total = 0
    for step in range(50):
        await ctx.transaction(f"step-{step}", write_effect, ctx.run_id, step)
        total += 1
        await asyncio.sleep(0.01)  # the work between steps, where kills land
    return total


@app.agent("spender")
async def spender(ctx: RunContext, amount: float) -> float:
    try:
        await ctx.charge(amount, reason="llm")
    except BudgetExceeded:
        return 0.0
    return amount


@app.agent("fan_out_spenders")
async def fan_out_spenders(ctx: RunContext, input: dict[str, Any]) -> float:
    kids = await ctx.spawn_many(
        [{"agent": "spender", "input": input["amount"]} for _ in range(input["children"])]
    )
    return float(sum(await ctx.wait(kids)))


@app.agent("sleeper")
async def sleeper(ctx: RunContext, seconds: float) -> str:
    await ctx.emit("going to sleep")
    await ctx.sleep(seconds)
    record(f"woke {ctx.run_id}")
    return "rested"
