"""Informers: list + watch of the agent's ClusterDeployments and VirtualMachines, publishing
what they observe on ``infra.observed.<cluster|vm>.<id>`` (stream ``INFRA_OBSERVED``, which keeps
the last observation per resource).

One informer per kind, across all namespaces, selecting ``app.kubernetes.io/managed-by=infraflow``:

1. list → publish every object whose view changed since last published, and ``gone`` for every
   object known before but missing now; remember the list's resourceVersion;
2. watch from that version with bookmarks (``timeoutSeconds`` bounded; when the server ends the
   watch, watch again from the last version seen — events or bookmarks);
3. a ``410 Gone`` (the version fell out of the server's history) relists: step 1 again, which
   also catches every change the expired watch missed; other errors back off and relist.

The published state is ``observed_cluster``/``observed_vm`` — exactly what the steps return
under ``resource`` — so the projector can compare it with its cache field by field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from infraflow.common import subjects
from infraflow.common.contracts import ResourceObserved, encode
from infraflow.common.tasks import cancel_and_wait
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.core import clusters, names, vms
from infraflow.k8s_agent.core.names import ApiRef
from infraflow.k8s_agent.core.objects import Obj, labels_of
from infraflow.k8s_agent.errors import K8sGoneError

log = logging.getLogger(__name__)

SOURCE: Final = "k8s-informer"
_VOLATILE: Final = frozenset({"conditions"})
"""Fields left out when deciding whether an object's view changed (timestamps move)."""

Publish = Callable[[ResourceObserved], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InformedKind:
    """What an informer watches and how it turns an object into the cache's view."""

    resource_type: str
    ref: ApiRef
    summarize: Callable[[Obj | None], dict[str, Any]]


CLUSTERS: Final = InformedKind("cluster", clusters.CLUSTER_DEPLOYMENTS, clusters.observed_cluster)
VMS: Final = InformedKind("vm", vms.VIRTUAL_MACHINES, vms.observed_vm)
KINDS: Final = (CLUSTERS, VMS)


@dataclass(slots=True)
class InformerStats:
    """Counters for ``/metrics``, logs and tests."""

    lists: int = 0
    watches: int = 0
    expired: int = 0
    errors: int = 0
    published: int = 0
    events: int = 0
    last_error: str | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)


def resource_id_for(obj: Obj) -> str | None:
    """The resource id of an object the agent created (label, else the derived name)."""
    rid = labels_of(obj).get(names.RESOURCE_ID_LABEL)
    if rid:
        return rid
    name = (obj.get("metadata") or {}).get("name")
    return names.resource_id_of(str(name)) if name else None


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in _VOLATILE}


class Informer:
    """List + watch of one kind; see the module docstring."""

    def __init__(
        self,
        kube: KubeApi,
        kind: InformedKind,
        publish: Publish,
        *,
        site: str | None = None,
        watch_timeout_s: float = 300.0,
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 30.0,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.publish = publish
        self.site = site
        self.watch_timeout_s = watch_timeout_s
        self.retry_delay_s = retry_delay_s
        self.max_retry_delay_s = max_retry_delay_s
        self.stats = InformerStats()
        self.resource_version: str | None = None
        self._known: dict[str, dict[str, Any]] = {}
        """Resource id → the comparable view last published."""

    async def run(self, stop: asyncio.Event) -> None:
        """List and watch until ``stop`` is set."""
        task = asyncio.create_task(self._loop(), name=f"informer-{self.kind.resource_type}")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            await cancel_and_wait(task)

    async def _loop(self) -> None:
        delay = self.retry_delay_s
        while True:
            try:
                await self._relist()
                delay = self.retry_delay_s
                await self._watch()
            except K8sGoneError:
                self.stats.expired += 1
                log.info("%s watch expired (410); relisting", self.kind.resource_type)
                continue
            except Exception as exc:  # never die: back off and relist
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "%s informer: %s; relisting in %.1fs",
                    self.kind.resource_type,
                    self.stats.last_error,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay_s)

    async def _relist(self) -> None:
        items, rv = await self.kube.list(self.kind.ref, None, label_selector=names.MANAGED_SELECTOR)
        self.stats.lists += 1
        present: set[str] = set()
        for obj in items:
            rid = resource_id_for(obj)
            if rid is not None:
                present.add(rid)
                await self._observed(rid, obj)
        for rid in [r for r in self._known if r not in present]:
            await self._observed(rid, None)
        self.resource_version = rv or None
        self.stats.synced.set()

    async def _watch(self) -> None:
        """Watch again and again from the last version seen (events and bookmarks move it);
        returns only by raising (410 and errors: the caller relists)."""
        while True:
            self.stats.watches += 1
            async for event in self.kube.watch(
                self.kind.ref,
                None,
                resource_version=self.resource_version,
                label_selector=names.MANAGED_SELECTOR,
                timeout_s=self.watch_timeout_s,
            ):
                if event.resource_version:
                    self.resource_version = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                self.stats.events += 1
                rid = resource_id_for(event.object)
                if rid is not None:
                    gone = event.type == "DELETED"
                    await self._observed(rid, None if gone else event.object)

    async def _observed(self, rid: str, obj: Obj | None) -> None:
        view = self.kind.summarize(obj)
        key = comparable(view)
        if obj is None and rid not in self._known:
            return
        if obj is not None and self._known.get(rid) == key:
            return  # nothing the cache cares about changed
        # remembered only once published: a failed publish is retried by the relist
        await self.publish(
            ResourceObserved(
                resource_type=self.kind.resource_type,
                resource_id=rid,
                observed_at=datetime.now(UTC),
                source=SOURCE,
                site=self.site,
                state=view,
                gone=obj is None,
            )
        )
        if obj is None:
            self._known.pop(rid, None)
        else:
            self._known[rid] = key
        self.stats.published += 1


class JetStreamPublisher:
    """Publishes observations on ``infra.observed.<type>.<id>`` (JetStream-acknowledged)."""

    def __init__(self, js: Any) -> None:
        self._js = js

    async def __call__(self, observation: ResourceObserved) -> None:
        subject = subjects.observed(observation.resource_type, observation.resource_id)
        await self._js.publish(subject, encode(observation))


async def run_informers(informers: list[Informer], stop: asyncio.Event) -> None:
    """Run every informer until ``stop``."""
    await asyncio.gather(*(i.run(stop) for i in informers))
