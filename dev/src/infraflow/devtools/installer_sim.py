"""A stand-in for the OS installer of every fake server (dev/test only; started by ``Stack``).

A real installer boots from the virtual media, installs, and reports back. Here a thread
watches the Redfish emulator: when a system is On, boots from CD and has installer media
inserted whose URL carries the callback parameters (``infraflow.common.provisioning``), it
"installs" for ``install_s`` and then POSTs the provisioning callback with the per-run token it
found in the media URL, exactly as an installer would. Each run is called back once.

Tests steer it per system: ``hold(id)`` (never call back: the run times out), ``release(id)``,
``fail_next(id, message)`` (report a failed installation). ``calls`` records what was sent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from infraflow.common.provisioning import InstallerParams, installer_params
from infraflow.devtools.bmc_emulator import BmcEmulator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallbackCall:
    """One callback the simulator sent (no token: it is a secret)."""

    system_id: str
    run_id: str
    status: str
    http_status: int


class InstallerSimulator:
    """See the module docstring. ``start()``/``stop()``, or use it as a context manager."""

    def __init__(
        self, emulator: BmcEmulator, *, install_s: float = 0.5, poll_s: float = 0.5
    ) -> None:
        self.emulator = emulator
        self.install_s = install_s
        self.poll_s = poll_s
        self.calls: list[CallbackCall] = []
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._failing: dict[str, str] = {}
        self._booted: dict[str, float] = {}  # run id -> when its server was seen booting
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- control ------------------------------------------------------------------------

    def hold(self, system_id: str) -> None:
        """Do not call back for this system until ``release``."""
        with self._lock:
            self._held.add(system_id)

    def release(self, system_id: str) -> None:
        with self._lock:
            self._held.discard(system_id)

    def fail_next(self, system_id: str, message: str = "disk not found") -> None:
        """Report the next installation on this system as failed."""
        with self._lock:
            self._failing[system_id] = message

    def calls_for(self, system_id: str) -> list[CallbackCall]:
        with self._lock:
            return [c for c in self.calls if c.system_id == system_id]

    # ---- life -------------------------------------------------------------------------------

    def start(self) -> InstallerSimulator:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="installer-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> InstallerSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            for system in self.emulator.systems:
                try:
                    self._look_at(system.id)
                except (OSError, ValueError, KeyError):
                    continue  # the emulator is busy or restarting: look again next round

    def _look_at(self, system_id: str) -> None:
        params = self._booting_installer(system_id)
        if params is None or params.run_id in self._done:
            return
        with self._lock:
            if system_id in self._held:
                return
            first = self._booted.setdefault(params.run_id, time.monotonic())
            if time.monotonic() - first < self.install_s:
                return
            failure = self._failing.pop(system_id, None)
        status = "failed" if failure is not None else "succeeded"
        code = self._call_back(params, status, failure or "installed")
        with self._lock:
            self._done.add(params.run_id)
            self.calls.append(CallbackCall(system_id, params.run_id, status, code))

    def _booting_installer(self, system_id: str) -> InstallerParams | None:
        """The installer's parameters if the system is running from installer media now."""
        system = self.emulator.system(system_id)
        boot = system.get("Boot") or {}
        if system.get("PowerState") != "On" or boot.get("BootSourceOverrideTarget") != "Cd":
            return None
        image = self.emulator.media_image(system_id)
        return installer_params(image) if image else None

    def _call_back(self, params: InstallerParams, status: str, message: str) -> int:
        body: dict[str, Any] = {"runId": params.run_id, "status": status, "message": message}
        request = urllib.request.Request(
            params.callback_url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {params.token}",
            },
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)
            except OSError:
                time.sleep(0.2 * (attempt + 1))  # the gateway may be restarting
        return 0
