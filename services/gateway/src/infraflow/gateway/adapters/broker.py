"""The gateway's NATS connection: publish commands, ask the projector, use KV buckets.

The connection is made in the background, so the gateway serves ``/healthz`` (and answers 503
elsewhere) while the broker is down. Every foreign exception is mapped here, once:
unreachable, timed out or missing streams become ``BrokerUnavailableError``
(``SERVICE_UNAVAILABLE``); a projector's error reply becomes the error it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from infraflow.common import subjects
from infraflow.common.broker import connect, prepare
from infraflow.common.contracts import Query, QueryReply, decode_reply, encode
from infraflow.common.errors import (
    BrokerUnavailableError,
    ConflictError,
    InfraflowError,
    InvalidStateTransitionError,
    NotFoundError,
    ResourceBusyError,
    ValidationError,
)
from infraflow.common.logs import trace_headers
from infraflow.common.settings import NatsSettings
from infraflow.common.streams import (
    COMMANDS,
    EVENTS,
    KV_CREDENTIALS,
    KV_IDEMPOTENCY,
    KV_LOCKS,
    KV_PROVISIONING,
    KV_WEBHOOKS,
)
from infraflow.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BUCKETS: Final = (KV_IDEMPOTENCY, KV_CREDENTIALS, KV_LOCKS, KV_PROVISIONING, KV_WEBHOOKS)

_REPLY_ERRORS: Final[dict[str, type[InfraflowError]]] = {
    "VALIDATION_ERROR": ValidationError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "INVALID_STATE_TRANSITION": InvalidStateTransitionError,
    "RESOURCE_BUSY": ResourceBusyError,
}


@dataclass(frozen=True, slots=True)
class KvEntry:
    value: bytes
    revision: int


class Broker:
    """One NATS connection for the whole gateway process."""

    def __init__(
        self,
        settings: NatsSettings,
        *,
        publish_timeout_s: float = 2.0,
        name: str = "gateway",
    ) -> None:
        self._settings = settings
        self._publish_timeout_s = publish_timeout_s
        self._name = name
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[JetStreamContext] | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}

    # ---- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in the background (idempotent)."""
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._connect(), name="broker-connect")

    async def _connect(self) -> None:
        try:
            nc = await connect(self._settings, self._name, stop=self._stop)
            self._nc = nc
            js = nc.jetstream(timeout=self._publish_timeout_s)
            delay = 0.2
            while True:
                await prepare(nc, self._settings, stop=self._stop)
                try:
                    for bucket in BUCKETS:
                        self._kv[bucket] = await js.key_value(bucket)
                    break
                except nats.errors.Error as exc:
                    log.warning("key-value buckets not ready (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._js = js
            log.info("connected to the broker; streams and buckets are present")
        except ConnectionAbortedError:
            pass  # stopped before the broker was ever reachable
        except Exception:
            if not self._stop.is_set():
                log.exception("could not prepare the broker connection")

    async def close(self) -> None:
        """Stop connecting, drain the connection."""
        self._stop.set()
        await cancel_and_wait([t for t in (self._task, self._repair) if t is not None])
        self._task = self._repair = None
        nc, self._nc, self._js = self._nc, None, None
        self._kv.clear()
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5)
            with contextlib.suppress(Exception):
                await nc.close()

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def is_ready(self) -> bool:
        """Connected, with the topology ensured at least once."""
        return self.is_connected and self._js is not None

    async def streams_present(self, timeout_s: float = 1.0) -> bool:
        """A live check that the command and event streams exist (for ``/readyz``). Missing
        streams (a broker that lost its storage) are recreated in the background."""
        if not self.is_ready:
            return False
        js = self._jetstream()
        try:
            for stream in (COMMANDS, EVENTS):
                await asyncio.wait_for(js.stream_info(stream), timeout_s)
        except nats.js.errors.NotFoundError:
            self._repair_topology()
            return False
        except (TimeoutError, nats.errors.Error):
            return False
        return True

    def _repair_topology(self) -> None:
        if self._nc is None or (self._repair is not None and not self._repair.done()):
            return
        log.warning("streams are missing on the broker; creating them again")
        self._repair = asyncio.create_task(
            prepare(self._nc, self._settings, stop=self._stop), name="broker-repair"
        )

    def require_available(self) -> None:
        """Raise ``SERVICE_UNAVAILABLE`` now if the broker is not connected."""
        self._jetstream()

    def nats_client(self) -> Client:
        """The connection (503 ``SERVICE_UNAVAILABLE`` while disconnected), for components
        with their own subscriptions (the webhook dispatcher)."""
        return self._client()

    def jetstream(self) -> JetStreamContext:
        """The JetStream context (503 while disconnected or not prepared yet)."""
        return self._jetstream()

    def _jetstream(self) -> JetStreamContext:
        """The JetStream context, or 503 straight away when disconnected: nothing is buffered
        for later delivery while the caller is told it failed."""
        if self._js is None or not self.is_connected:
            raise BrokerUnavailableError("the message broker is not reachable; retry later")
        return self._js

    def _client(self) -> Client:
        if self._nc is None or not self._nc.is_connected:
            raise BrokerUnavailableError("the message broker is not reachable; retry later")
        return self._nc

    def _bucket(self, bucket: str) -> KeyValue:
        self._jetstream()
        return self._kv[bucket]

    # ---- commands ------------------------------------------------------------------------

    async def publish_command(self, subject: str, payload: bytes, msg_id: str) -> int:
        """Publish to ``WF_COMMANDS`` and wait for the acknowledgement; returns the sequence."""
        js = self._jetstream()
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                with _mapped("the command was not acknowledged"):
                    ack = await js.publish(
                        subject,
                        payload,
                        timeout=self._publish_timeout_s / attempts,
                        stream=COMMANDS,
                        headers={"Nats-Msg-Id": msg_id, **trace_headers()},
                    )
                return int(ack.seq)
            except BrokerUnavailableError as exc:
                if not isinstance(exc.__cause__, (TimeoutError, nats.errors.TimeoutError)):
                    raise
                # The command may have been stored with its ack lost: publishing it again
                # with the same message id is deduplicated by the stream, so retry.
                if attempt == attempts or not self.is_connected:
                    raise UncertainPublishError(
                        "the command was sent but not acknowledged; retry with the same "
                        "Idempotency-Key to get the same run"
                    ) from exc
        raise AssertionError("unreachable")

    # ---- queries -------------------------------------------------------------------------

    async def ask(self, query: Query, timeout_s: float) -> QueryReply:
        """Ask the projector; an error reply is raised as the error it names."""
        nc = self._client()
        tag = type(query).__struct_config__.tag
        assert isinstance(tag, str)
        with _mapped("the read model did not answer in time"):
            msg = await nc.request(subjects.query(tag), encode(query), timeout=timeout_s)
        try:
            reply = decode_reply(msg.data)
        except msgspec.ValidationError as exc:
            raise InfraflowError("the read model sent a malformed reply") from exc
        if not reply.ok:
            error = reply.error
            if error is None:
                raise InfraflowError("the read model failed without saying why")
            kind = _REPLY_ERRORS.get(error.code)
            if kind is None:
                raise InfraflowError(f"the read model failed ({error.code})")
            raise kind(error.message, details=error.details)
        return reply

    # ---- key-value -----------------------------------------------------------------------

    async def kv_get(self, bucket: str, key: str) -> KvEntry | None:
        kv = self._bucket(bucket)
        try:
            with _mapped("the key-value store did not answer"):
                entry = await kv.get(key)
        except _KvMissing:
            return None
        if entry.value is None:  # a limit marker, treated as absent
            return None
        return KvEntry(value=entry.value, revision=int(entry.revision or 0))

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int | None:
        """Create ``key``; None if it already exists."""
        kv = self._bucket(bucket)
        try:
            with _mapped("the key-value store did not answer"):
                return int(await kv.create(key, value))
        except _KvWrongRevision:
            return None

    async def kv_update(self, bucket: str, key: str, value: bytes, revision: int) -> int | None:
        """Compare-and-set; None if ``key`` moved past ``revision``."""
        kv = self._bucket(bucket)
        try:
            with _mapped("the key-value store did not answer"):
                return int(await kv.update(key, value, last=revision))
        except _KvWrongRevision:
            return None

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        kv = self._bucket(bucket)
        with _mapped("the key-value store did not answer"):
            return int(await kv.put(key, value))

    async def kv_delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        """Delete ``key`` (only at ``revision`` when given); a moved key is left alone."""
        kv = self._bucket(bucket)
        try:
            with _mapped("the key-value store did not answer"):
                await kv.delete(key, last=revision)
        except _KvWrongRevision:
            return

    async def kv_purge(self, bucket: str, key: str) -> None:
        """Remove ``key`` and every revision of it."""
        kv = self._bucket(bucket)
        with _mapped("the key-value store did not answer"):
            await kv.purge(key)


class _KvMissing(Exception):
    pass


class _KvWrongRevision(Exception):
    pass


class UncertainPublishError(BrokerUnavailableError):
    """A command was handed to the broker but never acknowledged: it may or may not exist."""


@contextlib.contextmanager
def _mapped(timeout_message: str) -> Iterator[None]:
    """Map nats-py's exceptions to ours, once, at the adapter boundary."""
    try:
        yield
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError) as exc:
        raise _KvMissing() from exc
    except nats.js.errors.KeyWrongLastSequenceError as exc:
        raise _KvWrongRevision() from exc
    except nats.js.errors.APIError as exc:
        if exc.err_code in (10071, 10164):
            raise _KvWrongRevision() from exc
        raise BrokerUnavailableError(
            f"the message broker refused the request ({exc.err_code or exc.code})"
        ) from exc
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
        raise BrokerUnavailableError(f"{timeout_message}: nobody is listening") from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise BrokerUnavailableError(timeout_message) from exc
    except nats.errors.Error as exc:
        raise BrokerUnavailableError(
            f"the message broker is not reachable ({type(exc).__name__})"
        ) from exc


mapped_errors = _mapped
"""The adapter's exception mapping, for components that use the connection directly."""
