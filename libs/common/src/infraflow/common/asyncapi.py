"""The AsyncAPI 3.0 document of Infraflow's NATS contract, generated from the wire contracts.

Every subject a service publishes is a channel here: the JetStream streams' subjects (with their
tokens as parameters), the core NATS subjects (heartbeats, cancel notices, read-model queries
and their replies) and the keys of the KV buckets. Payload schemas come from the msgspec
contracts (``msgspec.json.schema_components``), so the document cannot drift from the code
without ``tests/common/test_asyncapi.py`` noticing: ``docs/asyncapi.json`` is checked in and
must equal what this module generates.

    python -m infraflow.common.asyncapi              # write docs/asyncapi.json
    python -m infraflow.common.asyncapi --check      # exit 1 if the checked-in file is stale

``channel_for(document, subject)`` finds the channel of a concrete subject (used by the
end-to-end wiretap test, and by anyone routing messages by the document).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import msgspec

from infraflow.common import streams
from infraflow.common.asyncapi_channels import PARAMETERS, ChannelSpec, channel_specs
from infraflow.common.contracts import SCHEMA_VERSION

ASYNCAPI_VERSION: Final = "3.0.0"
DOCUMENT_VERSION: Final = "1.0.0"
DEFAULT_PATH: Final = Path("docs/asyncapi.json")
SCHEMAS_REF: Final = "#/components/schemas/{name}"
INTERNAL_PREFIXES: Final = ("_INBOX.", "$JS.", "$KV.", "$SYS.", "$O.")
"""Subjects of the NATS machinery itself (inboxes, the JetStream API and acks, raw KV and
object-store subjects, system events): not Infraflow channels, though the KV buckets' keys are
described below for their values."""


# ---- the document ------------------------------------------------------------------------

_DESCRIPTION = """Infraflow's public NATS contract: every subject the services publish and \
the JSON payload on it.

* Payloads are JSON objects with camelCase names. Polymorphic messages carry their tag: \
`command` (commands, timers), `event` (run events), `kind` (heartbeats, cancel notices, \
observations), `query` (queries). Fields are only ever added (with defaults); a breaking \
change gets a new tag. Run events carry `schemaVersion`.
* Streams: `WF_COMMANDS`, `WF_EVENTS` (the audit log, kept), `WF_STEPS`, `WF_TIMERS`, \
`INFRA_OBSERVED`. Core NATS: `wf.heartbeat.*`, `wf.cancel.*`, `wf.query.*`.
* KV buckets are described as channels `$KV.<bucket>.<key>` for their values; the JetStream API \
(`$JS.…`) and inboxes (`_INBOX.…`) are NATS machinery, not part of this contract.
* Generated from `infraflow.common.contracts` by `python -m infraflow.common.asyncapi`."""


def _message_key(message: Any) -> str:
    return message[0] if isinstance(message, tuple) else str(message.__name__)


def _contract_types(specs: Sequence[ChannelSpec]) -> list[type]:
    seen: dict[str, type] = {}
    for spec in specs:
        for message in spec.messages:
            if not isinstance(message, tuple):
                seen.setdefault(message.__name__, message)
    return list(seen.values())


def _summary(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".") if text else ""


def _message(message: Any, headers: str | None) -> dict[str, Any]:
    if isinstance(message, tuple):
        name, schema, text = message
        out: dict[str, Any] = {"name": name, "title": name, "summary": text, "payload": schema}
    else:
        name = message.__name__
        out = {
            "name": name,
            "title": name,
            "summary": _summary(message.__doc__) or name,
            "payload": {"$ref": SCHEMAS_REF.format(name=name)},
        }
    out["contentType"] = "application/json"
    if headers:
        out["headers"] = {"$ref": SCHEMAS_REF.format(name=headers)}
    return out


def _headers_schema(headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "NATS message headers.",
        "properties": {h: {"type": "string", "description": d} for h, d in headers.items()},
    }


def _message_id(spec: ChannelSpec, name: str, taken: Mapping[str, Any], body: Any) -> str:
    """The message's component name: its own, unless taken by a different message (the same
    payload with other headers on another channel)."""
    if taken.get(name, body) == body:
        return name
    return f"{name}On{spec.key[0].upper()}{spec.key[1:]}"


def _stream_info(name: str) -> dict[str, Any]:
    config = next(c for c in streams.stream_configs(streams.Topology()) if c.name == name)
    retention = config.retention.value if config.retention is not None else "limits"
    return {"name": name, "subjects": list(config.subjects or []), "retention": retention}


def _parameters(address: str | None) -> dict[str, Any]:
    names = re.findall(r"{(\w+)}", address or "")
    return {n: dict(PARAMETERS[n]) for n in names}


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as plain JSON data (deterministic)."""
    specs = channel_specs()
    types = _contract_types(specs)
    _, schemas = msgspec.json.schema_components(types, ref_template=SCHEMAS_REF)
    _refine(schemas, types)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in specs:
        channel_messages: dict[str, Any] = {}
        for message in spec.messages:
            if spec.headers:
                schemas.setdefault(spec.headers[0], _headers_schema(spec.headers[1]))
            body = _message(message, spec.headers[0] if spec.headers else None)
            component = _message_id(spec, _message_key(message), messages, body)
            messages[component] = body
            ref = {"$ref": f"#/components/messages/{component}"}
            channel_messages[_message_key(message)] = ref
        channel: dict[str, Any] = {"address": spec.address}
        channel["description"] = spec.description
        if spec.address:
            params = _parameters(spec.address)
            if params:
                channel["parameters"] = params
        channel["messages"] = channel_messages
        channel["tags"] = [{"name": spec.tag}]
        if spec.stream:
            channel["x-nats-stream"] = _stream_info(spec.stream)
        if spec.bucket:
            channel["x-nats-kv-bucket"] = spec.bucket
        channels[spec.key] = channel
        refs = [{"$ref": f"#/channels/{spec.key}/messages/{m}"} for m in channel_messages]
        for action, services in (("send", spec.senders), ("receive", spec.receivers)):
            if not services:
                continue
            operation: dict[str, Any] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{spec.key}"},
                "summary": f"{' / '.join(services)} {action}{'s' if len(services) == 1 else ''}",
                "messages": refs,
                "x-services": list(services),
            }
            if spec.queue and action == "receive":
                operation["bindings"] = {"nats": {"queue": spec.queue, "bindingVersion": "0.1.0"}}
            if spec.reply:
                operation["reply"] = {"channel": {"$ref": f"#/channels/{spec.reply}"}}
            operations[f"{spec.key}{action.capitalize()}"] = operation
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Infraflow NATS contract",
            "version": DOCUMENT_VERSION,
            "description": _DESCRIPTION,
            "x-schema-version": SCHEMA_VERSION,
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`python3 dev.py up`",
            },
            "cluster": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "The NATS JetStream cluster of a deployment (deploy/kubernetes)",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _refine(schemas: dict[str, Any], types: Sequence[type]) -> None:
    """What msgspec's schemas leave out: ``format: date-time`` on datetime fields; and
    docstring indentation out of descriptions."""
    pending = list(msgspec.inspect.multi_type_info(types))
    seen: set[str] = set()
    while pending:
        info = pending.pop()
        if isinstance(info, msgspec.inspect.UnionType):
            pending.extend(info.types)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            pending.extend(
                [info.item_type]
                if isinstance(info, msgspec.inspect.ListType)
                else [info.value_type]
            )
        elif isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
            name = info.cls.__name__
            if name in seen or name not in schemas:
                continue
            seen.add(name)
            properties = schemas[name].get("properties", {})
            for f in info.fields:
                _mark_datetime(properties.get(f.encode_name), f.type)
                pending.append(f.type)
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = " ".join(schema["description"].split())


def _mark_datetime(schema: dict[str, Any] | None, info: msgspec.inspect.Type) -> None:
    if schema is None:
        return
    if isinstance(info, msgspec.inspect.DateTimeType):
        schema["format"] = "date-time"
    elif isinstance(info, msgspec.inspect.UnionType):
        for option in schema.get("anyOf", []):
            if option.get("type") == "string" and any(
                isinstance(t, msgspec.inspect.DateTimeType) for t in info.types
            ):
                option["format"] = "date-time"


def render(document: Mapping[str, Any]) -> str:
    """The document as the checked-in text (2-space JSON, trailing newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


@cache
def document_text() -> str:
    """The rendered document, built once per process (what the gateway serves)."""
    return render(build_document())


# ---- matching subjects ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelMatch:
    """A concrete subject resolved to its channel."""

    key: str
    parameters: dict[str, str]
    messages: dict[str, Any]
    """Message name -> the message object (``payload`` resolved to the component schema ref)."""


def channel_for(document: Mapping[str, Any], subject: str) -> ChannelMatch | None:
    """The channel whose address matches ``subject`` (parameters: one token each, within
    their ``enum`` if any), or ``None``."""
    for key, channel in document["channels"].items():
        address = channel.get("address")
        if not address:
            continue
        found = _address_pattern(address).fullmatch(subject)
        if found is None:
            continue
        values = found.groupdict()
        params = channel.get("parameters") or {}
        if any("enum" in params[n] and v not in params[n]["enum"] for n, v in values.items()):
            continue
        messages = {
            name: _resolve(document, ref["$ref"]) for name, ref in channel["messages"].items()
        }
        return ChannelMatch(key, values, messages)
    return None


def is_internal(subject: str) -> bool:
    """Subjects of the NATS machinery (inboxes, JetStream API, raw KV), not channels."""
    return subject.startswith(INTERNAL_PREFIXES)


@cache
def _address_pattern(address: str) -> re.Pattern[str]:
    parts = re.split(r"({\w+})", address)
    regex = "".join(
        f"(?P<{p[1:-1]}>[^.]+)" if p.startswith("{") and p.endswith("}") else re.escape(p)
        for p in parts
    )
    return re.compile(regex)


def payload_schema(
    document: Mapping[str, Any], message: Mapping[str, Any], *, closed: bool = False
) -> dict[str, Any]:
    """A self-contained JSON Schema of ``message``'s payload (the component schemas it refers
    to travel along). ``closed``: objects refuse properties the contract does not name, which
    is stricter than the document (fields may be added) and right for checking our own
    publishers against it."""
    schemas = copy.deepcopy(document["components"]["schemas"])
    payload = copy.deepcopy(message["payload"])
    if closed:
        for schema in [payload, *schemas.values()]:
            _close(schema)
    return {**payload, "components": {"schemas": schemas}}


def _close(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _close(value)
    elif isinstance(schema, list):
        for value in schema:
            _close(value)


def _resolve(document: Mapping[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


# ---- the command -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document (default ``docs/asyncapi.json``) or, with ``--check``, compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help="where to write it")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render(build_document())
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run python -m infraflow.common.asyncapi", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
