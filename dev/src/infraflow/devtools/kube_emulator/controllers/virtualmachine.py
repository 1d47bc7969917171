"""Simulated KubeVirt VirtualMachine controller.

Desired state comes from ``spec.runStrategy`` (``Always``/``RerunOnFailure``/``Once`` run,
``Halted`` does not, ``Manual`` follows start/stop requests) or else ``spec.running``.
``status.printableStatus`` moves through phases, each transitional phase lasting half of
``vm_ready_delay``:

* first start: ``Provisioning`` -> ``Starting`` -> ``Running`` (``status.ready: true``);
* later starts: ``Starting`` -> ``Running``;
* stop: ``Stopping`` -> ``Stopped``;
* restart: ``Stopping`` -> ``Starting`` -> ``Running``;
* delete: finalizer ``kubevirt.io/virtualMachineControllerFinalize`` held for one phase
  (``Terminating``);
* failure modes (annotation ``emulator.infraflow.dev/fail``): ``never-ready`` ->
  ``CrashLoopBackOff`` after ``Starting``; ``unschedulable`` -> ``ErrorUnschedulable``
  after ``Provisioning``. Neither ever becomes ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..resources import VIRTUAL_MACHINES
from ..store import Obj
from .base import Controller, Key, failure_mode, set_condition

if TYPE_CHECKING:
    from ..state import EmulatorState

FINALIZER = "kubevirt.io/virtualMachineControllerFinalize"
RUN_STRATEGIES = frozenset({"Always", "Halted", "Manual", "RerunOnFailure", "Once"})
RUNNING_STRATEGIES = frozenset({"Always", "RerunOnFailure", "Once"})
ACTIVE_PHASES = frozenset({"provisioning", "starting", "running", "crashloop", "unschedulable"})

# phase -> (printableStatus, created, ready, Ready-condition reason)
_PRINTABLE: dict[str, tuple[str, bool, bool, str]] = {
    "new": ("Stopped", False, False, "VMINotExists"),
    "stopped": ("Stopped", False, False, "VMINotExists"),
    "provisioning": ("Provisioning", False, False, "Provisioning"),
    "starting": ("Starting", True, False, "GuestNotRunning"),
    "running": ("Running", True, True, "Running"),
    "stopping": ("Stopping", True, False, "Stopping"),
    "crashloop": ("CrashLoopBackOff", True, False, "CrashLoopBackOff"),
    "unschedulable": ("ErrorUnschedulable", False, False, "Unschedulable"),
    "terminating": ("Terminating", True, False, "Terminating"),
    "gone": ("Terminating", False, False, "Terminating"),
}


@dataclass(slots=True)
class VmMemory:
    """Emulated runtime state of one VM (what a VMI would be in KubeVirt)."""

    phase: str = "new"
    token: int = 0
    ever_created: bool = False
    manual_running: bool = False
    restart: bool = False


def validate_vm(obj: Obj) -> list[tuple[str, str]]:
    """KubeVirt admission rules the emulator enforces on VirtualMachine writes."""
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str]] = []
    strategy = spec.get("runStrategy")
    if strategy is not None and spec.get("running") is not None:
        causes.append(("spec.running", "Running and RunStrategy are mutually exclusive"))
    if strategy is not None and strategy not in RUN_STRATEGIES:
        causes.append(("spec.runStrategy", f"Unsupported value: {strategy!r}"))
    return causes


def effective_strategy(obj: Obj) -> str:
    """``spec.runStrategy`` or the strategy implied by ``spec.running``."""
    spec = obj.get("spec") or {}
    strategy = spec.get("runStrategy")
    if strategy:
        return str(strategy)
    return "Always" if spec.get("running") else "Halted"


class VirtualMachineController(Controller):
    """See the module docstring for the emulated behaviour."""

    ref = VIRTUAL_MACHINES

    def __init__(self, state: EmulatorState) -> None:
        super().__init__(state.store, state.config)
        self._mem: dict[str, VmMemory] = {}
        state.store.add_validator(VIRTUAL_MACHINES, validate_vm)

    @property
    def _half(self) -> float:
        return self.config.vm_ready_delay / 2

    def reset(self) -> None:
        """Cancel timers and forget every VM."""
        super().reset()
        self._mem.clear()

    def forget(self, uid: str) -> None:
        """Drop memory about a removed VM."""
        self._mem.pop(uid, None)

    # API used by the subresource handlers ------------------------------------------
    def phase(self, obj: Obj) -> str:
        """The emulated runtime phase of ``obj`` (``new`` before the first reconcile)."""
        mem = self._mem.get(obj["metadata"]["uid"])
        return mem.phase if mem else "new"

    def is_active(self, obj: Obj) -> bool:
        """Whether the VM has a (possibly failing) instance, i.e. counts as running."""
        return self.phase(obj) in ACTIVE_PHASES

    def set_manual(self, obj: Obj, running: bool) -> None:
        """Start/stop request for a ``runStrategy: Manual`` VM."""
        self._memory(obj).manual_running = running
        self.enqueue((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def request_restart(self, obj: Obj) -> None:
        """Stop the running instance and start a new one."""
        self._memory(obj).restart = True
        self.enqueue((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    # reconcile ----------------------------------------------------------------------
    def _memory(self, obj: Obj) -> VmMemory:
        return self._mem.setdefault(obj["metadata"]["uid"], VmMemory())

    def _desired_running(self, obj: Obj, mem: VmMemory) -> bool:
        spec = obj.get("spec") or {}
        strategy = spec.get("runStrategy")
        if strategy:
            return mem.manual_running if strategy == "Manual" else strategy in RUNNING_STRATEGIES
        return bool(spec.get("running", False))

    def reconcile(self, key: Key, obj: Obj) -> None:
        """One level-triggered pass over a VirtualMachine."""
        meta = obj["metadata"]
        mem = self._memory(obj)
        if meta.get("deletionTimestamp"):
            if FINALIZER not in meta.get("finalizers", []):
                return
            if mem.phase == "gone":
                self.remove_finalizer(key, FINALIZER)
                return
            if mem.phase != "terminating":
                self._enter(key, obj, mem, "terminating")
            self._write_status(key, mem)
            return
        if FINALIZER not in meta.get("finalizers", []):
            self.add_finalizer(key, FINALIZER)
            return
        desired = self._desired_running(obj, mem)
        if mem.restart:
            mem.restart = False
            if mem.phase in ACTIVE_PHASES:
                self._enter(key, obj, mem, "stopping")
        elif mem.phase in ("new", "stopped") and desired:
            self._enter(key, obj, mem, "starting" if mem.ever_created else "provisioning")
        elif mem.phase in ACTIVE_PHASES and not desired:
            self._enter(key, obj, mem, "stopping")
        elif mem.phase == "new":
            self._enter(key, obj, mem, "stopped")
        self._write_status(key, mem)

    def _enter(self, key: Key, obj: Obj, mem: VmMemory, phase: str) -> None:
        mem.phase = phase
        mem.token += 1
        if phase in ("starting", "running", "crashloop"):
            mem.ever_created = True
        if phase in ("provisioning", "starting", "stopping", "terminating"):
            self.call_later(self._half, self._advance, key, obj["metadata"]["uid"], mem.token)

    def _advance(self, key: Key, uid: str, token: int) -> None:
        mem = self._mem.get(uid)
        obj = self.store.peek(self.ref, *key)
        if mem is None or mem.token != token or obj is None:
            return
        failure = failure_mode(obj)
        following = {
            "provisioning": "unschedulable" if failure == "unschedulable" else "starting",
            "starting": "crashloop" if failure == "never-ready" else "running",
            "stopping": "stopped",
            "terminating": "gone",
        }[mem.phase]
        self._enter(key, obj, mem, following)
        self.enqueue(key)

    def _write_status(self, key: Key, mem: VmMemory) -> None:
        printable, created, ready, reason = _PRINTABLE[mem.phase]

        def change(new: Obj) -> None:
            status = new.setdefault("status", {})
            status["printableStatus"] = printable
            status["runStrategy"] = effective_strategy(new)
            status["observedGeneration"] = int(new["metadata"].get("generation", 1))
            for flag, value in (("created", created), ("ready", ready)):
                if value:
                    status[flag] = True
                else:
                    status.pop(flag, None)
            set_condition(status, "Ready", ready, reason, f"VirtualMachine is {printable}")

        self.write(key, change)
