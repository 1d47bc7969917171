"""``GET /asyncapi.json``: the AsyncAPI 3.0 document of the NATS contract (every subject and
payload the services publish), generated from the wire contracts by
``infraflow.common.asyncapi``. Public, like the OpenAPI document under ``/schema``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get

from infraflow.common.asyncapi import document_text
from infraflow.gateway.auth import EXCLUDE_OPT_KEY

MEDIA_TYPE = "application/json"


class AsyncApiController(Controller):
    """The event-side API document, next to the REST one."""

    path = "/"
    tags = ["operations"]
    opt = {EXCLUDE_OPT_KEY: True}
    security = [{}]

    @get(
        "/asyncapi.json",
        operation_id="getAsyncApi",
        summary="The AsyncAPI 3.0 document of the NATS subjects and payloads",
        description="Every channel (streams, core subjects, query request/reply, KV bucket "
        "keys) with its parameters and the JSON Schema of each payload. The same document is "
        "kept in the repository as `docs/asyncapi.json`.",
        sync_to_thread=False,
    )
    def asyncapi(self) -> Response[dict[str, Any]]:  # the body is the JSON document
        body: Any = document_text().encode()  # already JSON: sent as it is, not re-encoded
        return Response(
            body,
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "public, max-age=300"},
        )
