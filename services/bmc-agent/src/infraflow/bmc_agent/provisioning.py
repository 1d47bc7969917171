"""The actions of the ``provisioning`` executor, served by the bmc-agent of each site.

These are waits, not BMC calls, so they run in their own worker with their own concurrency:
an installer that takes an hour never holds one of the slots power actions need.

* ``acquire_slot`` / ``release_slot``: at most ``cap`` provisioning runs per site at once
  (``INFRAFLOW_PROVISION_MAX_CONCURRENT``, per site ``..._BY_SITE``). The cap protects what a
  site shares while servers install (image servers, the provisioning network, the BMCs), so it
  lives with the agent deployed at that site; the slots are KV keys, so every replica of the
  site's agent enforces the same cap. A run waits (heartbeating, cancellable) for a slot.
* ``wait_callback``: the installer's callback, durably (see ``adapters.provisioning``). The run
  may shorten the wait with ``callbackTimeoutS`` (bounded by the step's catalog timeout); the
  deadline counts from the first attempt, so a retried attempt does not restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from infraflow.bmc_agent.adapters.provisioning import ProvisioningStore
from infraflow.common.agent import Action, StepContext, StepError
from infraflow.common.provisioning import ProvisioningSlot

SLOT_STEP = "acquire_slot"


class ProvisioningActions:
    """``acquire_slot``, ``release_slot`` and ``wait_callback``."""

    def __init__(
        self,
        store: ProvisioningStore,
        cap_of: Callable[[str], int],
        *,
        slot_poll_s: float = 2.0,
    ) -> None:
        self.store = store
        self.cap_of = cap_of
        self.slot_poll_s = slot_poll_s

    def table(self) -> dict[str, Action]:
        return {
            "acquire_slot": self.acquire_slot,
            "release_slot": self.release_slot,
            "wait_callback": self.wait_callback,
        }

    async def acquire_slot(self, ctx: StepContext) -> dict[str, Any]:
        cmd = ctx.command
        cap = self.cap_of(cmd.site)
        if cap <= 0:
            return {"slot": None, "site": cmd.site, "cap": None}
        slot = ProvisioningSlot(
            run_id=cmd.run_id,
            resource_type=cmd.resource_type,
            resource_id=cmd.resource_id,
            site=cmd.site,
            acquired_at=datetime.now(UTC),
        )
        waited = False
        while True:
            index = await self.store.acquire(slot, cap, self.store.run_ended)
            if index is not None:
                return {"slot": index, "site": cmd.site, "cap": cap, "waited": waited}
            waited = True
            ctx.check_cancelled()
            await ctx.heartbeat(message=f"all {cap} provisioning slots of {cmd.site} are in use")
            await _sleep_or_cancel(ctx, self.slot_poll_s)

    async def release_slot(self, ctx: StepContext) -> dict[str, Any]:
        cmd = ctx.command
        held = (cmd.outputs.get(SLOT_STEP) or {}).get("slot")
        scan = max(self.cap_of(cmd.site), held + 1 if isinstance(held, int) else 0)
        released = await self.store.release(cmd.site, cmd.run_id, scan)
        return {"slot": released, "site": cmd.site}

    async def wait_callback(self, ctx: StepContext) -> dict[str, Any]:
        cmd = ctx.command
        budget = _budget(ctx.input.get("callbackTimeoutS"), cmd.timeout_s)
        started = await self.store.wait_started(cmd.run_id, datetime.now(UTC))
        deadline = started + timedelta(seconds=budget)
        while True:
            record = await self.store.callback(cmd.run_id)
            if record is not None:
                if record.status != "succeeded":
                    raise StepError(
                        "the installer reported a failure"
                        + (f": {record.message}" if record.message else ""),
                        code="INSTALLER_FAILED",
                        retryable=False,
                        details={"receivedAt": record.received_at.isoformat()},
                    )
                return {
                    "installer": {
                        "status": record.status,
                        "message": record.message,
                        "receivedAt": record.received_at.isoformat(),
                    }
                }
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                raise StepError(
                    f"no callback from the installer within {budget:g} s",
                    code="INSTALLER_CALLBACK_TIMEOUT",
                    retryable=False,
                    details={"timeoutS": budget},
                )
            ctx.check_cancelled()
            await self.store.wait_for_callback(cmd.run_id, remaining)


def _budget(requested: Any, step_timeout_s: float) -> float:
    """The wait: the run's ``callbackTimeoutS`` if given, never beyond the step's timeout
    (less a second, so the step reports its own timeout before the orchestrator's fires)."""
    ceiling = max(1.0, step_timeout_s - 1.0)
    if isinstance(requested, int | float) and not isinstance(requested, bool) and requested > 0:
        return min(float(requested), ceiling)
    return ceiling


async def _sleep_or_cancel(ctx: StepContext, seconds: float) -> None:
    """Sleep, waking early if the run is cancelled."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.cancelled.wait(), timeout=seconds)
