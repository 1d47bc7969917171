"""The bmc-agent's actions: each step action of the catalog's ``bmc`` executor.

Every action is idempotent (check-then-act against the BMC); outputs put what the read model
should learn about the server under ``"resource"``. A ``server.decommission`` run started with
``force`` records BMC failures of its steps as skipped instead of failing, so a server whose
BMC is gone can still be removed.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from infraflow.bmc_agent.adapters.credentials import CredentialStore
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.core.power import NOT_IDEMPOTENT, POWER_ACTIONS, target_state
from infraflow.bmc_agent.errors import BmcAuthError, BmcError
from infraflow.common.agent import Action, StepContext, StepError
from infraflow.common.provisioning import (
    InstallerParams,
    callback_token,
    callback_url,
    installer_media_url,
)

log = logging.getLogger(__name__)

FORCEABLE_TYPES = frozenset({"server.decommission"})


class BmcActions:
    """The ``bmc`` executor's action table over one Redfish facade and the sealed credentials.

    ``callback_key`` signs the installer's callback token (derived from the newest credential
    key); ``callback_base_url`` is the gateway as installers reach it.
    """

    def __init__(
        self,
        bmc: RedfishBmc,
        credentials: CredentialStore,
        markers: KeyValue,
        *,
        poll_interval_s: float = 1.0,
        callback_key: bytes | None = None,
        callback_base_url: str = "http://127.0.0.1:8080",
    ) -> None:
        self.bmc = bmc
        self.credentials = credentials
        self.markers = markers
        self.poll_interval_s = poll_interval_s
        self.callback_key = callback_key
        self.callback_base_url = callback_base_url

    def table(self) -> dict[str, Action]:
        actions: dict[str, Action] = {
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
            "verify_credentials": self.verify_credentials,
            "commit_credentials": self.commit_credentials,
        }
        return {name: _forceable(action) for name, action in actions.items()}

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
        """Insert the run's image; with ``params.installer`` the media URL also carries the
        installer's callback URL, run id and token (minted here, so it is in no event)."""
        image = ctx.input.get("image") or {}
        url = str(image.get("url") if isinstance(image, dict) else image or "")
        if not url:
            raise StepError("no image URL in the run input", code="VALIDATION_ERROR")
        media = url
        if ctx.params.get("installer"):
            media = installer_media_url(url, self._installer_params(ctx))
        ep = await self.credentials.endpoint(ctx.command.resource_id)
        await self.bmc.insert_media(ep, media)
        return {"media": url, "installerCallback": bool(ctx.params.get("installer"))}

    def _installer_params(self, ctx: StepContext) -> InstallerParams:
        if self.callback_key is None:
            raise StepError(
                "no credential key configured: cannot mint the installer's callback token",
                code="AGENT_MISCONFIGURED",
            )
        cmd = ctx.command
        return InstallerParams(
            callback_url=callback_url(self.callback_base_url, cmd.resource_id),
            run_id=cmd.run_id,
            token=callback_token(self.callback_key, cmd.resource_id, cmd.run_id),
        )

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

    async def verify_credentials(self, ctx: StepContext) -> dict[str, Any]:
        """Log in with a rotation's new credentials; refused ones are discarded at once."""
        cmd = ctx.command
        if not await self.credentials.has_candidate(cmd.resource_id, cmd.run_id):
            if cmd.attempt > 1:
                return {"verified": True, "repeated": True}  # committed by an earlier attempt
            raise StepError("the new credentials were not found", code="BMC_NO_CREDENTIALS")
        ep = await self.credentials.candidate(cmd.resource_id, cmd.run_id)
        try:
            info = await self.bmc.connect(ep)
        except BmcAuthError:
            await self.credentials.discard(cmd.resource_id, cmd.run_id)
            raise
        bmc = {"address": ep.address, "username": ep.username, "verifyTls": ep.verify_tls}
        return {"verified": True, "systemId": info.system_id, "resource": {"bmc": bmc}}

    async def commit_credentials(self, ctx: StepContext) -> dict[str, Any]:
        cmd = ctx.command
        committed = await self.credentials.commit(cmd.resource_id, cmd.run_id)
        return {"committed": committed}

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


def _forceable(action: Action) -> Action:
    """Run ``action``; in a forced decommission a BMC failure becomes a skipped step."""

    @functools.wraps(action)
    async def run(ctx: StepContext) -> dict[str, Any]:
        try:
            return await action(ctx)
        except BmcError as exc:
            cmd = ctx.command
            if cmd.workflow_type not in FORCEABLE_TYPES or not ctx.input.get("force"):
                raise
            log.warning("forced %s: step %s skipped (%s)", cmd.workflow_type, cmd.step, exc.code)
            return {"skipped": True, "reason": exc.code}

    return run
