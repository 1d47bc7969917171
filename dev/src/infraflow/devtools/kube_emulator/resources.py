"""Resource identities and the kind registry used for discovery documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CORE_GROUP = ""


@dataclass(frozen=True, slots=True, order=True)
class ResourceRef:
    """One REST resource: ``group`` (``""`` for the core group), ``version`` and ``plural``."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` string of objects of this resource (``v1`` or ``group/version``)."""
        return self.version if self.group == CORE_GROUP else f"{self.group}/{self.version}"

    @property
    def qualified(self) -> str:
        """``plural.group`` as kube-apiserver spells it in messages (``plural`` for core)."""
        return self.plural if self.group == CORE_GROUP else f"{self.plural}.{self.group}"


@dataclass(frozen=True, slots=True)
class KindInfo:
    """Discovery facts about one resource."""

    kind: str
    singular: str
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    has_status: bool = True
    subresources: tuple[str, ...] = ("status",)


CLUSTER_DEPLOYMENTS = ResourceRef("k0rdent.mirantis.com", "v1beta1", "clusterdeployments")
CLUSTER_TEMPLATES = ResourceRef("k0rdent.mirantis.com", "v1beta1", "clustertemplates")
CLUSTER_TEMPLATE_CHAINS = ResourceRef("k0rdent.mirantis.com", "v1beta1", "clustertemplatechains")
CREDENTIALS = ResourceRef("k0rdent.mirantis.com", "v1beta1", "credentials")
VIRTUAL_MACHINES = ResourceRef("kubevirt.io", "v1", "virtualmachines")
VIRTUAL_MACHINE_INSTANCES = ResourceRef("kubevirt.io", "v1", "virtualmachineinstances")
SECRETS = ResourceRef(CORE_GROUP, "v1", "secrets")
CONFIG_MAPS = ResourceRef(CORE_GROUP, "v1", "configmaps")
KUBEVIRT_SUBRESOURCES_GROUP = "subresources.kubevirt.io"

_UPDATE_ONLY = ("update",)

BUILTIN_KINDS: dict[ResourceRef, KindInfo] = {
    CLUSTER_DEPLOYMENTS: KindInfo("ClusterDeployment", "clusterdeployment", ("clusterd", "cld")),
    CLUSTER_TEMPLATES: KindInfo("ClusterTemplate", "clustertemplate", ("clustertmpl",)),
    CLUSTER_TEMPLATE_CHAINS: KindInfo("ClusterTemplateChain", "clustertemplatechain"),
    CREDENTIALS: KindInfo("Credential", "credential", ("cred",)),
    VIRTUAL_MACHINES: KindInfo("VirtualMachine", "virtualmachine", ("vm", "vms")),
    VIRTUAL_MACHINE_INSTANCES: KindInfo(
        "VirtualMachineInstance", "virtualmachineinstance", ("vmi", "vmis")
    ),
    SECRETS: KindInfo("Secret", "secret", has_status=False, subresources=()),
    CONFIG_MAPS: KindInfo("ConfigMap", "configmap", ("cm",), has_status=False, subresources=()),
}

# Virtual subresources served by the KubeVirt aggregated API (``subresources.kubevirt.io``).
KUBEVIRT_ACTIONS: tuple[str, ...] = ("start", "stop", "restart")


def guess_kind(plural: str) -> str:
    """A best-effort ``Kind`` for a plural nobody registered (``widgets`` -> ``Widget``)."""
    singular = plural[:-1] if plural.endswith("s") and len(plural) > 1 else plural
    return singular[:1].upper() + singular[1:]


@dataclass(slots=True)
class ResourceRegistry:
    """Known kinds: the built-in table plus any resource first created through the API."""

    kinds: dict[ResourceRef, KindInfo] = field(default_factory=lambda: dict(BUILTIN_KINDS))

    def kind_of(self, ref: ResourceRef) -> str:
        """The ``Kind`` of ``ref`` (guessed from the plural when unknown)."""
        info = self.kinds.get(ref)
        return info.kind if info else guess_kind(ref.plural)

    def known_kind(self, ref: ResourceRef) -> str | None:
        """The registered ``Kind`` of ``ref`` or ``None``."""
        info = self.kinds.get(ref)
        return info.kind if info else None

    def has_status(self, ref: ResourceRef) -> bool:
        """Whether ``ref`` has a ``/status`` subresource (assumed for unknown resources)."""
        info = self.kinds.get(ref)
        return info.has_status if info else True

    def register(self, ref: ResourceRef, kind: str) -> None:
        """Remember ``kind`` for a resource first seen in a create request."""
        if ref not in self.kinds:
            self.kinds[ref] = KindInfo(kind, kind.lower())

    def reset(self) -> None:
        """Forget dynamically registered resources."""
        self.kinds = dict(BUILTIN_KINDS)

    def groups(self) -> dict[str, list[str]]:
        """Map of non-core API group to its versions (sorted)."""
        out: dict[str, set[str]] = {KUBEVIRT_SUBRESOURCES_GROUP: {"v1"}}
        for ref in self.kinds:
            if ref.group != CORE_GROUP:
                out.setdefault(ref.group, set()).add(ref.version)
        return {group: sorted(versions) for group, versions in sorted(out.items())}

    def api_resources(self, group: str, version: str) -> list[dict[str, Any]] | None:
        """The ``APIResource`` entries of one group/version, ``None`` if it is unknown."""
        if group == KUBEVIRT_SUBRESOURCES_GROUP and version == "v1":
            return [
                {
                    "name": f"virtualmachines/{action}",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "VirtualMachine",
                    "verbs": list(_UPDATE_ONLY),
                }
                for action in KUBEVIRT_ACTIONS
            ]
        entries: list[dict[str, Any]] = []
        for ref, info in sorted(self.kinds.items()):
            if ref.group != group or ref.version != version:
                continue
            entry: dict[str, Any] = {
                "name": ref.plural,
                "singularName": info.singular,
                "namespaced": True,
                "kind": info.kind,
                "verbs": list(info.verbs),
            }
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            entries.append(entry)
            for sub in info.subresources:
                entries.append(
                    {
                        "name": f"{ref.plural}/{sub}",
                        "singularName": "",
                        "namespaced": True,
                        "kind": info.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return entries or None
