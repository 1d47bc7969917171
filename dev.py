#!/usr/bin/env python3
"""Infraflow developer entry point: needs only Python 3.11+ and the package registries.

    python3 dev.py up      install what is needed, then start the whole stack locally
    python3 dev.py test    install what is needed, then run the full test suite
    python3 dev.py gates   format check, lint, types and tests (what a commit must pass)
    python3 dev.py sync    only install (create .venv from the lock file)

It makes a small bootstrap environment holding the pinned `uv`, lets uv build `.venv` from
`uv.lock` (the workspace: libs/common, services/*, dev), then runs the command inside `.venv`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STATE = ROOT / ".state"
BOOT = STATE / "bootstrap"
VENV = ROOT / ".venv"
UV_VERSION = "0.13.9"


def _uv() -> Path:
    uv = BOOT / "bin" / "uv"
    if not uv.exists():
        print(f"[infraflow] bootstrapping uv {UV_VERSION} into {BOOT}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(BOOT)
        subprocess.run(
            [str(BOOT / "bin" / "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"],
            check=True,
        )
    return uv


def sync() -> None:
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(VENV), UV_PYTHON=sys.executable)
    frozen = ["--frozen"] if (ROOT / "uv.lock").exists() else []
    subprocess.run(
        [str(_uv()), "sync", "--all-packages", *frozen, "--quiet"], cwd=ROOT, env=env, check=True
    )


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """The browser tests (tests/ui) drive Debian's chromium: install it when it is missing and
    we may (root with apt-get). Idempotent; never downloads a browser of its own."""
    if CHROMIUM.exists() or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        return
    print("[infraflow] installing Debian's chromium for the browser tests:", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        print("[infraflow]  ", " ".join(step), flush=True)
        if subprocess.call(step, env=env) != 0:
            print("[infraflow] could not install chromium; tests/ui will fail", flush=True)
            return


def _run(args: list[str]) -> int:
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.call(args, cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "help"
    rest = argv[2:]
    py = str(VENV / "bin" / "python")
    if cmd == "sync":
        sync()
        return 0
    if cmd == "up":
        sync()
        try:
            return _run([py, "-m", "infraflow.devtools.stack", *rest])
        except KeyboardInterrupt:
            return 130
    if cmd == "test":
        sync()
        ensure_chromium()
        return _run([py, "-m", "pytest", *rest])
    if cmd == "gates":
        sync()
        ensure_chromium()
        steps = [
            [py, "-m", "ruff", "format", "--check", "."],
            [py, "-m", "ruff", "check", "."],
            [
                py,
                "-m",
                "mypy",
                "libs/common/src/infraflow/common",
                "services/orchestrator/src/infraflow/orchestrator/core",
                "services/projector/src/infraflow/projector/core",
                "services/k8s-agent/src/infraflow/k8s_agent/core",
            ],
            [py, "-m", "pytest", *rest],
        ]
        for step in steps:
            print("[gates]", " ".join(step[2:]), flush=True)
            if rc := _run(step):
                return rc
        return 0
    print(__doc__)
    return 0 if cmd in {"help", "-h", "--help"} else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
