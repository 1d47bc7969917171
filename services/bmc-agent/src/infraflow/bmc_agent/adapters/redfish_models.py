"""Plain values the Redfish adapter returns: frozen dataclasses of JSON-able fields.

They leave the agent as step outputs, so every field is a str, int, float, bool, None, a
tuple of those or another of these dataclasses; ``to_dict()`` gives the wire shape with
camelCase keys. ``None`` always means "the BMC did not tell" (unknown), never "zero".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "BmcEndpoint",
    "BootOverride",
    "CpuInfo",
    "DriveInfo",
    "GpuInfo",
    "Inventory",
    "MediaState",
    "NicInfo",
    "PcieDeviceInfo",
    "PowerState",
    "SystemInfo",
    "VolumeInfo",
]

PowerState: TypeAlias = Literal["On", "Off", "PoweringOn", "PoweringOff", "Unknown"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class _Wire:
    """Mixin: ``to_dict()`` with camelCase keys, tuples as lists."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able wire shape of this value (camelCase keys)."""
        result: dict[str, Any] = _plain(self)
        return result


@dataclass(frozen=True, slots=True)
class BmcEndpoint:
    """Where and how to reach one server's BMC.

    ``address`` is either a Redfish system URL (``https://bmc/redfish/v1/Systems/<id>``) or
    the BMC's root (``https://bmc`` or ``https://bmc/redfish/v1``), in which case the BMC
    must expose exactly one system. Credentials never go into the URL; the password is
    kept out of ``repr`` and of every message.
    """

    address: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("BMC address must be an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("BMC address must not embed credentials; pass them separately")

    @property
    def host(self) -> str:
        """``host[:port]`` of the BMC, safe for messages and logs."""
        return urlsplit(self.address).netloc


@dataclass(frozen=True, slots=True)
class SystemInfo(_Wire):
    """What ``connect`` learned about the server (the ComputerSystem resource)."""

    system_url: str
    system_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    serial: str | None
    uuid: str | None
    power_state: PowerState
    bios_version: str | None
    sku: str | None = None
    health: str | None = None
    redfish_version: str | None = None


@dataclass(frozen=True, slots=True)
class CpuInfo(_Wire):
    """Processor summary: ``count`` sockets/packages, total ``cores`` and ``threads``."""

    count: int | None
    model: str | None
    cores: int | None
    threads: int | None


@dataclass(frozen=True, slots=True)
class DriveInfo(_Wire):
    """One physical drive (Storage/Drives or SimpleStorage device)."""

    name: str | None
    model: str | None
    serial: str | None
    capacity_bytes: int | None
    media_type: str | None
    protocol: str | None


@dataclass(frozen=True, slots=True)
class VolumeInfo(_Wire):
    """One logical volume of a storage controller."""

    name: str | None
    capacity_bytes: int | None
    raid_type: str | None


@dataclass(frozen=True, slots=True)
class NicInfo(_Wire):
    """One EthernetInterface of the system."""

    id: str | None
    name: str | None
    mac: str | None
    speed_mbps: int | None
    state: str | None


@dataclass(frozen=True, slots=True)
class GpuInfo(_Wire):
    """A processor of type GPU."""

    manufacturer: str | None
    model: str | None


@dataclass(frozen=True, slots=True)
class PcieDeviceInfo(_Wire):
    """One PCIe device, where the BMC exposes PCIeDevices."""

    name: str | None
    manufacturer: str | None
    model: str | None
    device_type: str | None


@dataclass(frozen=True, slots=True)
class Inventory(_Wire):
    """Hardware inventory. A part the BMC does not expose is ``None`` and listed in ``unavailable``.

    ``unavailable`` holds part names (``cpu``, ``cpu.model``, ``memory``, ``drives``,
    ``volumes``, ``nics``, ``gpus``, ``pcieDevices``) so operators see what was not known
    rather than a misleading empty list.
    """

    cpu: CpuInfo | None
    memory_gib: float | None
    drives: tuple[DriveInfo, ...] | None
    volumes: tuple[VolumeInfo, ...] | None
    nics: tuple[NicInfo, ...] | None
    gpus: tuple[GpuInfo, ...] | None
    pcie_devices: tuple[PcieDeviceInfo, ...] | None
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BootOverride(_Wire):
    """The boot source override: ``target`` ("cd", "pxe", "hdd", "none" or the Redfish value
    lower-cased) and ``enabled`` ("once", "continuous", "disabled" or "unknown")."""

    target: str
    enabled: str
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class MediaState(_Wire):
    """The CD/DVD virtual media device: what is inserted, if anything."""

    device_id: str
    inserted: bool
    image: str | None
    image_name: str | None
    write_protected: bool | None
    media_types: tuple[str, ...] = ()
