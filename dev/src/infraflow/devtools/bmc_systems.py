"""The emulator's fake servers and its configuration file (see ``bmc_emulator``)."""

from __future__ import annotations

import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FakeDrive", "FakeSystem", "default_systems", "write_config"]


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
