"""Kubernetes identities derived from Infraflow ids (pure).

Every object the agent creates is named after the resource id alone, so a repeated step finds
the object an earlier attempt created (create-or-get) instead of creating a second one:

* name: ``<prefix>-<30 lowercase base36 chars>`` — the id's 26 base62 characters re-encoded
  (Kubernetes names are lowercase DNS labels; base62 is case-sensitive), reversible with
  :func:`resource_id_of`; e.g. ``cls_0LX1...`` -> ``cls-0a9z...``;
* namespace: the project id, which must be a DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``,
  at most 63 characters), optionally behind a deployment-wide prefix;
* labels ``app.kubernetes.io/managed-by: infraflow``, ``infraflow.dev/resource-id`` and
  ``infraflow.dev/project``: informers select by the first and map objects back to resources
  by the second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from infraflow.common.ids import ALPHABET, BODY_LENGTH, is_id

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "infraflow"
RESOURCE_ID_LABEL: Final = "infraflow.dev/resource-id"
PROJECT_LABEL: Final = "infraflow.dev/project"
DISPLAY_NAME_ANNOTATION: Final = "infraflow.dev/display-name"
CREATED_BY_RUN_ANNOTATION: Final = "infraflow.dev/created-by-run"
RESERVED_PREFIXES: Final = ("infraflow.dev/", MANAGED_BY_LABEL)
"""Label and annotation keys a caller may not set: the agent owns them."""
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

_BASE36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_NAME_WIDTH: Final = 30  # 62**26 < 36**30
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_PREFIX: Final = {"cls": "cls", "vm": "vm"}


@dataclass(frozen=True, slots=True)
class ApiRef:
    """One REST resource of a group/version (``plural`` as in the URL)."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def object_name(resource_id: str) -> str:
    """The Kubernetes name of the object that backs ``resource_id`` (``cls_…`` or ``vm_…``)."""
    prefix, _, body = resource_id.partition("_")
    if prefix not in _NAME_PREFIX or not is_id(resource_id, prefix):
        raise ValueError(f"not a cluster or VM id: {resource_id!r}")
    value = 0
    for c in body:
        value = value * 62 + ALPHABET.index(c)
    digits = []
    for _ in range(_NAME_WIDTH):
        value, rem = divmod(value, 36)
        digits.append(_BASE36[rem])
    return f"{_NAME_PREFIX[prefix]}-{''.join(reversed(digits))}"


def resource_id_of(name: str) -> str | None:
    """The resource id an object name was derived from, or None for a foreign name."""
    prefix, sep, digits = name.partition("-")
    if not sep or prefix not in _NAME_PREFIX.values() or len(digits) != _NAME_WIDTH:
        return None
    if any(c not in _BASE36 for c in digits):
        return None
    value = 0
    for c in digits:
        value = value * 36 + _BASE36.index(c)
    body = []
    for _ in range(BODY_LENGTH):
        value, rem = divmod(value, 62)
        body.append(ALPHABET[rem])
    if value:
        return None
    id_prefix = next(k for k, v in _NAME_PREFIX.items() if v == prefix)
    return f"{id_prefix}_{''.join(reversed(body))}"


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 label (what a namespace name must be)."""
    return bool(_DNS_LABEL.match(value))


def namespace_for(project_id: str | None, prefix: str = "") -> str:
    """The namespace holding a project's clusters and VMs: ``<prefix><project id>``."""
    if not project_id:
        raise ValueError("clusters and VMs belong to a project; the run has none")
    namespace = f"{prefix}{project_id}"
    if not is_dns_label(namespace):
        raise ValueError(
            f"namespace {namespace!r} (from the project id) is not a DNS-1123 label: "
            "lowercase letters, digits and '-', at most 63 characters"
        )
    return namespace


def labels_for(resource_id: str, project_id: str) -> dict[str, str]:
    """The labels the agent puts on every object it creates."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        RESOURCE_ID_LABEL: resource_id,
        PROJECT_LABEL: project_id,
    }


def owned_by(obj: dict[str, object], resource_id: str) -> bool:
    """Whether ``obj`` is the object the agent created for ``resource_id``."""
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return isinstance(labels, dict) and labels.get(RESOURCE_ID_LABEL) == resource_id


def is_reserved_key(key: str) -> bool:
    """Label/annotation keys the agent owns (a caller's own keys must not collide)."""
    return any(key == p or key.startswith(p) for p in RESERVED_PREFIXES)
