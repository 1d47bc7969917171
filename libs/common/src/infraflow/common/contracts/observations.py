"""Observations of the real world: ``INFRA_OBSERVED`` on ``infra.observed.<type>.<id>``.

Informers (k8s-agent) and power sync (bmc-agent) publish what they see; the stream keeps the last
observation per resource. The projector compares them with its cache and starts ``sync.*`` runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from infraflow.common.contracts.base import Contract


class ResourceObserved(Contract, frozen=True, kw_only=True, tag_field="kind", tag="observed"):
    """The observed state of one resource at ``observed_at``."""

    resource_type: str
    resource_id: str
    observed_at: datetime
    source: str
    site: str | None = None
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    gone: bool = False
