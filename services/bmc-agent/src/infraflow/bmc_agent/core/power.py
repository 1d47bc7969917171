"""Power actions as data: the state each action ends in, and what output the cache learns."""

from __future__ import annotations

from typing import Final

POWER_ACTIONS: Final = frozenset({"on", "off", "reboot", "shutdown", "force-off", "force-reboot"})

TARGET_STATE: Final[dict[str, str]] = {
    "on": "On",
    "reboot": "On",
    "force-reboot": "On",
    "off": "Off",
    "shutdown": "Off",
    "force-off": "Off",
}

NOT_IDEMPOTENT: Final = frozenset({"reboot", "force-reboot"})
"""Actions whose effect repeats if issued twice: guarded by an effect marker per attempt."""


def target_state(action: str) -> str:
    """The power state a completed ``action`` leaves the system in."""
    try:
        return TARGET_STATE[action]
    except KeyError:
        raise ValueError(f"unknown power action {action!r}") from None
