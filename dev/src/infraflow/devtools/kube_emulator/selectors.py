"""Label and field selectors (the subset of the Kubernetes grammar the emulator needs).

Label selectors support ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists) and ``!k`` (does not exist), comma-separated (all must hold). Field
selectors support ``metadata.name`` and ``metadata.namespace`` with ``=``, ``==``, ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Requirement:
    """One label requirement: ``op`` is ``in``, ``notin``, ``exists`` or ``!exists``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; raise ``ApiError`` 400 when it is malformed."""
    if not text or not text.strip():
        return []
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        if not raw.strip():
            raise bad_request(f"unable to parse requirement: empty requirement in {text!r}")
        requirements.append(_parse_requirement(raw, text))
    return requirements


def _parse_requirement(raw: str, text: str) -> Requirement:
    if match := _SET_RE.match(raw):
        values = [v.strip() for v in match["values"].split(",")]
        if any(not _VALUE_RE.match(v) for v in values):
            raise bad_request(f"unable to parse requirement: invalid value in {text!r}")
        return Requirement(match["key"], match["op"], frozenset(values))
    if match := _EQ_RE.match(raw):
        op = "notin" if match["op"] == "!=" else "in"
        return Requirement(match["key"], op, frozenset({match["value"]}))
    if match := _EXISTS_RE.match(raw):
        return Requirement(match["key"], "!exists" if match["neg"] else "exists")
    raise bad_request(f"unable to parse requirement: {raw.strip()!r} in selector {text!r}")


def label_predicate(text: str | None) -> Predicate:
    """A predicate over whole objects that checks ``metadata.labels`` against ``text``."""
    requirements = parse_label_selector(text)

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req.matches(labels) for req in requirements)

    return predicate


_FIELD_RE = re.compile(r"^\s*(?P<field>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")
_SUPPORTED_FIELDS = {"metadata.name": "name", "metadata.namespace": "namespace"}


def field_predicate(text: str | None) -> Predicate:
    """A predicate for a field selector over ``metadata.name`` / ``metadata.namespace``."""
    checks: list[tuple[str, bool, str]] = []
    if text and text.strip():
        for raw in text.split(","):
            match = _FIELD_RE.match(raw)
            if not match:
                raise bad_request(f"invalid field selector: {raw.strip()!r}")
            attr = _SUPPORTED_FIELDS.get(match["field"])
            if attr is None:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'Unable to find "{match["field"]}" field label: field label not supported',
                )
            checks.append((attr, match["op"] != "!=", match["value"]))

    def predicate(obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return all((metadata.get(attr, "") == value) is equal for attr, equal, value in checks)

    return predicate


def combine(*predicates: Predicate) -> Predicate:
    """A predicate that holds when all of ``predicates`` hold."""

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all(p(obj) for p in predicates)

    return predicate
