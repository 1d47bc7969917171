"""The bmc-agent's actions: each step action of the catalog's ``bmc`` executor.

Every action is idempotent (check-then-act against the BMC); outputs put what the read model
should learn about the server under ``"resource"``.
"""

from __future__ import annotations

from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from infraflow.bmc_agent.adapters.credentials import CredentialStore
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.core.power import NOT_IDEMPOTENT, POWER_ACTIONS, target_state
from infraflow.common.agent import Action, StepContext, StepError


class BmcActions:
    def __init__(
        self,
        bmc: RedfishBmc,
        credentials: CredentialStore,
        markers: KeyValue,
        *,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.bmc = bmc
        self.credentials = credentials
        self.markers = markers
        self.poll_interval_s = poll_interval_s

    def table(self) -> dict[str, Action]:
        return {
            "connect": self.connect,
            "inventory": self.inventory,
            "power": self.power,
            "wait_power": self.wait_power,
            "set_boot_once": self.set_boot_once,
            "clear_boot_override": self.clear_boot_override,
            "insert_media": self.insert_media,
            "eject_media": self.eject_media,
            "observe": self.observe,
            "forget": self.forget,
        }

    async def connect(self, ctx: StepContext) -> dict[str, Any]:
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        info = await self.bmc.connect(ep)
        return {
            "system": info.to_dict(),
            "resource": {
                "vendor": info.manufacturer,
                "model": info.model,
                "serial": info.serial,
                "systemId": info.system_id,
                "systemUrl": info.system_url,
                "biosVersion": info.bios_version,
                "powerState": info.power_state,
                "health": info.health,
            },
        }

    async def inventory(self, ctx: StepContext) -> dict[str, Any]:
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        inv = (await self.bmc.inventory(ep)).to_dict()
        return {"inventory": inv, "resource": {"hardware": inv}}

    async def power(self, ctx: StepContext) -> dict[str, Any]:
        action = str(ctx.params.get("action") or ctx.input.get("action") or "")
        if action not in POWER_ACTIONS:
            raise StepError(f"unknown power action {action!r}", code="VALIDATION_ERROR")
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        if action in NOT_IDEMPOTENT and not await self._first_time(ctx):
            # this attempt already issued the reset before a crash: do not reboot twice
            return {"action": action, "repeated": True}
        await self.bmc.power(ep, action)
        out: dict[str, Any] = {"action": action}
        if ctx.params.get("target"):
            state = await self._wait(ctx, ep, str(ctx.params["target"]))
            out["resource"] = {"powerState": state}
        return out

    async def wait_power(self, ctx: StepContext) -> dict[str, Any]:
        action = str(ctx.params.get("action") or ctx.input.get("action") or "")
        target = str(ctx.params.get("target") or target_state(action))
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        state = await self._wait(ctx, ep, target)
        return {"powerState": state, "resource": {"powerState": state}}

    async def set_boot_once(self, ctx: StepContext) -> dict[str, Any]:
        device = str(ctx.params.get("device") or ctx.input.get("bootDevice") or "")
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        await self.bmc.set_boot_once(ep, device)
        return {"bootOnce": device}

    async def clear_boot_override(self, ctx: StepContext) -> dict[str, Any]:
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        await self.bmc.clear_boot_override(ep)
        return {"bootOverride": "cleared"}

    async def insert_media(self, ctx: StepContext) -> dict[str, Any]:
        image = ctx.input.get("image") or {}
        url = str(image.get("url") if isinstance(image, dict) else image or "")
        if not url:
            raise StepError("no image URL in the run input", code="VALIDATION_ERROR")
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        await self.bmc.insert_media(ep, url)
        return {"media": url}

    async def eject_media(self, ctx: StepContext) -> dict[str, Any]:
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        await self.bmc.eject_media(ep)
        return {"media": None}

    async def observe(self, ctx: StepContext) -> dict[str, Any]:
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        info = await self.bmc.connect(ep)
        return {
            "observed": {"powerState": info.power_state, "health": info.health},
            "resource": {"powerState": info.power_state, "health": info.health},
        }

    async def forget(self, ctx: StepContext) -> dict[str, Any]:
        await self.credentials.forget(ctx.command.resource_id)
        return {"credentials": "removed"}

    async def _wait(self, ctx: StepContext, ep: Any, target: str) -> str:
        async def on_poll(_state: str) -> None:
            ctx.check_cancelled()
            await ctx.heartbeat(message=f"waiting for power {target}")

        timeout = max(1.0, ctx.command.timeout_s - 1.0)
        state = await self.bmc.wait_power(
            ep, target, timeout=timeout, interval=self.poll_interval_s, on_poll=on_poll
        )
        return str(state)

    async def _first_time(self, ctx: StepContext) -> bool:
        """Claim this attempt's effect marker; False if an earlier delivery claimed it."""
        key = "effect." + ctx.command.attempt_id.replace(":", ".")
        try:
            await self.markers.create(key, b"1")
            return True
        except KeyWrongLastSequenceError:
            return False
