"""The per-resource lock record in the ``wf-locks`` bucket (part of the public NATS contract).

One key per busy resource, ``<resourceType>.<resourceId>``, holding
``{"holder": runId, "queue": [runIds waiting, oldest first]}``. The orchestrator changes it only
by compare-and-set; the gateway reads it to answer ``409 RESOURCE_BUSY`` at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(slots=True)
class LockEntry:
    holder: str
    queue: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps({"holder": self.holder, "queue": self.queue}).encode()

    @staticmethod
    def decode(raw: bytes | None) -> LockEntry | None:
        if not raw:
            return None
        data = json.loads(raw)
        return LockEntry(holder=str(data["holder"]), queue=[str(q) for q in data.get("queue", [])])


def lock_key(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}.{resource_id}"
