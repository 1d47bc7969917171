"""The Kubernetes API through kubernetes-asyncio: one ``ApiClient`` for the whole process.

A kubeconfig file, the in-cluster service account and the API emulator all go through
:func:`load_configuration` into the same ``Configuration`` → ``ApiClient`` → ``CustomObjectsApi``
code path; only where the host, token and CA come from differs.

Foreign exceptions are mapped once, here, by :data:`ERROR_BY_STATUS` (HTTP status → coded
error with ``retryable``); anything 5xx or a broken connection is ``K8S_UNAVAILABLE``
(retryable). Patches are always sent as ``application/merge-patch+json`` (kubernetes-asyncio
would send a dict as a JSON patch, which an API server rejects).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from infraflow.k8s_agent.core.names import ApiRef
from infraflow.k8s_agent.core.objects import Obj
from infraflow.k8s_agent.errors import (
    K8sConflictError,
    K8sError,
    K8sForbiddenError,
    K8sGoneError,
    K8sInvalidError,
    K8sNotFoundError,
    K8sThrottledError,
    K8sUnavailableError,
)

log = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"
IN_CLUSTER_TOKEN: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA: Final = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

ERROR_BY_STATUS: Final[Mapping[int, type[K8sError]]] = {
    400: K8sInvalidError,
    401: K8sForbiddenError,
    403: K8sForbiddenError,
    404: K8sNotFoundError,
    409: K8sConflictError,
    410: K8sGoneError,
    415: K8sInvalidError,
    422: K8sInvalidError,
    429: K8sThrottledError,
}
"""HTTP status → error (``code``, ``retryable``); 5xx and status 0 (no answer) are
``K8sUnavailableError``; any other status is a plain, non-retryable ``K8sError``."""


class KubeConfigError(K8sError):
    """No usable kubeconfig or in-cluster service account."""

    code = "K8S_CONFIG"


def error_for(status: int | None, body: Any, what: str) -> K8sError:
    """The coded error for an API answer with ``status`` and a ``Status`` ``body``."""
    status_doc: dict[str, Any] = {}
    if isinstance(body, bytes | str):
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        status_doc = decoded if isinstance(decoded, dict) else {}
    elif isinstance(body, dict):
        status_doc = body
    code = int(status or 0)
    reason = str(status_doc.get("reason") or "") or None
    message = str(status_doc.get("message") or f"HTTP {code}")
    if code in ERROR_BY_STATUS:
        kind: type[K8sError] = ERROR_BY_STATUS[code]
    elif code == 0 or code >= 500:
        kind = K8sUnavailableError
    else:
        kind = K8sError
    return kind(
        f"{what}: {message}",
        status=code or None,
        reason=reason,
        details={"status": code, "reason": reason} if code else None,
    )


def map_exception(exc: BaseException, what: str) -> K8sError:
    """Map a kubernetes-asyncio, aiohttp or OS exception to a coded error."""
    if isinstance(exc, K8sError):
        return exc
    if isinstance(exc, ApiException):
        return error_for(exc.status, exc.body, what)
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return K8sUnavailableError(f"{what}: the API server is unreachable ({type(exc).__name__})")
    return K8sError(f"{what}: {type(exc).__name__}")


async def load_configuration(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    token_file: str = IN_CLUSTER_TOKEN,
    ca_file: str = IN_CLUSTER_CA,
    environ: Mapping[str, str] | None = None,
) -> client.Configuration:
    """A client configuration from a kubeconfig file, else from the in-cluster service
    account (``KUBERNETES_SERVICE_HOST``/``PORT``, token and CA files)."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            await config.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration,
                token_filename=token_file,
                cert_filename=ca_file,
                environ=dict(environ if environ is not None else os.environ),
            )
    except (ConfigException, OSError, ValueError) as exc:
        source = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
        raise KubeConfigError(
            f"cannot configure the Kubernetes client from {source}: {exc}"
        ) from exc
    return configuration


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event: ``ADDED``, ``MODIFIED``, ``DELETED`` or ``BOOKMARK``."""

    type: str
    object: Obj
    resource_version: str | None


class KubeApi:
    """The calls the agent makes, each mapped to coded errors."""

    def __init__(self, api_client: client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.request_timeout_s = request_timeout_s

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, *, request_timeout_s: float = 30.0, **kwargs: Any
    ) -> KubeApi:
        """Configure from a kubeconfig or in-cluster (see :func:`load_configuration`)."""
        configuration = await load_configuration(kubeconfig, **kwargs)
        return cls(client.ApiClient(configuration), request_timeout_s=request_timeout_s)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    async def close(self) -> None:
        await self.api_client.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- objects ------------------------------------------------------------------------

    async def get(self, ref: ApiRef, namespace: str, name: str) -> Obj | None:
        """The object, or None if it does not exist."""
        try:
            obj = await self.custom.get_namespaced_custom_object(
                ref.group,
                ref.version,
                namespace,
                ref.plural,
                name,
                _request_timeout=self.request_timeout_s,
            )
        except Exception as exc:
            err = map_exception(exc, f"get {ref.plural} {namespace}/{name}")
            if isinstance(err, K8sNotFoundError):
                return None
            raise err from exc
        return _obj(obj)

    async def create(self, ref: ApiRef, namespace: str, body: Obj) -> Obj:
        name = body.get("metadata", {}).get("name")
        try:
            obj = await self.custom.create_namespaced_custom_object(
                ref.group,
                ref.version,
                namespace,
                ref.plural,
                body,
                _request_timeout=self.request_timeout_s,
            )
        except Exception as exc:
            raise map_exception(exc, f"create {ref.plural} {namespace}/{name}") from exc
        return _obj(obj)

    async def merge_patch(self, ref: ApiRef, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch the object; a ``metadata.resourceVersion`` in ``patch`` makes it
        conditional (409 ``K8S_CONFLICT`` if the object changed meanwhile)."""
        try:
            obj = await self.custom.patch_namespaced_custom_object(
                ref.group,
                ref.version,
                namespace,
                ref.plural,
                name,
                patch,
                **_merge_patch_options(self.request_timeout_s),
            )
        except Exception as exc:
            raise map_exception(exc, f"patch {ref.plural} {namespace}/{name}") from exc
        return _obj(obj)

    async def delete(self, ref: ApiRef, namespace: str, name: str) -> bool:
        """Ask for deletion (finalizers may keep the object a while); False if it was gone."""
        try:
            await self.custom.delete_namespaced_custom_object(
                ref.group,
                ref.version,
                namespace,
                ref.plural,
                name,
                propagation_policy="Background",
                _request_timeout=self.request_timeout_s,
            )
        except Exception as exc:
            err = map_exception(exc, f"delete {ref.plural} {namespace}/{name}")
            if isinstance(err, K8sNotFoundError):
                return False
            raise err from exc
        return True

    async def list(
        self, ref: ApiRef, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        """Every object (of a namespace, or all) and the list's resourceVersion."""
        kwargs: dict[str, Any] = {"_request_timeout": self.request_timeout_s}
        if label_selector:
            kwargs["label_selector"] = label_selector
        try:
            if namespace is None:
                raw = await self.custom.list_cluster_custom_object(
                    ref.group, ref.version, ref.plural, **kwargs
                )
            else:
                raw = await self.custom.list_namespaced_custom_object(
                    ref.group, ref.version, namespace, ref.plural, **kwargs
                )
        except Exception as exc:
            raise map_exception(exc, f"list {ref.plural}") from exc
        doc = _obj(raw)
        items = [i for i in doc.get("items") or [] if isinstance(i, dict)]
        rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        return items, rv

    async def watch(
        self,
        ref: ApiRef,
        namespace: str | None,
        *,
        resource_version: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: float = 60.0,
        bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the watch (``timeout_s``).
        An expired version raises ``K8sGoneError`` (relist); ``ERROR`` events are mapped."""
        kwargs: dict[str, Any] = {
            "watch": True,
            "allow_watch_bookmarks": bookmarks,
            "timeout_seconds": max(1, int(timeout_s)),
            "_preload_content": False,
            # the server ends the watch; the client gives it a margin before giving up
            "_request_timeout": aiohttp.ClientTimeout(
                total=None, sock_connect=self.request_timeout_s, sock_read=timeout_s + 30.0
            ),
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        what = f"watch {ref.plural}"
        try:
            if namespace is None:
                resp = await self.custom.list_cluster_custom_object(
                    ref.group, ref.version, ref.plural, **kwargs
                )
            else:
                resp = await self.custom.list_namespaced_custom_object(
                    ref.group, ref.version, namespace, ref.plural, **kwargs
                )
        except Exception as exc:
            raise map_exception(exc, what) from exc
        try:
            if not 200 <= resp.status <= 299:
                raise error_for(resp.status, await resp.read(), what)
            while True:
                try:
                    line = await resp.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise map_exception(exc, what) from exc
                if not line:
                    return
                event = _parse_event(line, what)
                if event is not None:
                    yield event
        finally:
            resp.release()

    # ---- KubeVirt ---------------------------------------------------------------------

    async def vm_action(
        self, group: str, version: str, namespace: str, name: str, action: str
    ) -> None:
        """``PUT .../virtualmachines/{name}/{start|stop|restart}`` (KubeVirt subresources)."""
        path = f"/apis/{group}/{version}/namespaces/{{namespace}}/virtualmachines/{{name}}/{action}"
        try:
            await self.api_client.call_api(
                path,
                "PUT",
                path_params={"namespace": namespace, "name": name},
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body={},
                auth_settings=["BearerToken"],
                response_types_map={},
                _return_http_data_only=True,
                _request_timeout=self.request_timeout_s,
            )
        except Exception as exc:
            raise map_exception(exc, f"{action} virtualmachine {namespace}/{name}") from exc


def _merge_patch_options(timeout_s: float) -> dict[str, Any]:
    # the generated stubs do not declare ``_content_type``, which the client does accept
    return {"_content_type": MERGE_PATCH, "_request_timeout": timeout_s}


def _obj(value: Any) -> Obj:
    if not isinstance(value, dict):
        raise K8sError(f"the API server sent {type(value).__name__}, not an object")
    return value


def _parse_event(line: bytes, what: str) -> WatchEvent | None:
    try:
        doc = json.loads(line)
    except ValueError:
        log.warning("%s: undecodable watch line dropped", what)
        return None
    if not isinstance(doc, dict):
        return None
    kind = str(doc.get("type") or "")
    obj = doc.get("object")
    if kind == "ERROR":
        raise error_for(
            obj.get("code") if isinstance(obj, dict) else None,
            obj if isinstance(obj, dict) else None,
            what,
        )
    if not isinstance(obj, dict):
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return WatchEvent(kind, obj, str(rv) if rv else None)
