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
delay, instead of 1-11 s; 1 means "at the next whole second"). ``overlay=False`` runs the
plain ``sushy-emulator`` executable next to ``sys.executable``.

The emulator's request log (werkzeug's access log) is in ``BmcEmulator.log_path``;
``requests()`` parses it into (method, path, status) entries.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pprint
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
from typing import Any, Literal, cast

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
class FakeDrive:
    """A drive under the system's single storage controller."""

    id: str
    name: str
    capacity_bytes: int
    protocol: str = "SATA"


@dataclass(frozen=True, slots=True)
class FakeSystem:
    """One fake server. ``id`` is a UUID: the fake driver's Redfish system id.

    ``manufacturer``, ``model``, ``serial``, ``sku``, ``bios_version``, ``memory_gib`` and the
    CPU fields are served only with the overlay (the stock fake driver has no such data).
    """

    id: str
    name: str
    manufacturer: str = "Sushy Emulator"
    model: str | None = None
    serial: str | None = None
    power: Literal["On", "Off"] = "Off"
    memory_gib: int | None = None
    cpus: int | None = None
    cpu_model: str | None = None
    cpu_cores: int | None = None
    bios_version: str | None = None
    sku: str | None = None
    macs: tuple[str, ...] = ()
    drives: tuple[FakeDrive, ...] = ()

    def redfish_details(self) -> dict[str, Any]:
        """The ComputerSystem fields the overlay merges into the emulator's answer."""
        fields = {
            "Manufacturer": self.manufacturer,
            "Model": self.model,
            "SerialNumber": self.serial,
            "SKU": self.sku,
            "BiosVersion": self.bios_version,
        }
        out: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if self.memory_gib is not None:
            out["MemorySummary"] = {"TotalSystemMemoryGiB": self.memory_gib}
        cpu = {"Count": self.cpus, "Model": self.cpu_model, "CoreCount": self.cpu_cores}
        if any(v is not None for v in cpu.values()):
            out["ProcessorSummary"] = {k: v for k, v in cpu.items() if v is not None}
        return out


_CATALOG = (
    ("Dell Inc.", "PowerEdge R650", "J7QK2X3", "2.19.1", "Intel(R) Xeon(R) Gold 6338", 32),
    ("HPE", "ProLiant DL380 Gen10 Plus", "CZJ21507XB", "U46 v1.90", "Intel(R) Xeon(R) 6330", 28),
    ("Supermicro", "SYS-120U-TNR", "S41256801X", "1.4a", "Intel(R) Xeon(R) Silver 4314", 16),
)


def default_systems(n: int = 3) -> list[FakeSystem]:
    """``n`` plausible servers of different vendors: the first Off, the second On, ...

    Every third has no storage configured (its Storage answers 500: inventory must cope).
    """
    out = []
    for i in range(n):
        vendor, model, serial, bios, cpu_model, cores = _CATALOG[i % len(_CATALOG)]
        boot = FakeDrive(f"disk{i}-0", "Boot SSD", 480_103_981_056, "SATA")
        data = FakeDrive(f"disk{i}-1", "Data NVMe", 3_840_755_982_336, "NVMe")
        out.append(
            FakeSystem(
                id=f"{i + 1:08x}-1f0e-4c5a-9b7e-{0xC0FFEE000000 + i:012x}",
                name=f"server-{i + 1:02d}",
                manufacturer=vendor,
                model=model,
                serial=serial if i < len(_CATALOG) else f"{serial[:-2]}{i:02d}",
                power="On" if i % 3 == 1 else "Off",
                memory_gib=(256, 512, 128)[i % 3],
                cpus=2,
                cpu_model=cpu_model,
                cpu_cores=2 * cores,
                bios_version=bios,
                macs=tuple(f"52:54:00:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:{p:02x}" for p in (1, 2)),
                drives=() if i % 3 == 2 else (boot, data),
            )
        )
    return out


def _hash_password(password: str) -> str:
    import bcrypt  # sushy-tools' own dependency

    # Cost 4: the emulator checks the hash on every request; real cost is pointless here.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_config(
    dir: Path | str,
    systems: list[FakeSystem],
    *,
    username: str,
    password: str,
    port: int | None = None,
    power_delay_s: int | None = 1,
) -> Path:
    """Write ``emulator.conf`` and ``htpasswd`` into ``dir``; return the config's path.

    ``power_delay_s`` is used only by the overlay launcher (``None``: stock 1-11 s).
    """
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    auth_file = root / "htpasswd"
    auth_file.write_text(f"{username}:{_hash_password(password)}\n")
    auth_file.chmod(0o600)
    controller = {"MemberId": "0", "Name": "Integrated RAID", "SpeedGbps": 12}
    with_drives = [s for s in systems if s.drives]
    storage = {
        s.id: [
            {
                "Id": "1",
                "Name": "Local Storage",
                "StorageControllers": [controller],
                "Drives": [d.id for d in s.drives],
            }
        ]
        for s in with_drives
    }
    drives = {
        (s.id, "1"): [
            {"Id": d.id, "Name": d.name, "CapacityBytes": d.capacity_bytes, "Protocol": d.protocol}
            for d in s.drives
        ]
        for s in with_drives
    }
    settings: dict[str, Any] = {
        "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1",
        "SUSHY_EMULATOR_LISTEN_PORT": port or 8000,
        "SUSHY_EMULATOR_AUTH_FILE": str(auth_file),
        "SUSHY_EMULATOR_STATE_DIR": str(root / "state"),
        "SUSHY_EMULATOR_FEATURE_SET": "full",
        "SUSHY_EMULATOR_FAKE_DRIVER": True,
        "SUSHY_EMULATOR_FAKE_SYSTEMS": [
            {
                "uuid": s.id,
                "name": s.name,
                "power_state": s.power,
                "external_notifier": False,
                "nics": [{"mac": m} for m in s.macs],
            }
            for s in systems
        ],
        "SUSHY_EMULATOR_VMEDIA_DEVICES": {
            "Cd": {"Name": "Virtual CD", "MediaTypes": ["CD", "DVD"]},
            "Floppy": {"Name": "Virtual Removable Media", "MediaTypes": ["Floppy", "USBStick"]},
        },
        "SUSHY_EMULATOR_VMEDIA_VERIFY_SSL": False,
        "SUSHY_EMULATOR_STORAGE": storage,
        "SUSHY_EMULATOR_DRIVES": drives,
        "INFRAFLOW_SYSTEM_DETAILS": {s.id: s.redfish_details() for s in systems},
        "INFRAFLOW_POWER_DELAY_S": power_delay_s,
    }
    lines = ["# Generated by infraflow.devtools.bmc_emulator (Flask config, Python source)."]
    lines += [
        f"{k} = {pprint.pformat(v, width=100, sort_dicts=False)}" for k, v in settings.items()
    ]
    path = root / "emulator.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


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

    def wait_power_state(self, system_id: str, state: str, timeout: float = 15.0) -> None:
        """Block until the emulator reports ``state`` (power changes apply with a delay)."""
        deadline = time.monotonic() + timeout
        while self.power_state(system_id) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"system {system_id} not {state} after {timeout} s")
            time.sleep(0.1)


# ---- launcher: sushy-emulator plus the overlay (runs in the emulator's process) -----------


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _install_overlay() -> None:
    import random

    import flask
    from sushy_tools.emulator import main as emulator
    from sushy_tools.emulator.resources.systems import fakedriver

    app = emulator.app

    def _system_details(response: flask.Response) -> flask.Response:
        request = flask.request
        if (
            request.method != "GET"
            or request.endpoint != "system_resource"
            or response.status_code != 200
        ):
            return response
        identity = (request.view_args or {}).get("identity")
        details = app.config.get("INFRAFLOW_SYSTEM_DETAILS", {}).get(identity)
        if details:
            body = json.loads(response.get_data())
            _merge(body, details)
            response.set_data(json.dumps(body, indent=2))
        return response

    class _PowerDelay:
        """Stands in for the ``random`` module the fake driver draws its 1-11 s delay from."""

        def randint(self, a: int, b: int) -> int:
            delay = app.config.get("INFRAFLOW_POWER_DELAY_S")
            return random.randint(a, b) if delay is None else int(delay)

    app.after_request(_system_details)
    fakedriver.random = _PowerDelay()


def main(argv: list[str] | None = None) -> int:
    """``sushy-emulator`` with the overlay; takes the same arguments."""
    _install_overlay()
    from sushy_tools.emulator import main as emulator

    sys.argv = ["sushy-emulator", *(sys.argv[1:] if argv is None else argv)]
    result: int = emulator.main()
    return result


if __name__ == "__main__":
    sys.exit(main())
