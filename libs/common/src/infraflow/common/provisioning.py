"""Provisioning coordination shared by the gateway, the bmc-agent and the dev installer simulator.

The installer's callback (``POST /v1/servers/{id}/provisioning-callback``):

* The token is ``HMAC-SHA256(k, "<serverId>\\n<runId>")`` (first 16 bytes, base64url), where
  ``k`` is derived from a BMC-credential Fernet key (``derive_callback_key``). Nothing has to be
  stored: the gateway recomputes it from the path and the body and compares in constant time,
  trying every configured key so that key rotation does not break runs in flight. It is bound
  to one server and one run, so a token leaked from one provisioning cannot confirm another.
* The token never enters a run's input, an event or a log line. The bmc-agent mints it when it
  inserts the virtual media and hands it to the installer in the media URL's query
  (``installer_media_url``): the one channel a Redfish BMC gives the OS that boots from it.
* The gateway records the callback under ``callback.<runId>`` in the ``wf-provisioning``
  bucket (first callback wins); the agent's ``wait_callback`` step reads and watches that key,
  so a callback that arrives before the wait begins, or while an agent restarts, is not lost.

The same bucket holds the per-site provisioning slots (``slot.<site>.<n>``), see the bmc-agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from infraflow.common import subjects
from infraflow.common.contracts.base import Contract

CallbackStatus = Literal["succeeded", "failed"]

CALLBACK_PARAM: Final = "infraflow_callback"
RUN_PARAM: Final = "infraflow_run"
TOKEN_PARAM: Final = "infraflow_token"
INSTALLER_PARAMS: Final = frozenset({CALLBACK_PARAM, RUN_PARAM, TOKEN_PARAM})

_KEY_LABEL: Final = b"infraflow/provisioning-callback/v1"
_TOKEN_BYTES: Final = 16


class ProvisioningCallback(Contract, frozen=True, kw_only=True):
    """What the installer reported for one provisioning run (the ``callback.<runId>`` value)."""

    run_id: str
    server_id: str
    status: CallbackStatus
    message: str | None = None
    received_at: datetime


class ProvisioningSlot(Contract, frozen=True, kw_only=True):
    """A held provisioning slot of a site (the ``slot.<site>.<n>`` value)."""

    run_id: str
    resource_type: str
    resource_id: str
    site: str
    acquired_at: datetime


class InstallerParams(Contract, frozen=True, kw_only=True):
    """What the installer learns from the media it booted: where and how to call back."""

    callback_url: str
    run_id: str
    token: str


def derive_callback_key(credential_key: str) -> bytes:
    """The callback signing key derived from one credential key (domain-separated, so the
    credential key itself never signs anything)."""
    return hmac.new(credential_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def callback_token(key: bytes, server_id: str, run_id: str) -> str:
    """The token the installer of ``run_id`` on ``server_id`` must present."""
    mac = hmac.new(key, f"{server_id}\n{run_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:_TOKEN_BYTES]).rstrip(b"=").decode()


def verify_callback_token(keys: Iterable[bytes], server_id: str, run_id: str, token: str) -> bool:
    """True when ``token`` was minted for this server and run with one of ``keys``."""
    ok = False
    for key in keys:
        # no early exit: every key is tried, so the time taken does not tell which matched
        ok |= hmac.compare_digest(callback_token(key, server_id, run_id), token)
    return ok


def callback_url(base_url: str, server_id: str) -> str:
    """``<gateway>/v1/servers/<serverId>/provisioning-callback``."""
    return f"{base_url.rstrip('/')}/v1/servers/{subjects.token(server_id)}/provisioning-callback"


def installer_media_url(image_url: str, params: InstallerParams) -> str:
    """``image_url`` with the installer's callback parameters added to its query."""
    parts = urlsplit(image_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in INSTALLER_PARAMS]
    query += [
        (CALLBACK_PARAM, params.callback_url),
        (RUN_PARAM, params.run_id),
        (TOKEN_PARAM, params.token),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def installer_params(media_url: str) -> InstallerParams | None:
    """The callback parameters of a media URL (what an installer reads), if it carries them."""
    found = dict(parse_qsl(urlsplit(media_url).query))
    if not found.keys() >= INSTALLER_PARAMS:
        return None
    return InstallerParams(
        callback_url=found[CALLBACK_PARAM], run_id=found[RUN_PARAM], token=found[TOKEN_PARAM]
    )


def strip_installer_params(media_url: str) -> str:
    """``media_url`` without the installer's parameters (safe for outputs and messages)."""
    parts = urlsplit(media_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in INSTALLER_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(query)))


def callback_key(run_id: str) -> str:
    """KV key of a run's callback record."""
    return f"callback.{subjects.token(run_id)}"


def slot_key(site: str, index: int) -> str:
    """KV key of a site's ``index``-th provisioning slot."""
    return f"slot.{subjects.token(site)}.{index}"
