"""Reading Kubernetes objects (decoded JSON) safely: metadata, conditions, generations (pure)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object as decoded JSON."""


def meta(obj: Obj) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def spec(obj: Obj) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def status(obj: Obj) -> dict[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("annotations")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def labels_of(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("labels")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def generation(obj: Obj) -> int:
    value = meta(obj).get("generation")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


def resource_version(obj: Obj) -> str | None:
    value = meta(obj).get("resourceVersion")
    return str(value) if value else None


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def condition(obj: Obj, type_: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of ``type_``, if any."""
    for c in status(obj).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def condition_true(obj: Obj, type_: str) -> bool:
    c = condition(obj, type_)
    return c is not None and c.get("status") == "True"


def conditions_summary(obj: Obj) -> list[dict[str, Any]]:
    """Conditions as the cache shows them: type, status, reason, message, lastTransitionTime."""
    keep = ("type", "status", "reason", "message", "lastTransitionTime")
    return [
        {k: c[k] for k in keep if k in c}
        for c in status(obj).get("conditions") or []
        if isinstance(c, dict)
    ]
