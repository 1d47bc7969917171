"""bmc-agent composition root: one process serves the BMC steps of its configured sites, the
``provisioning`` steps of the same sites (slot and callback waits, in their own worker) and
the power sync of the sites' BMCs."""

from __future__ import annotations

import asyncio
import logging

from infraflow.bmc_agent.adapters.credentials import CredentialStore
from infraflow.bmc_agent.adapters.provisioning import ProvisioningStore
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.handlers import BmcActions
from infraflow.bmc_agent.power_sync import PowerSync
from infraflow.bmc_agent.provisioning import ProvisioningActions
from infraflow.bmc_agent.settings import BmcAgentSettings
from infraflow.common.agent import StepWorker
from infraflow.common.provisioning import derive_callback_key
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.common.streams import KV_IDEMPOTENCY, agent_consumer
from infraflow.common.tasks import cancel_and_wait
from infraflow.common.vault import Vault

log = logging.getLogger("infraflow.bmc_agent")

PROVISIONING_EXECUTOR = "provisioning"


async def serve(rt: ServiceRuntime, settings: BmcAgentSettings) -> None:
    vault = Vault(settings.credential_keys)
    sites = settings.site_list
    consumers = tuple(
        agent_consumer(executor, s) for executor in ("bmc", PROVISIONING_EXECUTOR) for s in sites
    )
    nc, js = await rt.connect(consumers=consumers)
    keys = settings.key_list
    async with RedfishBmc() as bmc:
        credentials = await CredentialStore.open(js, vault)
        actions = BmcActions(
            bmc,
            credentials,
            await js.key_value(KV_IDEMPOTENCY),
            poll_interval_s=settings.power_poll_interval_s,
            callback_key=derive_callback_key(keys[0]) if keys else None,
            callback_base_url=settings.callback_url,
        )
        store = await ProvisioningStore.open(js, poll_s=settings.callback_poll_s)
        await store.start()
        provisioning = ProvisioningActions(
            store, settings.provision_cap, slot_poll_s=settings.slot_poll_s
        )
        worker = StepWorker(
            nc,
            js,
            "bmc",
            sites,
            actions.table(),
            max_inflight=settings.max_inflight,
            shutdown_grace_s=settings.shutdown_grace_s,
        )
        waits = StepWorker(
            nc,
            js,
            PROVISIONING_EXECUTOR,
            sites,
            provisioning.table(),
            max_inflight=settings.provisioning_max_inflight,
            shutdown_grace_s=1.0,  # waits are handed back at once: another agent resumes them
        )
        sync = PowerSync(
            js,
            bmc,
            credentials,
            sites,
            interval_s=settings.power_sync_interval_s,
            concurrency=settings.power_sync_concurrency,
            timeout_s=settings.power_sync_timeout_s,
        )
        rt.metrics.append(
            lambda: (
                f'infraflow_agent_steps_completed_total{{executor="bmc"}} {worker.completed}\n'
                f'infraflow_agent_steps_failed_total{{executor="bmc"}} {worker.failed}\n'
                f'infraflow_agent_steps_completed_total{{executor="provisioning"}} '
                f"{waits.completed}\n"
                f'infraflow_agent_steps_failed_total{{executor="provisioning"}} {waits.failed}\n'
                f"infraflow_power_sync_polls_total {sync.polls}\n"
                f"infraflow_power_sync_failures_total {sync.failures}\n"
            )
        )
        log.info("bmc-agent serving sites %s", ",".join(sites))
        tasks = [asyncio.create_task(worker.run(rt.stop)), asyncio.create_task(waits.run(rt.stop))]
        if settings.power_sync_interval_s > 0:
            tasks.append(asyncio.create_task(sync.run(rt.stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks)
            await store.stop()


def main() -> None:
    settings = BmcAgentSettings()
    run_service("bmc-agent", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
