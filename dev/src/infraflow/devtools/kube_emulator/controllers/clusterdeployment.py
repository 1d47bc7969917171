"""Simulated k0rdent ClusterDeployment controller.

Behaviour (per object):

* adds the finalizer ``k0rdent.mirantis.com/cluster-deployment``;
* on every new ``metadata.generation``: ``status.observedGeneration`` = generation and
  ``Ready=False/Progressing``; after ``cluster_ready_delay`` seconds ``Ready=True/Succeeded``
  (each condition carries ``observedGeneration``), ``status.k8sVersion`` and
  ``status.availableUpgrades`` are filled and a ``<name>-kubeconfig`` Secret (data key
  ``value``, a kubeconfig pointing back at the emulator) is created;
* failure mode: annotation ``emulator.infraflow.dev/fail: never-ready`` or
  ``spec.config.emulatorFail: never-ready`` -> after the delay ``Ready=False/Failed``;
* deletion: ``Deleting=True`` and ``Ready=False/Deleting``, then after
  ``cluster_delete_delay`` seconds the kubeconfig Secret is deleted and the finalizer
  removed (the store then removes the object).

``status.k8sVersion``: the referenced ClusterTemplate's ``status.k8sVersion`` if that object
exists and has it; else the template name's ``-vX-Y-Z`` suffix (``k0s-v1-31-2`` ->
``v1.31.2``); else :data:`DEFAULT_K8S_VERSION`.

``status.availableUpgrades``: if a ClusterTemplateChain in the namespace lists the current
template under ``spec.supportedTemplates[].name``, its ``availableUpgrades[].name`` values;
otherwise every ClusterTemplate in the namespace whose name has the same prefix and a higher
trailing version (``<prefix>-[v]X-Y-Z``), sorted by version. Templates without a version
suffix have no upgrades.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

from .. import errors
from ..kubeconfig import kubeconfig_dict
from ..resources import (
    CLUSTER_DEPLOYMENTS,
    CLUSTER_TEMPLATE_CHAINS,
    CLUSTER_TEMPLATES,
    SECRETS,
)
from ..store import Obj, WatchEvent
from .base import Controller, Key, failure_mode, set_condition

if TYPE_CHECKING:
    from ..state import EmulatorState

FINALIZER = "k0rdent.mirantis.com/cluster-deployment"
DEFAULT_K8S_VERSION = "v1.31.1"
NEVER_READY = "never-ready"
_VERSIONED = re.compile(r"^(?P<prefix>.+?)-(?P<v>v?)(?P<x>\d+)-(?P<y>\d+)-(?P<z>\d+)$")


def parse_template_name(name: str) -> tuple[str, tuple[int, int, int], bool] | None:
    """Split ``<prefix>-[v]X-Y-Z`` into prefix, version and whether the ``v`` was present."""
    match = _VERSIONED.match(name)
    if not match:
        return None
    version = (int(match["x"]), int(match["y"]), int(match["z"]))
    return match["prefix"], version, bool(match["v"])


def k8s_version_for(template: str, template_obj: Obj | None) -> str:
    """The Kubernetes version a ClusterDeployment on ``template`` reports (see module doc)."""
    if template_obj is not None:
        version = (template_obj.get("status") or {}).get("k8sVersion")
        if version:
            return str(version)
    parsed = parse_template_name(template)
    if parsed and parsed[2]:
        x, y, z = parsed[1]
        return f"v{x}.{y}.{z}"
    return DEFAULT_K8S_VERSION


def upgrades_by_name(template: str, candidates: list[str]) -> list[str]:
    """Templates among ``candidates`` with the same prefix and a higher version, ascending."""
    parsed = parse_template_name(template)
    if parsed is None:
        return []
    prefix, version, _ = parsed
    found: list[tuple[tuple[int, int, int], str]] = []
    for name in candidates:
        other = parse_template_name(name)
        if other and other[0] == prefix and other[1] > version:
            found.append((other[1], name))
    return [name for _, name in sorted(found)]


def upgrades_from_chains(template: str, chains: list[Obj]) -> list[str] | None:
    """Upgrades declared for ``template`` by ClusterTemplateChain objects, if any lists it."""
    for chain in chains:
        for entry in (chain.get("spec") or {}).get("supportedTemplates") or []:
            if isinstance(entry, dict) and entry.get("name") == template:
                return [
                    str(u["name"])
                    for u in entry.get("availableUpgrades") or []
                    if isinstance(u, dict) and u.get("name")
                ]
    return None


def wants_failure(obj: Obj) -> bool:
    """Whether the object asks for the ``never-ready`` failure mode."""
    config = (obj.get("spec") or {}).get("config")
    from_config = isinstance(config, dict) and config.get("emulatorFail") == NEVER_READY
    return from_config or failure_mode(obj) == NEVER_READY


class ClusterDeploymentController(Controller):
    """See the module docstring for the emulated behaviour."""

    ref = CLUSTER_DEPLOYMENTS

    def __init__(self, state: EmulatorState) -> None:
        super().__init__(state.store, state.config)
        self._state = state
        self._seen: dict[str, int] = {}
        self._ready: dict[str, int] = {}
        self._deleting: set[str] = set()
        self._delete_ok: set[str] = set()

    def reset(self) -> None:
        """Cancel timers and forget every object."""
        super().reset()
        self._seen.clear()
        self._ready.clear()
        self._deleting.clear()
        self._delete_ok.clear()

    def forget(self, uid: str) -> None:
        """Drop memory about a removed ClusterDeployment."""
        self._seen.pop(uid, None)
        self._ready.pop(uid, None)
        self._deleting.discard(uid)
        self._delete_ok.discard(uid)

    def handle_event(self, event: WatchEvent) -> None:
        """Also re-reconcile a namespace's deployments when its templates or chains change."""
        if event.ref in (CLUSTER_TEMPLATES, CLUSTER_TEMPLATE_CHAINS):
            for obj in self.store.list_objects(self.ref, event.namespace):
                self.enqueue((event.namespace, obj["metadata"]["name"]))
            return
        super().handle_event(event)

    def reconcile(self, key: Key, obj: Obj) -> None:
        """One level-triggered pass over a ClusterDeployment."""
        meta = obj["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            self._reconcile_delete(key, obj, uid)
            return
        if FINALIZER not in meta.get("finalizers", []):
            self.add_finalizer(key, FINALIZER)
            return
        generation = int(meta.get("generation", 1))
        if self._seen.get(uid) != generation:
            self._seen[uid] = generation
            self.call_later(
                self.config.cluster_ready_delay, self._ready_timer, key, uid, generation
            )
        ready = self._ready.get(uid) == generation
        failing = wants_failure(obj)
        extra: dict[str, Any] = {}
        if ready and not failing:
            template = str((obj.get("spec") or {}).get("template", ""))
            extra = {
                "k8sVersion": k8s_version_for(
                    template, self.store.peek(CLUSTER_TEMPLATES, key[0], template)
                ),
                "availableUpgrades": self._upgrades(key[0], template),
            }

        def change(new: Obj) -> None:
            status = new.setdefault("status", {})
            status["observedGeneration"] = generation
            set_condition(status, "Deleting", False, "NotDeleting", "", generation)
            if not ready:
                set_condition(
                    status,
                    "Ready",
                    False,
                    "Progressing",
                    f"Reconciling generation {generation}",
                    generation,
                )
            elif failing:
                set_condition(
                    status,
                    "Ready",
                    False,
                    "Failed",
                    "emulated failure (never-ready): the cluster does not become ready",
                    generation,
                )
            else:
                set_condition(status, "Ready", True, "Succeeded", "Object is ready", generation)
            status.update(extra)

        self.write(key, change)
        if ready and not failing:
            self._ensure_kubeconfig_secret(key)

    def _ready_timer(self, key: Key, uid: str, generation: int) -> None:
        self._ready[uid] = generation
        self.enqueue(key)

    def _delete_timer(self, key: Key, uid: str) -> None:
        self._delete_ok.add(uid)
        self.enqueue(key)

    def _reconcile_delete(self, key: Key, obj: Obj, uid: str) -> None:
        if FINALIZER not in obj["metadata"].get("finalizers", []):
            return
        if uid in self._delete_ok:
            self._delete_kubeconfig_secret(key)
            self.remove_finalizer(key, FINALIZER)
            return
        if uid not in self._deleting:
            self._deleting.add(uid)
            self.call_later(self.config.cluster_delete_delay, self._delete_timer, key, uid)
        generation = int(obj["metadata"].get("generation", 1))

        def change(new: Obj) -> None:
            status = new.setdefault("status", {})
            message = "Cluster is being deleted"
            set_condition(status, "Deleting", True, "Deleting", message, generation)
            set_condition(status, "Ready", False, "Deleting", message, generation)

        self.write(key, change)

    def _upgrades(self, namespace: str, template: str) -> list[str]:
        chains = self.store.list_objects(CLUSTER_TEMPLATE_CHAINS, namespace)
        declared = upgrades_from_chains(template, chains)
        if declared is not None:
            return declared
        templates = self.store.list_objects(CLUSTER_TEMPLATES, namespace)
        names = [t["metadata"]["name"] for t in templates]
        return upgrades_by_name(template, names)

    def _ensure_kubeconfig_secret(self, key: Key) -> None:
        namespace, name = key
        secret_name = f"{name}-kubeconfig"
        if self.store.peek(SECRETS, namespace, secret_name) is not None:
            return
        server = self._state.url or "http://127.0.0.1"
        content = json.dumps(kubeconfig_dict(server, cluster=name, namespace="default"))
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "cluster.x-k8s.io/secret",
            "metadata": {
                "name": secret_name,
                "labels": {"cluster.x-k8s.io/cluster-name": name},
            },
            "data": {"value": base64.b64encode(content.encode()).decode()},
        }
        self.store.create(SECRETS, namespace, secret)

    def _delete_kubeconfig_secret(self, key: Key) -> None:
        with contextlib.suppress(errors.ApiError):
            self.store.delete(SECRETS, key[0], f"{key[1]}-kubeconfig")
