"""Reading a ComputerSystem's hardware inventory with sushy (synchronous: runs in a worker).

Every part is optional. BMCs differ wildly in what they expose (sushy-tools' fake driver has
no Processors, Memory, BIOS or SimpleStorage, and answers 500 for Storage of an unconfigured
system), so a part the BMC does not expose, or fails to serve, becomes ``None`` and its name
goes into ``Inventory.unavailable``. Only a lost connection aborts the whole inventory: the
step is then retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import requests
from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from infraflow.bmc_agent.adapters.redfish_models import (
    CpuInfo,
    DriveInfo,
    GpuInfo,
    Inventory,
    NicInfo,
    PcieDeviceInfo,
    VolumeInfo,
)

__all__ = ["read_inventory"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

# What "the BMC does not expose this" looks like: a missing link, an HTTP error status on the
# sub-resource (404, 501, 500, even 403 for a read-only role), an answer that is not JSON.
# ConnectionError is deliberately absent: it propagates.
_ABSENT = (
    sushy_exc.MissingAttributeError,
    sushy_exc.MalformedAttributeError,
    sushy_exc.HTTPError,
    sushy_exc.UnknownDefaultError,
    requests.JSONDecodeError,
)


# Resources read only to derive public parts; their absence shows as "cpu", "drives"...
_INTERNAL_PARTS = frozenset({"processors", "storage"})


def _value(v: Any) -> Any:
    """sushy maps some fields to Enums; the wire wants their Redfish string."""
    return v.value if isinstance(v, Enum) else v


class _Reader:
    def __init__(self, system: System) -> None:
        self.system = system
        self.unavailable: list[str] = []

    def optional(self, part: str, read: Callable[[], _T]) -> _T | None:
        try:
            return read()
        except _ABSENT as exc:
            _LOG.debug("inventory part %s unavailable on %s: %s", part, self.system.path, exc)
            self.unavailable.append(part)
            return None

    # ---- parts ----------------------------------------------------------------------

    def processors(self) -> list[Any]:
        return list(self.system.processors.get_members())

    def cpu(self, processors: list[Any] | None) -> CpuInfo | None:
        summary = self.system.json.get("ProcessorSummary") or {}
        if processors is not None:
            cpus = [p for p in processors if _value(p.processor_type) in (None, "CPU")]
            if cpus:
                return CpuInfo(
                    count=len(cpus),
                    model=cpus[0].model,
                    cores=_sum(p.total_cores for p in cpus),
                    threads=_sum(p.total_threads for p in cpus),
                )
        count = summary.get("Count")
        model = summary.get("Model")
        cores = summary.get("CoreCount")
        threads = summary.get("LogicalProcessorCount")
        if count is None and model is None:
            self.unavailable.append("cpu")
            return None
        if model is None:
            self.unavailable.append("cpu.model")
        return CpuInfo(count=count, model=model, cores=cores, threads=threads)

    def gpus(self, processors: list[Any] | None) -> tuple[GpuInfo, ...] | None:
        if processors is None:
            self.unavailable.append("gpus")
            return None
        return tuple(
            GpuInfo(manufacturer=p.manufacturer, model=p.model)
            for p in processors
            if _value(p.processor_type) == "GPU"
        )

    def memory_gib(self) -> float | None:
        total = (self.system.json.get("MemorySummary") or {}).get("TotalSystemMemoryGiB")
        if total is None:
            self.unavailable.append("memory")
            return None
        return float(total)

    def storage(self) -> tuple[tuple[DriveInfo, ...] | None, tuple[VolumeInfo, ...] | None]:
        storages = self.optional("storage", lambda: list(self.system.storage.get_members()))
        if storages is None:
            drives = self.optional("drives", self._simple_storage_drives)
            self.unavailable.append("volumes")
            return drives, None
        drives_out: list[DriveInfo] | None = []
        volumes_out: list[VolumeInfo] | None = []
        for st in storages:

            def read_drives(st: Any = st) -> list[DriveInfo]:
                return [_drive(d) for d in st.drives]

            def read_volumes(st: Any = st) -> list[Any]:
                return list(st.volumes.get_members())

            found = self.optional("drives", read_drives)
            if found is None or drives_out is None:
                drives_out = None
            else:
                drives_out.extend(found)
            vols = self.optional("volumes", read_volumes)
            if vols is None or volumes_out is None:
                volumes_out = None
            else:
                volumes_out.extend(
                    VolumeInfo(
                        name=v.name,
                        capacity_bytes=v.capacity_bytes,
                        raid_type=_value(v.raid_type),
                    )
                    for v in vols
                )
        return (
            None if drives_out is None else tuple(drives_out),
            None if volumes_out is None else tuple(volumes_out),
        )

    def _simple_storage_drives(self) -> tuple[DriveInfo, ...]:
        return tuple(
            DriveInfo(
                name=dev.name,
                model=dev.model,
                serial=None,
                capacity_bytes=dev.capacity_bytes,
                media_type=None,
                protocol=None,
            )
            for ss in self.system.simple_storage.get_members()
            for dev in ss.devices
        )

    def nics(self) -> tuple[NicInfo, ...]:
        return tuple(
            NicInfo(
                id=n.identity,
                name=n.name,
                mac=n.mac_address or n.permanent_mac_address,
                speed_mbps=n.speed_mbps,
                state=_value(n.status.state) if n.status else None,
            )
            for n in self.system.ethernet_interfaces.get_members()
        )

    def pcie_devices(self) -> tuple[PcieDeviceInfo, ...] | None:
        # sushy returns an empty collection when the link is absent; "absent" is unknown here.
        if "PCIeDevices" not in self.system.json:
            self.unavailable.append("pcieDevices")
            return None
        return tuple(
            PcieDeviceInfo(
                name=d.name,
                manufacturer=d.manufacturer,
                model=d.model,
                device_type=_value(d.device_type),
            )
            for d in self.system.pcie_devices.get_members()
        )


def _sum(values: Any) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _drive(d: Any) -> DriveInfo:
    return DriveInfo(
        name=d.name,
        model=d.model,
        serial=d.serial_number,
        capacity_bytes=d.capacity_bytes,
        media_type=_value(d.media_type),
        protocol=_value(d.protocol),
    )


def read_inventory(system: System) -> Inventory:
    """Read what ``system`` exposes; absent parts become ``None`` (see module docstring).

    Raises sushy's ``ConnectionError`` (and auth errors on the system itself) unchanged, for
    the adapter boundary to map.
    """
    r = _Reader(system)
    processors = r.optional("processors", r.processors)
    cpu = r.cpu(processors)
    gpus = r.gpus(processors)
    memory = r.memory_gib()
    drives, volumes = r.storage()
    nics = r.optional("nics", r.nics)
    pcie = r.optional("pcieDevices", r.pcie_devices)
    unavailable = tuple(dict.fromkeys(p for p in r.unavailable if p not in _INTERNAL_PARTS))
    return Inventory(
        cpu=cpu,
        memory_gib=memory,
        drives=drives,
        volumes=volumes,
        nics=nics,
        gpus=gpus,
        pcie_devices=pcie,
        unavailable=unavailable,
    )
