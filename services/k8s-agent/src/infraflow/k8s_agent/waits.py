"""Waiting for an object to reach a condition: a watch from the version just read, never a
tight poll. Every event (and every bookmark) is a chance to report progress, which keeps the
step's heartbeat alive; an expired watch (410) or a dropped connection reads the object again
and watches on from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infraflow.common.agent import StepError
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.core.names import ApiRef
from infraflow.k8s_agent.core.objects import Obj, resource_version
from infraflow.k8s_agent.errors import K8sGoneError, K8sUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

Check = Callable[[Obj | None], T | None]
"""Looks at the object (None: it does not exist): a result when the wait is over, None to keep
waiting; raises ``StepError`` when the object can no longer get there."""
Progress = Callable[[Obj | None], Awaitable[None]]


class WaitTimeoutError(StepError):
    """The object did not get there in the step's time (another attempt may)."""

    code = "K8S_TIMEOUT"
    retryable = True


async def wait_for(
    kube: KubeApi,
    ref: ApiRef,
    namespace: str,
    name: str,
    check: Check[T],
    *,
    timeout_s: float,
    progress: Progress,
    watch_timeout_s: float = 60.0,
    retry_delay_s: float = 1.0,
) -> T:
    """Until ``check`` returns a result for the object ``namespace/name``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            obj = await kube.get(ref, namespace, name)
        except K8sUnavailableError:
            if loop.time() + retry_delay_s >= deadline:
                raise
            await asyncio.sleep(retry_delay_s)
            continue
        done = check(obj)
        if done is not None:
            return done
        await progress(obj)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise WaitTimeoutError(f"{ref.kind} {namespace}/{name} is not there yet")
        try:
            # the server ends the watch in whole seconds; the deadline is kept here too
            async with asyncio.timeout(remaining):
                async for event in kube.watch(
                    ref,
                    namespace,
                    resource_version=resource_version(obj) if obj is not None else None,
                    field_selector=f"metadata.name={name}",
                    timeout_s=min(remaining, watch_timeout_s),
                ):
                    if event.type == "BOOKMARK":
                        await progress(None)
                        continue
                    current = None if event.type == "DELETED" else event.object
                    done = check(current)
                    if done is not None:
                        return done
                    await progress(current)
        except TimeoutError:
            if loop.time() < deadline:
                raise
            raise WaitTimeoutError(f"{ref.kind} {namespace}/{name} is not there yet") from None
        except K8sGoneError:
            log.info("watch of %s %s/%s expired; reading it again", ref.kind, namespace, name)
        except K8sUnavailableError as exc:
            log.warning("watch of %s %s/%s broke (%s); retrying", ref.kind, namespace, name, exc)
            await asyncio.sleep(min(retry_delay_s, max(0.0, deadline - loop.time())))
