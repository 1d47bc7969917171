"""bmc-agent composition root: one process serves the BMC steps of its configured sites."""

from __future__ import annotations

import logging

from infraflow.bmc_agent.adapters.credentials import CredentialStore
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.handlers import BmcActions
from infraflow.bmc_agent.settings import BmcAgentSettings
from infraflow.common.agent import StepWorker
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.common.streams import KV_IDEMPOTENCY, agent_consumer
from infraflow.common.vault import Vault

log = logging.getLogger("infraflow.bmc_agent")


async def serve(rt: ServiceRuntime, settings: BmcAgentSettings) -> None:
    vault = Vault(settings.credential_keys)
    sites = settings.site_list
    nc, js = await rt.connect(consumers=tuple(agent_consumer("bmc", s) for s in sites))
    async with RedfishBmc() as bmc:
        actions = BmcActions(
            bmc,
            await CredentialStore.open(js, vault),
            await js.key_value(KV_IDEMPOTENCY),
            poll_interval_s=settings.power_poll_interval_s,
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
        rt.metrics.append(
            lambda: (
                f'infraflow_agent_steps_completed_total{{executor="bmc"}} {worker.completed}\n'
                f'infraflow_agent_steps_failed_total{{executor="bmc"}} {worker.failed}\n'
            )
        )
        log.info("bmc-agent serving sites %s", ",".join(sites))
        await worker.run(rt.stop)


def main() -> None:
    settings = BmcAgentSettings()
    run_service("bmc-agent", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
