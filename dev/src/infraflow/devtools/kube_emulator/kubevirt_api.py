"""KubeVirt's ``subresources.kubevirt.io`` start/stop/restart endpoints.

``PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/{action}``
answers ``202 Accepted`` (empty body) or a ``409 Conflict`` Status, like virt-api:

* ``start``: conflict for ``runStrategy`` ``Always``/``RerunOnFailure``/``Once`` and for a
  VM that already runs; otherwise sets ``spec.running: true``, turns ``Halted`` into
  ``Always``, or (``Manual``) requests a start.
* ``stop``: conflict when the VM does not run; otherwise sets ``spec.running: false``,
  turns a running strategy into ``Halted``, or (``Manual``) requests a stop.
* ``restart``: conflict for ``Halted`` and for a VM that does not run; otherwise the
  instance is stopped and started again.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from . import errors
from .controllers.virtualmachine import RUNNING_STRATEGIES
from .resources import KUBEVIRT_SUBRESOURCES_GROUP, VIRTUAL_MACHINES
from .state import STATE_KEY
from .store import Obj


def _set_spec(field: str, value: object, drop: str | None = None) -> Callable[[Obj], None]:
    def change(obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if drop:
            spec.pop(drop, None)
        spec[field] = value

    return change


async def vm_action(request: web.Request) -> web.Response:
    """Handle ``start``, ``stop`` and ``restart`` for one VirtualMachine."""
    state = request.app[STATE_KEY]
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    action = request.match_info["action"]
    await request.read()  # options such as gracePeriod are accepted and ignored
    store, controller = state.store, state.vms
    obj = store.get(VIRTUAL_MACHINES, namespace, name)
    spec = obj.get("spec") or {}
    strategy = spec.get("runStrategy")
    uses_running = strategy is None and "running" in spec
    active = controller.is_active(obj)

    def refuse(why: str) -> errors.ApiError:
        return errors.conflict(VIRTUAL_MACHINES, name, why)

    if action == "start":
        if strategy in RUNNING_STRATEGIES:
            raise refuse(f"{strategy} does not support manual start requests")
        if active:
            raise refuse("VM is already running")
        if strategy == "Manual":
            controller.set_manual(obj, True)
        elif uses_running:
            store.mutate(VIRTUAL_MACHINES, namespace, name, _set_spec("running", True))
        else:
            store.mutate(
                VIRTUAL_MACHINES, namespace, name, _set_spec("runStrategy", "Always", "running")
            )
    elif action == "stop":
        if not active:
            raise refuse("VM is not running")
        if strategy == "Manual":
            controller.set_manual(obj, False)
        elif uses_running:
            store.mutate(VIRTUAL_MACHINES, namespace, name, _set_spec("running", False))
        else:
            store.mutate(
                VIRTUAL_MACHINES, namespace, name, _set_spec("runStrategy", "Halted", "running")
            )
    else:
        if strategy == "Halted" or (uses_running and not spec.get("running")):
            raise refuse("Halted does not support manual restart requests")
        if not active:
            raise refuse("VM is not running")
        controller.request_restart(obj)
    return web.Response(status=202)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the KubeVirt subresource routes (before the generic resource routes)."""
    router.add_put(
        f"/apis/{KUBEVIRT_SUBRESOURCES_GROUP}/{{version}}/namespaces/{{namespace}}"
        "/virtualmachines/{name}/{action:start|stop|restart}",
        vm_action,
    )
