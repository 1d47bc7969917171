"""Tenancy: which projects a caller may see (``scope_projects``; None means every project)."""

from __future__ import annotations


def visible(project_id: str | None, scope: list[str] | None) -> bool:
    """Whether a run or resource of ``project_id`` is visible to a caller with ``scope``."""
    return scope is None or (project_id is not None and project_id in scope)


def narrow(requested: list[str] | None, scope: list[str] | None) -> list[str] | None:
    """The project filter to apply: the requested projects within the caller's scope (an empty
    list matches nothing), or None for no project filter at all."""
    if scope is None:
        return requested
    if requested is None:
        return list(scope)
    allowed = set(scope)
    return [p for p in requested if p in allowed]
