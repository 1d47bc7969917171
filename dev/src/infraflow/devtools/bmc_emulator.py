"""A Redfish BMC for tests and the local stack: sushy-tools' ``sushy-emulator --fake``.

How the emulator is configured (all in one Flask config file, which is Python source):

- ``SUSHY_EMULATOR_FAKE_SYSTEMS``: the fake systems, each ``{"uuid", "name", "power_state",
  "nics": [{"mac"}]}``. The fake driver addresses a system by its UUID (``/Systems/<uuid>``);
  its name answers 307 to the UUID URL. Power changes are not immediate: the driver applies
  them 1-11 s (random) after the request, on the next read; a restart reads Off at once.
  Boot override: the target is kept, ``BootSourceOverrideEnabled`` is ignored (always
  "Continuous") and a Boot PATCH without a target is refused with 400.
- ``SUSHY_EMULATOR_AUTH_FILE``: an htpasswd file with bcrypt hashes only; every path except
  ``/``, ``/redfish`` and ``/redfish/v1`` then needs HTTP Basic (401 otherwise). There is no
  SessionService.
- ``SUSHY_EMULATOR_VMEDIA_DEVICES``: virtual media devices per system (``Cd``, ``Floppy``).
  Inserting media makes the emulator download the image (no timeout), so an image URL must
  be served: ``BmcEmulator`` runs a small in-process image server for that.
- ``SUSHY_EMULATOR_STORAGE`` / ``SUSHY_EMULATOR_DRIVES``: static Storage and Drives per system
  UUID (a system without them answers 500 for Storage). Volumes always fail on the fake
  driver; Processors, Memory, BIOS and SimpleStorage are not implemented (501/404).
- ``SUSHY_EMULATOR_STATE_DIR``: SQLite state (power, boot, media) that survives a restart.
- The stock ComputerSystem says ``"Manufacturer": "Sushy Emulator"`` and has no Model,
  SerialNumber, memory or CPU count.

With ``overlay=True`` (the default) the emulator runs through this module's launcher
(``python -m infraflow.devtools.bmc_emulator``), which is the same ``sushy-emulator`` app plus
two small additions, read from the same config file: ``INFRAFLOW_SYSTEM_DETAILS`` (per-UUID
Redfish fields merged into the ComputerSystem answer: Manufacturer, Model, SerialNumber, SKU,
BiosVersion, MemorySummary, ProcessorSummary) and ``INFRAFLOW_POWER_DELAY_S`` (the power
delay, instead of 1-11 s; 1 means "at the next whole second"), plus fault injection:
``inject_fault()`` makes matching requests fail with a chosen status (a BMC that rejects or
breaks in the middle of a workflow). See ``bmc_overlay``. ``overlay=False`` runs the plain
``sushy-emulator`` executable next to ``sys.executable``.

The emulator's request log (werkzeug's access log) is in ``BmcEmulator.log_path``;
``requests()`` parses it into (method, path, status) entries.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from infraflow.devtools.bmc_systems import FakeDrive, FakeSystem, default_systems, write_config

__all__ = [
    "BmcEmulator",
    "EmulatorRequest",
    "FakeDrive",
    "FakeSystem",
    "default_systems",
    "free_port",
    "write_config",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True, slots=True)
class EmulatorRequest:
    """One line of the emulator's access log."""

    method: str
    path: str
    status: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _ImageServer:
    """Serves fake ISO images to the emulator (it downloads what it "inserts")."""

    def __init__(self, images: dict[str, bytes]) -> None:
        store = images

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = store.get(self.path.lstrip("/").split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass(eq=False)
class BmcEmulator:
    """A running ``sushy-emulator --fake`` on a free 127.0.0.1 port (see module docstring).

    ``with BmcEmulator() as bmc:`` or ``async with``; ``start()``/``stop()`` work too.
    """

    systems: list[FakeSystem] = field(default_factory=default_systems)
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    workdir: Path | None = None
    overlay: bool = True
    power_delay_s: int | None = 1
    images: dict[str, bytes] = field(
        default_factory=lambda: {"installer.iso": b"INFRAFLOW-FAKE-ISO\n" * 2048}, repr=False
    )
    startup_timeout: float = 20.0
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _image_server: _ImageServer | None = field(default=None, init=False, repr=False)
    _owns_workdir: bool = field(default=False, init=False, repr=False)

    # ---- lifecycle ----------------------------------------------------------------

    def start(self) -> BmcEmulator:
        """Write the config, start the process, wait until ``/redfish/v1/`` answers."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="bmc-emulator-"))
            self._owns_workdir = True
        self._image_server = _ImageServer(self.images)
        try:
            for _attempt in range(3):
                self.port = free_port()
                if self._spawn():
                    return self
            tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError("sushy-emulator did not start:\n" + "\n".join(tail))
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> bool:
        assert self.workdir is not None
        config = write_config(
            self.workdir,
            self.systems,
            username=self.username,
            password=self.password,
            port=self.port,
            power_delay_s=self.power_delay_s,
        )
        tmp = self.workdir / "tmp"  # where the emulator keeps downloaded images
        tmp.mkdir(exist_ok=True)
        if self.overlay:
            argv = [sys.executable, "-m", "infraflow.devtools.bmc_emulator"]
        else:
            argv = [str(Path(sys.executable).with_name("sushy-emulator"))]
        argv += ["--fake", "--config", str(config), "-i", "127.0.0.1", "-p", str(self.port)]
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
        env.pop("SUSHY_EMULATOR_CONFIG", None)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self._proc = proc
        weakref.finalize(self, _reap, proc)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile: try another
            try:
                with urllib.request.urlopen(f"{self.url}/redfish/v1/", timeout=1):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        _reap(proc)
        return False

    def stop(self) -> None:
        """SIGTERM the emulator (SIGKILL after 5 s), wait for it, stop the image server."""
        if self._proc is not None:
            _reap(self._proc)
            self._proc = None
        if self._image_server is not None:
            self._image_server.close()
            self._image_server = None
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The emulator's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def __enter__(self) -> BmcEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> BmcEmulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ---- addresses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The BMC root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def system_url(self, system_id: str) -> str:
        """``{url}/redfish/v1/Systems/{system_id}``."""
        return f"{self.url}/redfish/v1/Systems/{system_id}"

    def image_url(self, name: str = "installer.iso") -> str:
        """URL of an image the emulator can "insert" (served by the image server)."""
        assert self._image_server is not None, "emulator not started"
        return f"{self._image_server.url}/{name}"

    @property
    def log_path(self) -> Path:
        """The emulator's stdout/stderr, including werkzeug's access log."""
        assert self.workdir is not None, "emulator not started"
        return self.workdir / "emulator.log"

    def requests(self) -> list[EmulatorRequest]:
        """The access log so far, parsed."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _ACCESS.search(_ANSI.sub("", line))
            if m:
                out.append(EmulatorRequest(m["method"], m["path"], int(m["status"])))
        return out

    # ---- direct access for assertions and drift (blocking; tiny local requests) -----

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Basic {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get_json(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/redfish/v1/Systems``) with the emulator's credentials."""
        return self._request("GET", path)

    def system(self, system_id: str) -> dict[str, Any]:
        """The ComputerSystem resource as the emulator serves it."""
        return cast(dict[str, Any], self.get_json(f"/redfish/v1/Systems/{system_id}"))

    def power_state(self, system_id: str) -> str:
        """``PowerState`` as the emulator reports it now."""
        return str(self.system(system_id)["PowerState"])

    def boot_override(self, system_id: str) -> tuple[str | None, str | None]:
        """(``BootSourceOverrideTarget``, ``BootSourceOverrideEnabled``)."""
        boot = self.system(system_id).get("Boot") or {}
        return boot.get("BootSourceOverrideTarget"), boot.get("BootSourceOverrideEnabled")

    def virtual_media(self, system_id: str, device: str = "Cd") -> dict[str, Any]:
        """The VirtualMedia resource (``Image``, ``Inserted``...)."""
        path = f"/redfish/v1/Systems/{system_id}/VirtualMedia/{device}"
        return cast(dict[str, Any], self.get_json(path))

    def set_power(self, system_id: str, reset_type: str = "ForceOff") -> None:
        """POST a ComputerSystem.Reset behind the agent's back (to simulate drift)."""
        self._request(
            "POST",
            f"/redfish/v1/Systems/{system_id}/Actions/ComputerSystem.Reset",
            {"ResetType": reset_type},
        )

    def insert_media(self, system_id: str, image_url: str, device: str = "Cd") -> None:
        """Insert virtual media behind the agent's back (the emulator fetches the image)."""
        self._request(
            "POST",
            f"/redfish/v1/Systems/{system_id}/VirtualMedia/{device}/Actions/"
            "VirtualMedia.InsertMedia",
            {"Image": image_url, "Inserted": True},
        )

    def set_boot_override(self, system_id: str, target: str = "Cd") -> None:
        """Set a boot source override behind the agent's back."""
        self._request(
            "PATCH",
            f"/redfish/v1/Systems/{system_id}",
            {"Boot": {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": "Once"}},
        )

    def wait_power_state(self, system_id: str, state: str, timeout: float = 15.0) -> None:
        """Block until the emulator reports ``state`` (power changes apply with a delay)."""
        deadline = time.monotonic() + timeout
        while self.power_state(system_id) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"system {system_id} not {state} after {timeout} s")
            time.sleep(0.1)

    def media_image(self, system_id: str, device: str = "Cd") -> str | None:
        """The image URL inserted in ``device`` (None when empty)."""
        media = self.virtual_media(system_id, device)
        return str(media["Image"]) if media.get("Inserted") and media.get("Image") else None

    def inject_fault(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        times: int = 1,
        body_contains: str | None = None,
        message: str = "injected fault",
    ) -> None:
        """Make the next ``times`` requests (-1: all) whose method is ``method`` and whose path
        matches the regular expression ``path`` (and whose body contains ``body_contains``)
        fail with ``status`` and a Redfish error body. Needs the overlay."""
        assert self.overlay, "fault injection needs the overlay"
        rule = {
            "method": method.upper(),
            "path": path,
            "status": status,
            "times": times,
            "bodyContains": body_contains,
            "message": message,
        }
        self._request("POST", "/infraflow/faults", rule)

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        self._request("DELETE", "/infraflow/faults")

    def faults(self) -> list[dict[str, Any]]:
        """The injected faults still armed (with their remaining ``times``)."""
        return cast(list[dict[str, Any]], self.get_json("/infraflow/faults"))


# ---- launcher: sushy-emulator plus the overlay (runs in the emulator's process) -----------


def main(argv: list[str] | None = None) -> int:
    """``sushy-emulator`` with the overlay (``bmc_overlay``); takes the same arguments."""
    from infraflow.devtools.bmc_overlay import install_overlay

    install_overlay()
    from sushy_tools.emulator import main as emulator

    sys.argv = ["sushy-emulator", *(sys.argv[1:] if argv is None else argv)]
    result: int = emulator.main()
    return result


if __name__ == "__main__":
    sys.exit(main())
