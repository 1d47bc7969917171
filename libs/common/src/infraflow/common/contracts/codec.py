"""JSON encoding and decoding of contracts, with decoders built once per union."""

from __future__ import annotations

from typing import Any

import msgspec

from infraflow.common.contracts.commands import AnyCommand
from infraflow.common.contracts.events import AnyRunEvent
from infraflow.common.contracts.queries import AnyQuery, QueryReply

_encoder = msgspec.json.Encoder()
_event_decoder: msgspec.json.Decoder[AnyRunEvent] = msgspec.json.Decoder(AnyRunEvent)
_command_decoder: msgspec.json.Decoder[AnyCommand] = msgspec.json.Decoder(AnyCommand)
_query_decoder: msgspec.json.Decoder[AnyQuery] = msgspec.json.Decoder(AnyQuery)
_reply_decoder: msgspec.json.Decoder[QueryReply] = msgspec.json.Decoder(QueryReply)


def encode(message: Any) -> bytes:
    """Encode any contract (or plain data) as compact JSON."""
    return _encoder.encode(message)


def decode_event(data: bytes) -> AnyRunEvent:
    """Decode one run event; raises ``msgspec.ValidationError`` on a malformed payload."""
    return _event_decoder.decode(data)


def decode_events(items: list[bytes]) -> list[AnyRunEvent]:
    return [_event_decoder.decode(d) for d in items]


def decode_command(data: bytes) -> AnyCommand:
    return _command_decoder.decode(data)


def decode_query(data: bytes) -> AnyQuery:
    return _query_decoder.decode(data)


def decode_reply(data: bytes) -> QueryReply:
    return _reply_decoder.decode(data)
