"""Kubeconfig documents that point kubernetes-asyncio (or kubectl) at an emulator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_TOKEN = "kube-emulator-token"


def kubeconfig_dict(
    server: str,
    *,
    cluster: str = "kube-emulator",
    namespace: str = "default",
    token: str = DEFAULT_TOKEN,
) -> dict[str, Any]:
    """A kubeconfig with one cluster/user/context using plain HTTP and bearer-token auth.

    The emulator accepts any token; the token is only there because clients expect auth.
    """
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"server": server}}],
        "users": [{"name": f"{cluster}-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": cluster,
                "context": {"cluster": cluster, "user": f"{cluster}-user", "namespace": namespace},
            }
        ],
        "current-context": cluster,
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    url: str,
    *,
    cluster: str = "kube-emulator",
    namespace: str = "default",
    token: str = DEFAULT_TOKEN,
) -> Path:
    """Write a kubeconfig for ``url`` to ``path`` (mode 0600) and return the path.

    The file is JSON, which is valid YAML, so ``kubernetes_asyncio.config.load_kube_config``
    and kubectl read it without a YAML writer here.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = kubeconfig_dict(url, cluster=cluster, namespace=namespace, token=token)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(target)
    return target
