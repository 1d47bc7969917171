"""The k8s-agent process wiring, in-process against a real nats-server and the emulator: its
informers publish to ``INFRA_OBSERVED``; without a Kubernetes configuration it waits, not ready,
instead of crash-looping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import ResourceObserved
from infraflow.common.ids import new_id
from infraflow.common.runtime import ServiceRuntime
from infraflow.common.settings import NatsSettings
from infraflow.devtools.kube_emulator import KubeEmulator
from infraflow.devtools.nats_server import NatsServer
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.app import serve
from infraflow.k8s_agent.core import clusters
from infraflow.k8s_agent.settings import K8sAgentSettings

from .conftest import PROJECT


def settings_for(nats: NatsServer, kubeconfig: Path) -> K8sAgentSettings:
    return K8sAgentSettings(
        nats=NatsSettings(url=nats.url), kubeconfig=str(kubeconfig), log_json=False
    )


async def test_informers_publish_observations(
    nats_server: NatsServer,
    js: JetStreamContext,
    nc: Client,
    emulator: KubeEmulator,
    tmp_path: Path,
) -> None:
    settings = settings_for(nats_server, emulator.write_kubeconfig(tmp_path / "kc"))
    rt = ServiceRuntime("k8s-agent", settings)
    rid = new_id("cls")
    seen: asyncio.Queue[ResourceObserved] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await seen.put(msgspec.json.decode(msg.data, type=ResourceObserved))

    await nc.subscribe(subjects.observed("cluster", rid), cb=on_msg)
    agent = asyncio.create_task(serve(rt, settings))
    try:
        spec = clusters.cluster_spec_from_input(
            {"name": "c", "template": "k0s-v1-31-2", "credential": "x", "workers": 1}
        )
        manifest = clusters.cluster_manifest(rid, PROJECT, PROJECT, spec, "run_x")
        async with await KubeApi.connect(str(tmp_path / "kc")) as kube:
            await kube.create(clusters.CLUSTER_DEPLOYMENTS, PROJECT, manifest)
        phases = []
        while "Ready" not in phases:
            observation = await asyncio.wait_for(seen.get(), 10)
            assert observation.resource_id == rid
            phases.append(observation.state["phase"])
        assert rt.is_ready()
        stored = await js.get_last_msg("INFRA_OBSERVED", subjects.observed("cluster", rid))
        assert msgspec.json.decode(stored.data, type=ResourceObserved).state["phase"] == "Ready"
    finally:
        rt.stop.set()
        await asyncio.wait_for(agent, 30)
        await rt.close()


async def test_without_kubernetes_configuration_it_waits_not_ready(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    settings = settings_for(nats_server, tmp_path / "missing-kubeconfig")
    rt = ServiceRuntime("k8s-agent", settings)
    agent = asyncio.create_task(serve(rt, settings))
    try:
        await asyncio.sleep(1.5)
        assert not agent.done()  # still there, retrying
        assert rt.nc is not None
        assert rt.nc.is_connected
        assert not rt.is_ready()
    finally:
        rt.stop.set()
        await asyncio.wait_for(agent, 10)
        await rt.close()
