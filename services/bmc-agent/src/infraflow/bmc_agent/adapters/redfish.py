"""Redfish adapter: a narrow async facade over sushy (which is synchronous).

Every sushy call runs in a bounded thread pool owned by the facade, never on the event loop;
at most ``max_requests_per_bmc`` calls run against one BMC at a time (small BMCs choke on
more). sushy root objects are cached per (root URL, username, TLS verification) in a small
LRU; a changed password replaces the entry, an auth or connection failure evicts it.

Authentication is HTTP Basic on every request (``sushy.auth.BasicAuth``), not Redfish
sessions: Basic needs no session bookkeeping across threads and no logout, a wrong password
fails on the first authenticated GET (which is how ``connect`` checks credentials), and
sushy-tools' emulator has no SessionService at all (its ``htpasswd`` middleware only
understands Basic).

sushy's own retries are cut down to what a step needs: ``server_side_retries=1`` (one
connection attempt; sushy treats 0 as "default", three attempts 2 s apart) and one retry of a
GET that got a 5xx. Everything else is retried by the orchestrator's step policy, driven by
``BmcError.retryable``. Foreign exceptions are mapped once, in ``_run``, by the table in
``redfish_errors``.

Power actions (``power(ep, action)``), tried in order against the system's allowed
``ResetType`` values; "no-op when" states return without a request:

    action        ResetType preference                         no-op when       when Off
    on            On, ForceOn, PushPowerButton                 On, PoweringOn   -
    off           GracefulShutdown, ForceOff                   Off, PoweringOff -
    shutdown      GracefulShutdown                             Off, PoweringOff -
    force-off     ForceOff                                     Off, PoweringOff -
    reboot        GracefulRestart, ForceRestart, PowerCycle    -                On (power on)
    force-reboot  ForceRestart, PowerCycle                     -                On (power on)

An action that answers 202 with a task monitor (``Location``) is followed until the task
ends, at most ``task_timeout`` seconds (``BmcTimeoutError`` after that).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sushy
from sushy import exceptions as sushy_exc

from infraflow.bmc_agent.adapters.redfish_errors import map_foreign_error
from infraflow.bmc_agent.adapters.redfish_inventory import read_inventory
from infraflow.bmc_agent.adapters.redfish_models import (
    BmcEndpoint,
    BootOverride,
    Inventory,
    MediaState,
    PowerState,
    SystemInfo,
)
from infraflow.bmc_agent.adapters.redfish_session import (
    RedfishOptions,
    Session,
    SessionCache,
    Target,
)
from infraflow.bmc_agent.errors import (
    BmcActionRejectedError,
    BmcAuthError,
    BmcError,
    BmcResourceMissingError,
    BmcTimeoutError,
    BmcUnreachableError,
)

__all__ = [
    "BOOT_DEVICES",
    "POWER_ACTIONS",
    "BmcEndpoint",
    "BootOverride",
    "Inventory",
    "MediaState",
    "PowerState",
    "RedfishBmc",
    "RedfishOptions",
    "SystemInfo",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

_Reset = sushy.ResetType
_ON_STATES: Final = frozenset({"On", "PoweringOn"})
_OFF_STATES: Final = frozenset({"Off", "PoweringOff"})


@dataclass(frozen=True, slots=True)
class _PowerRule:
    resets: tuple[sushy.ResetType, ...]
    noop_when: frozenset[str] = frozenset()
    when_off: tuple[sushy.ResetType, ...] = ()


POWER_ACTIONS: Final[dict[str, _PowerRule]] = {
    "on": _PowerRule((_Reset.ON, _Reset.FORCE_ON, _Reset.PUSH_POWER_BUTTON), _ON_STATES),
    "off": _PowerRule((_Reset.GRACEFUL_SHUTDOWN, _Reset.FORCE_OFF), _OFF_STATES),
    "shutdown": _PowerRule((_Reset.GRACEFUL_SHUTDOWN,), _OFF_STATES),
    "force-off": _PowerRule((_Reset.FORCE_OFF,), _OFF_STATES),
    "reboot": _PowerRule(
        (_Reset.GRACEFUL_RESTART, _Reset.FORCE_RESTART, _Reset.POWER_CYCLE),
        when_off=(_Reset.ON, _Reset.FORCE_ON),
    ),
    "force-reboot": _PowerRule(
        (_Reset.FORCE_RESTART, _Reset.POWER_CYCLE), when_off=(_Reset.ON, _Reset.FORCE_ON)
    ),
}
"""Power action name -> Redfish ResetType preference (see the module docstring)."""

BOOT_DEVICES: Final[dict[str, sushy.BootSource]] = {
    "cd": sushy.BootSource.CD,
    "pxe": sushy.BootSource.PXE,
    "hdd": sushy.BootSource.HDD,
}
"""One-time boot device name -> Redfish BootSourceOverrideTarget."""

_BOOT_NAMES: Final[dict[str, str]] = {
    **{src.value: name for name, src in BOOT_DEVICES.items()},
    sushy.BootSource.USB_CD.value: "cd",
    sushy.BootSource.NONE.value: "none",
}
_POWER_STATES: Final[dict[str, PowerState]] = {
    "On": "On",
    "Off": "Off",
    "PoweringOn": "PoweringOn",
    "PoweringOff": "PoweringOff",
}


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def _power(value: Any) -> PowerState:
    return _POWER_STATES.get(_value(value), "Unknown")


class RedfishBmc:
    """Async Redfish client for many BMCs. Use as ``async with RedfishBmc() as bmc`` or call
    ``aclose()``. Every method raises only ``BmcError`` subclasses for BMC-side problems.

    An instance belongs to one event loop (its per-BMC semaphores bind to it). A cancelled
    call stops waiting at once, but its worker thread finishes the request it is in.
    """

    def __init__(self, options: RedfishOptions | None = None) -> None:
        self._options = options or RedfishOptions()
        self._executor = ThreadPoolExecutor(
            max_workers=self._options.max_workers, thread_name_prefix="redfish"
        )
        self._sessions = SessionCache(self._options)
        self._per_bmc: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> RedfishBmc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Drop cached sessions and stop the worker threads (running calls finish)."""
        self._sessions.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- public surface -------------------------------------------------------------

    async def connect(self, ep: BmcEndpoint) -> SystemInfo:
        """Reach the BMC, check the credentials, find the system and describe it."""

        def read(s: Session) -> SystemInfo:
            system = s.system(ep)
            status = system.status
            return SystemInfo(
                system_url=Target.of(ep).root_url + system.json.get("@odata.id", system.path),
                system_id=system.identity,
                name=system.name,
                manufacturer=system.manufacturer,
                model=system.model,
                serial=system.serial_number,
                uuid=system.uuid,
                power_state=_power(system.power_state),
                bios_version=system.bios_version,
                sku=system.sku,
                health=_value(status.health) if status else None,
                redfish_version=s.root.redfish_version,
            )

        return await self._run(ep, "connect", read)

    async def inventory(self, ep: BmcEndpoint) -> Inventory:
        """Hardware inventory; parts the BMC does not expose are ``None`` (never an error)."""
        return await self._run(ep, "inventory", lambda s: read_inventory(s.system(ep)))

    async def power_state(self, ep: BmcEndpoint) -> PowerState:
        """The system's power state; values outside the Redfish four are "Unknown"."""
        return await self._run(ep, "power_state", lambda s: _power(s.system(ep).power_state))

    async def power(self, ep: BmcEndpoint, action: str) -> None:
        """Run a power action (see ``POWER_ACTIONS``); a no-op if already in the wanted state."""
        rule = POWER_ACTIONS.get(action)
        if rule is None:
            raise BmcActionRejectedError(
                f"unknown power action {action!r}; expected one of {sorted(POWER_ACTIONS)}"
            )

        def act(s: Session) -> None:
            system = s.system(ep)
            state = _power(system.power_state)
            if state in rule.noop_when:
                _LOG.info("power %s on %s: already %s, nothing to do", action, ep.host, state)
                return
            preference = rule.when_off if state == "Off" and rule.when_off else rule.resets
            allowed = system.get_allowed_reset_system_values()
            reset = next((r for r in preference if r in allowed), None)
            if reset is None:
                raise BmcActionRejectedError(
                    f"BMC {ep.host} allows none of {[r.value for r in preference]} for "
                    f"power {action}; it allows {sorted(r.value for r in allowed)}",
                    details={"bmc": ep.host, "operation": "power"},
                )
            _LOG.info("power %s on %s: %s -> ResetType %s", action, ep.host, state, reset.value)
            self._act(s, ep, lambda: system.reset_system(reset))

        await self._run(ep, "power", act)

    async def wait_power(
        self,
        ep: BmcEndpoint,
        target: str,
        *,
        timeout: float,
        interval: float = 1.0,
        on_poll: Callable[[PowerState], Awaitable[None] | None] | None = None,
    ) -> PowerState:
        """Poll until the power state is ``target`` ("On"/"Off"); ``BmcTimeoutError`` after
        ``timeout`` seconds. ``on_poll`` (sync or async) sees every observed state, e.g. to
        send heartbeats."""
        want = _POWER_STATES.get(target.capitalize())
        if want not in ("On", "Off"):
            raise BmcActionRejectedError(f"cannot wait for power state {target!r}; use On or Off")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.power_state(ep)
            if on_poll is not None:
                result = on_poll(state)
                if inspect.isawaitable(result):
                    await result
            if state == want:
                return state
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BmcTimeoutError(
                    f"BMC {ep.host}: power state still {state}, not {want}, after {timeout:g} s",
                    details={"bmc": ep.host, "operation": "wait_power", "lastState": state},
                )
            await asyncio.sleep(min(interval, remaining))

    async def set_boot_once(self, ep: BmcEndpoint, device: str) -> None:
        """Boot once from ``device`` ("cd", "pxe" or "hdd") at the next start."""
        source = BOOT_DEVICES.get(device.lower())
        if source is None:
            raise BmcActionRejectedError(
                f"unknown boot device {device!r}; expected one of {sorted(BOOT_DEVICES)}"
            )

        def act(s: Session) -> None:
            system = s.system(ep)
            self._act(
                s,
                ep,
                lambda: system.set_system_boot_options(
                    target=source, enabled=sushy.BootSourceOverrideEnabled.ONCE
                ),
            )

        await self._run(ep, "set_boot_once", act)

    async def clear_boot_override(self, ep: BmcEndpoint) -> None:
        """Disable the boot override (a no-op when already disabled)."""

        def act(s: Session) -> None:
            system = s.system(ep)
            disabled = sushy.BootSourceOverrideEnabled.DISABLED
            if system.boot is not None and system.boot.enabled == disabled:
                return
            try:
                self._act(s, ep, lambda: system.set_system_boot_options(enabled=disabled))
            except sushy_exc.BadRequestError:
                # Quirk: sushy-tools' drivers ignore BootSourceOverrideEnabled and answer 400
                # to a Boot PATCH without a target; "boot from disk" is the same outcome.
                _LOG.info("clear boot override on %s: retrying with target Hdd", ep.host)
                self._act(
                    s,
                    ep,
                    lambda: system.set_system_boot_options(
                        target=sushy.BootSource.HDD, enabled=disabled
                    ),
                )

        await self._run(ep, "clear_boot_override", act)

    async def boot_override(self, ep: BmcEndpoint) -> BootOverride:
        """The current boot source override."""

        def read(s: Session) -> BootOverride:
            boot = s.system(ep).boot
            target = _value(boot.target) if boot else None
            enabled = _value(boot.enabled) if boot else None
            return BootOverride(
                target=_BOOT_NAMES.get(target, target.lower()) if target else "none",
                enabled=enabled.lower() if enabled else "unknown",
                mode=_value(boot.mode) if boot else None,
            )

        return await self._run(ep, "boot_override", read)

    async def insert_media(self, ep: BmcEndpoint, image_url: str) -> None:
        """Insert ``image_url`` into the CD/DVD virtual media (no-op if already inserted;
        another image is ejected first)."""

        def act(s: Session) -> None:
            device = self._cd_device(s, ep)
            if device.inserted and device.image == image_url:
                _LOG.info("insert media on %s: image already inserted", ep.host)
                return
            if device.inserted or device.image:
                self._act(s, ep, device.eject_media)
            _LOG.info("insert media on %s (device %s)", ep.host, device.identity)
            self._act(s, ep, lambda: device.insert_media(image_url, inserted=True))

        await self._run(ep, "insert_media", act)

    async def eject_media(self, ep: BmcEndpoint) -> None:
        """Eject the CD/DVD virtual media (no-op when empty)."""

        def act(s: Session) -> None:
            device = self._cd_device(s, ep)
            if not device.inserted and not device.image:
                return
            self._act(s, ep, device.eject_media)

        await self._run(ep, "eject_media", act)

    async def media(self, ep: BmcEndpoint) -> MediaState:
        """The state of the CD/DVD virtual media device."""

        def read(s: Session) -> MediaState:
            d = self._cd_device(s, ep)
            return MediaState(
                device_id=d.identity,
                inserted=bool(d.inserted),
                image=d.image or None,
                image_name=d.image_name or None,
                write_protected=d.write_protected,
                media_types=tuple(str(_value(t)) for t in d.media_types or ()),
            )

        return await self._run(ep, "media", read)

    # ---- plumbing -----------------------------------------------------------------

    async def _run(self, ep: BmcEndpoint, operation: str, fn: Callable[[Session], _T]) -> _T:
        """Run ``fn(session)`` in a worker thread; map foreign exceptions once, here."""
        root_url = Target.of(ep).root_url
        gate = self._per_bmc.setdefault(
            root_url, asyncio.Semaphore(self._options.max_requests_per_bmc)
        )
        async with gate:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor, self._call, ep, fn)
            except BmcError:
                raise
            except Exception as exc:
                mapped = map_foreign_error(
                    exc, host=ep.host, operation=operation, secret=ep.password
                )
                if mapped is None:
                    raise
                if isinstance(mapped, BmcAuthError | BmcUnreachableError):
                    self._sessions.evict(ep)
                raise mapped from exc

    def _call(self, ep: BmcEndpoint, fn: Callable[[Session], _T]) -> _T:
        return fn(self._sessions.get(ep))

    def _act(self, s: Session, ep: BmcEndpoint, request: Callable[[], object]) -> None:
        s.act(ep, request, task_timeout=self._options.task_timeout)

    @staticmethod
    def _cd_device(s: Session, ep: BmcEndpoint) -> Any:
        system = s.system(ep)
        collections = []
        try:
            collections.append(system.virtual_media)
        except sushy_exc.MissingAttributeError:
            # Many BMCs (iDRAC, iLO) hang virtual media off the Manager, not the System.
            try:
                for manager in system.managers:
                    try:
                        collections.append(manager.virtual_media)
                    except sushy_exc.MissingAttributeError:
                        continue
            except sushy_exc.MissingAttributeError:
                pass
        for collection in collections:
            for device in collection.get_members():
                kinds = {str(_value(t)) for t in device.media_types or ()}
                if kinds & {"CD", "DVD"}:
                    return device
        raise BmcResourceMissingError(
            f"BMC {ep.host} exposes no CD/DVD virtual media device",
            details={"bmc": ep.host, "operation": "virtual_media"},
        )
