"""Run the Kubernetes API emulator as a process.

``python -m infraflow.devtools.kube_emulator --port 0 --ready-file /tmp/kube.url`` prints
the bound URL and writes it to the ready file once listening; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import EmulatorConfig
from .kubeconfig import write_kubeconfig
from .server import KubeEmulator


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="infraflow-kube-emulator",
        description="Kubernetes API emulator for Infraflow development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port, 0 = any free port")
    parser.add_argument("--ready-file", type=Path, help="write the bound URL here once listening")
    parser.add_argument("--kubeconfig", type=Path, help="also write a kubeconfig here")
    parser.add_argument(
        "--cluster-ready-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="ClusterDeployment Progressing -> Ready time (default 2.0)",
    )
    parser.add_argument(
        "--cluster-delete-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="ClusterDeployment deletion -> finalizer removed (default 1.0)",
    )
    parser.add_argument(
        "--vm-ready-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="VirtualMachine Provisioning -> Running time (default 1.0)",
    )
    parser.add_argument(
        "--history-window",
        type=int,
        default=1000,
        metavar="N",
        help="watch events kept; older resourceVersions get 410 (default 1000)",
    )
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="BOOKMARK period for watches with allowWatchBookmarks=true (default 1.0)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def _write_ready_file(path: Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n", encoding="utf-8")
    tmp.replace(path)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`EmulatorConfig` described by parsed arguments (``ValueError`` if invalid)."""
    return EmulatorConfig(
        cluster_ready_delay=args.cluster_ready_delay,
        cluster_delete_delay=args.cluster_delete_delay,
        vm_ready_delay=args.vm_ready_delay,
        history_window=args.history_window,
        bookmark_interval=args.bookmark_interval,
    )


async def serve(args: argparse.Namespace, config: EmulatorConfig) -> None:
    """Start the emulator, announce it, and run until SIGTERM/SIGINT."""
    emulator = KubeEmulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = await emulator.start(args.host, args.port)
    try:
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, url)
        if args.ready_file:
            _write_ready_file(args.ready_file, url)
        print(url, flush=True)
        await stop.wait()
    finally:
        await emulator.stop()
        if args.ready_file:
            with contextlib.suppress(OSError):
                args.ready_file.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``infraflow-kube-emulator`` and ``python -m``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
