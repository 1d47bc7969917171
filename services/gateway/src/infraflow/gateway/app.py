"""Composition root: ``create_app(settings)`` wires the gateway; ``main()`` serves it.

The broker connection is made in the background at start-up, so ``/healthz`` answers while the
broker is down (``/readyz`` and broker-backed endpoints answer 503 until it is reachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag

from infraflow.common.catalog import load_catalog
from infraflow.common.contracts import ResourceEntry
from infraflow.common.logs import setup_logging
from infraflow.common.provisioning import derive_callback_key
from infraflow.common.streams import KV_RESOURCES
from infraflow.common.vault import Vault
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.adapters.kvmirror import KvMirror
from infraflow.gateway.auth import BearerAuthMiddleware, JwtVerifier
from infraflow.gateway.controllers.asyncapi import AsyncApiController
from infraflow.gateway.controllers.bulk import BulkRunController
from infraflow.gateway.controllers.clusters import ClusterController
from infraflow.gateway.controllers.health import HealthController
from infraflow.gateway.controllers.servers import ServerController
from infraflow.gateway.controllers.support import REQUEST_ID_HEADERS, provide_principal
from infraflow.gateway.controllers.telemetry import (
    MetricsController,
    count_response,
    trace_context,
)
from infraflow.gateway.controllers.ui import ConsoleController
from infraflow.gateway.controllers.vms import VmController
from infraflow.gateway.controllers.webhooks import WebhookController
from infraflow.gateway.controllers.workflows import WorkflowController
from infraflow.gateway.core.idempotency import fingerprint_secret
from infraflow.gateway.errors import handle_exception
from infraflow.gateway.launcher import RunLauncher
from infraflow.gateway.operations import Operations
from infraflow.gateway.operations_k8s import ComputeOperations
from infraflow.gateway.ratelimit import RateLimiter, rate_limit_middleware
from infraflow.gateway.responses import RequestIds
from infraflow.gateway.settings import GatewaySettings
from infraflow.gateway.webhooks.deliveries import DeliveryLog
from infraflow.gateway.webhooks.dispatcher import WebhookDispatcher
from infraflow.gateway.webhooks.operations import WebhookOperations
from infraflow.gateway.webhooks.sender import WebhookSender
from infraflow.gateway.webhooks.ssrf import DestinationGuard
from infraflow.gateway.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_DESCRIPTION = """Durable workflows for infrastructure operations.

Every response is an envelope: `{"success": true, "data", "meta"}` or
`{"success": false, "error": {"code", "message", "details"}, "meta"}`; `meta.requestId` is also
in the `X-Request-Id` header. Anything touching a BMC or Kubernetes answers `202 Accepted` with
the run summary; follow `Location` (`/v1/workflows/runs/{runId}`).

**Auth.** `Authorization: Bearer <JWT>` on everything but the probes, `/metrics` and the API
documents. Claims: `sub` (the user; becomes a run's `triggeredBy`), `roles` (Atlas:
`super_admin`, `provider_admin`, `provider_operator` write; `support`, `provider_revenue` read)
and `projects` (Arc: project id -> `admin` | `member` | `viewer`). Arc users see and act only in
their projects (admins and members act, viewers read); anything outside them is `404`.

**Limits.** Bodies above the configured size are `413 PAYLOAD_TOO_LARGE`. Requests are rate
limited per user and route (token buckets, per gateway replica): `429 RATE_LIMITED` with
`Retry-After`. Run-starting requests accept an `Idempotency-Key` (24 h).

**Webhooks** (`/v1/webhooks`) deliver run events signed per Standard Webhooks, at least once,
retried with backoff for hours; see `createWebhook`.
"""


def create_app(settings: GatewaySettings | None = None, broker: Broker | None = None) -> Litestar:
    """Build the gateway. ``broker`` may be injected (tests); it is started and closed with
    the app either way."""
    settings = settings or GatewaySettings()
    verifier = JwtVerifier(settings.auth)
    keys = settings.credential_key_list
    vault = Vault(keys)
    catalog = load_catalog(settings.catalog_extra_file)
    broker = broker or Broker(settings.nats, publish_timeout_s=settings.publish_timeout_s)
    launcher = RunLauncher(
        broker,
        vault,
        fingerprint_secret=fingerprint_secret(keys),
        estimate_timeout_s=settings.estimate_timeout_s,
        idempotency_wait_s=settings.idempotency_wait_s,
        idempotency_stale_s=settings.idempotency_stale_s,
    )
    directory: KvMirror[ResourceEntry] = KvMirror(
        broker,
        KV_RESOURCES,
        msgspec.json.Decoder(ResourceEntry).decode,
        newer=lambda held, update: update.seq >= held.seq,
    )
    operations = Operations(
        broker,
        launcher,
        catalog,
        settings.query_timeout_s,
        vault=vault,
        callback_keys=[derive_callback_key(k) for k in keys],
        directory=directory,
    )
    compute = ComputeOperations(broker, launcher, catalog, settings.query_timeout_s)
    request_ids = RequestIds(settings.region)
    hooks = settings.webhooks
    guard = DestinationGuard(hooks.allow_networks, allow_public=hooks.allow_public)
    webhook_store = WebhookStore(broker)
    delivery_log = DeliveryLog(broker, settings.publish_timeout_s)
    sender = WebhookSender(guard, hooks.timeout_s)
    dispatcher = WebhookDispatcher(
        broker,
        webhook_store,
        delivery_log,
        sender,
        vault,
        hooks,
        publish_timeout_s=settings.publish_timeout_s,
    )
    webhook_ops = WebhookOperations(
        webhook_store, delivery_log, dispatcher, guard, vault, catalog, hooks.max_webhooks
    )
    registry_stop = asyncio.Event()
    registry_task: list[asyncio.Task[None]] = []
    middleware: list[Any] = [
        trace_context,
        DefineMiddleware(BearerAuthMiddleware, verifier=verifier),
    ]
    if settings.rate_limit.enabled:
        middleware.append(rate_limit_middleware(RateLimiter(settings.rate_limit)))

    def provide_operations() -> Operations:
        return operations

    def provide_compute() -> ComputeOperations:
        return compute

    def provide_webhooks() -> WebhookOperations:
        return webhook_ops

    async def start_broker() -> None:
        await broker.start()
        registry_stop.clear()
        registry_task.append(
            asyncio.create_task(webhook_store.follow(registry_stop), name="webhook-registry")
        )
        registry_task.append(
            asyncio.create_task(directory.follow(registry_stop), name="resource-directory")
        )
        if hooks.dispatcher:
            dispatcher.start()

    async def stop() -> None:
        await dispatcher.close()
        registry_stop.set()
        for task in registry_task:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        registry_task.clear()
        await sender.close()
        await launcher.close()
        await broker.close()
        log.info("gateway stopped")

    return Litestar(
        route_handlers=[
            HealthController,
            AsyncApiController,
            MetricsController,
            ServerController,
            WorkflowController,
            BulkRunController,
            ConsoleController,
            ClusterController,
            VmController,
            WebhookController,
        ],
        dependencies={
            "operations": Provide(provide_operations, sync_to_thread=False),
            "compute": Provide(provide_compute, sync_to_thread=False),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "webhooks": Provide(provide_webhooks, sync_to_thread=False),
        },
        middleware=middleware,
        exception_handlers={Exception: handle_exception},
        before_send=[request_ids.add_header, count_response],
        response_headers=REQUEST_ID_HEADERS,
        on_startup=[start_broker],
        on_shutdown=[stop],
        openapi_config=_openapi(),
        request_max_body_size=settings.http.max_body_bytes,
        state=State({"request_ids": request_ids, "bulk_max_runs": settings.bulk_max_runs}),
        logging_config=None,
        debug=False,
    )


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Infraflow API",
        version=API_VERSION,
        description=_DESCRIPTION,
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(), JsonRenderPlugin()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
        security=[{"bearer": []}],
        tags=[
            Tag(name="workflows", description="Runs and the workflow catalog"),
            Tag(name="servers", description="Bare metal servers"),
            Tag(name="clusters", description="Kubernetes clusters of a project (k0rdent)"),
            Tag(name="vms", description="Virtual machines of a project (KubeVirt)"),
            Tag(name="webhooks", description="Webhook registrations, deliveries and test pings"),
            Tag(name="operations", description="Health probes"),
        ],
        use_handler_docstrings=True,
    )


def main() -> None:
    """Serve the gateway with uvicorn until SIGTERM/SIGINT, then shut down gracefully:
    in-flight requests finish, the broker connection is drained."""
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level, settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        lifespan="on",
        # uvloop and httptools: at a few hundred requests per second on a shared node the pure
        # Python loop and HTTP parser were most of the 202's tail latency
        loop="uvloop",
        http="httptools",
        server_header=False,
        timeout_graceful_shutdown=int(settings.http.graceful_shutdown_s),
    )
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, finish in-flight requests, run the
    # shutdown hooks), then re-raises the signal; this handler turns that into a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    log.info("serving on %s:%s", settings.http.host, settings.http.port)
    uvicorn.Server(config).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
