"""An agent for test and benchmark workflow types (dev only): executor ``test``.

Actions read their behaviour from the run input (``input["script"][<step>]``) so end-to-end
tests can make a step fail, hang or succeed without touching real systems:

* ``noop``: returns at once.
* ``record``: returns ``{"recorded": step}`` (compensations use it too).
* ``scripted``: ``{"fail": CODE, "retryable": bool, "failAttempts": n}`` fails the first n
  attempts (all when absent) with CODE; with ``"failWhile": KEY`` it fails only while KEY
  exists in the ``wf-idempotency`` bucket; ``{"sleep": s}`` sleeps first (cancellable).
* ``hold``: heartbeats until a key ``release.<runId>`` appears in the ``wf-idempotency``
  bucket, or the run is cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js.errors import KeyNotFoundError

from infraflow.common.agent import StepContext, StepError, StepWorker
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.common.settings import ServiceSettings
from infraflow.common.streams import KV_IDEMPOTENCY, agent_consumer


class TestAgentSettings(ServiceSettings):
    sites: str = "default"
    executor: str = "test"
    max_inflight: int = 256


def _script(ctx: StepContext) -> dict[str, Any]:
    script = ctx.input.get("script") or {}
    entry = script.get(ctx.command.step) if isinstance(script, dict) else None
    return entry if isinstance(entry, dict) else {}


async def noop(ctx: StepContext) -> dict[str, Any]:
    return {}


async def record(ctx: StepContext) -> dict[str, Any]:
    return {"recorded": ctx.command.step, "attempt": ctx.command.attempt}


def scripted_action(kv: Any) -> Any:
    async def scripted_with_flags(ctx: StepContext) -> dict[str, Any]:
        flag = _script(ctx).get("failWhile")
        if flag:
            try:
                await kv.get(str(flag))
            except KeyNotFoundError:
                return {"done": ctx.command.step}
        return await scripted(ctx)

    return scripted_with_flags


async def scripted(ctx: StepContext) -> dict[str, Any]:
    plan = _script(ctx)
    sleep = float(plan.get("sleep", 0))
    waited = 0.0
    while waited < sleep:
        await asyncio.sleep(0.05)
        waited += 0.05
        ctx.check_cancelled()
    code = plan.get("fail")
    attempts = plan.get("failAttempts")
    if code and (attempts is None or ctx.command.attempt <= int(attempts)):
        raise StepError(
            f"scripted failure {code}", code=str(code), retryable=bool(plan.get("retryable", False))
        )
    return {"done": ctx.command.step}


def hold_action(kv: Any) -> Any:
    async def hold(ctx: StepContext) -> dict[str, Any]:
        key = f"release.{ctx.command.run_id}"
        while True:
            ctx.check_cancelled()
            try:
                await kv.get(key)
                return {"released": True}
            except KeyNotFoundError:
                pass
            await ctx.heartbeat(message="holding")
            await asyncio.sleep(0.1)

    return hold


async def serve(rt: ServiceRuntime, settings: TestAgentSettings) -> None:
    sites = [s.strip() for s in settings.sites.split(",") if s.strip()]
    nc, js = await rt.connect(consumers=tuple(agent_consumer(settings.executor, s) for s in sites))
    kv = await js.key_value(KV_IDEMPOTENCY)
    actions = {
        "noop": noop,
        "record": record,
        "scripted": scripted_action(kv),
        "hold": hold_action(kv),
    }
    worker = StepWorker(
        nc,
        js,
        settings.executor,
        sites,
        actions,
        max_inflight=settings.max_inflight,
        shutdown_grace_s=2.0,
    )
    await worker.run(rt.stop)


def main() -> None:
    settings = TestAgentSettings()
    run_service("test-agent", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
