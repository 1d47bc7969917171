"""Who the caller is and what they may do: the role rules, as data and small pure functions.

Atlas users (provider staff) carry ``roles``; the write roles act on the whole fleet, the read
roles see everything. Arc users (tenants) carry ``projects`` (project id -> ``admin`` | ``member``
| ``viewer``) and see and act only inside those projects; anything outside them is reported as
not found, never as forbidden, so nothing leaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from infraflow.gateway.core.errors import ForbiddenError, UnauthorizedError

ATLAS_WRITE_ROLES: Final = frozenset({"super_admin", "provider_admin", "provider_operator"})
ATLAS_READ_ROLES: Final = frozenset({"support", "provider_revenue"}) | ATLAS_WRITE_ROLES
TERMINATE_ROLES: Final = frozenset({"super_admin", "provider_admin"})
PROJECT_ROLES: Final = frozenset({"admin", "member", "viewer"})
PROJECT_ACTING_ROLES: Final = frozenset({"admin", "member"})

ARC_SERVER_WORKFLOWS: Final = frozenset({"server.lifecycle"})
"""Server workflows that Arc members may start on servers of their projects."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    subject: str
    roles: frozenset[str] = frozenset()
    projects: Mapping[str, str] = field(default_factory=dict)
    org: str | None = None

    @property
    def is_fleet_reader(self) -> bool:
        """Any Atlas role: sees every run and resource."""
        return bool(self.roles & ATLAS_READ_ROLES)

    @property
    def is_fleet_writer(self) -> bool:
        """An Atlas write role: may act on any resource."""
        return bool(self.roles & ATLAS_WRITE_ROLES)

    @property
    def can_terminate(self) -> bool:
        return bool(self.roles & TERMINATE_ROLES)

    @property
    def scope_projects(self) -> list[str] | None:
        """What to pass as ``scope_projects`` in queries: ``None`` means unrestricted."""
        return None if self.is_fleet_reader else sorted(self.projects)

    def sees_project(self, project_id: str | None) -> bool:
        """Whether a run or resource owned by ``project_id`` is visible to this caller."""
        return self.is_fleet_reader or (project_id is not None and project_id in self.projects)

    def acts_in_project(self, project_id: str | None) -> bool:
        """Whether the caller may start runs on resources owned by ``project_id``."""
        if self.is_fleet_writer:
            return True
        return project_id is not None and self.projects.get(project_id) in PROJECT_ACTING_ROLES


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build the principal from verified JWT claims; malformed claims are ``UNAUTHORIZED``."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise UnauthorizedError("the token has no usable 'sub' claim")
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise UnauthorizedError("the token's 'roles' claim must be a list of strings")
    projects = claims.get("projects", {})
    if projects is None:
        projects = {}
    if not isinstance(projects, dict) or not all(
        isinstance(k, str) and v in PROJECT_ROLES for k, v in projects.items()
    ):
        raise UnauthorizedError(
            "the token's 'projects' claim must map project ids to admin, member or viewer"
        )
    org = claims.get("org")
    return Principal(
        subject=sub,
        roles=frozenset(roles),
        projects=dict(projects),
        org=org if isinstance(org, str) else None,
    )


def require_fleet_writer(principal: Principal) -> None:
    """Atlas write roles only."""
    if not principal.is_fleet_writer:
        raise ForbiddenError("this operation needs an Atlas write role")


def may_start_on_server(principal: Principal, workflow_type: str) -> bool:
    """Whether the caller could start ``workflow_type`` on *some* server (checked before any
    lookup, so callers who never could are told so without a round trip)."""
    if principal.is_fleet_writer:
        return True
    return workflow_type in ARC_SERVER_WORKFLOWS and any(
        role in PROJECT_ACTING_ROLES for role in principal.projects.values()
    )


def authorize_server_workflow(
    principal: Principal, workflow_type: str, project_id: str | None
) -> None:
    """Raise ``FORBIDDEN`` unless the caller may start ``workflow_type`` on a visible server
    owned by ``project_id``."""
    if principal.is_fleet_writer:
        return
    if workflow_type in ARC_SERVER_WORKFLOWS and principal.acts_in_project(project_id):
        return
    raise ForbiddenError(f"not allowed to start {workflow_type} on this server")


def authorize_cancel(principal: Principal, project_id: str | None, terminate: bool) -> None:
    """Cancelling needs an Atlas write role or acting rights in the run's project;
    terminating (no compensation) needs ``super_admin`` or ``provider_admin``."""
    if terminate and not principal.can_terminate:
        raise ForbiddenError("terminate needs the super_admin or provider_admin role")
    if not principal.acts_in_project(project_id):
        raise ForbiddenError("not allowed to cancel this run")
