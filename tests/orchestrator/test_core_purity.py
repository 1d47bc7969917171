"""The orchestrator's core is pure: no I/O, no clock, no randomness, no logging, no ``await``.

Every module of ``infraflow.orchestrator.core`` is imported and its source walked as an AST;
importing the core in a fresh interpreter must not load the broker client, the event loop or
any of the service's I/O modules either.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import infraflow.orchestrator.core as core

FORBIDDEN_IMPORTS = frozenset(
    {
        "nats",
        "asyncio",
        "socket",
        "time",
        "random",
        "secrets",
        "uuid",
        "logging",
        "sqlite3",
        "httpx",
        "requests",
        "aiohttp",
        "threading",
        "subprocess",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
    }
)
"""Top-level modules the core may not import (I/O, clocks, randomness, logging)."""

CLOCKS = frozenset({"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter"})
RANDOMNESS = frozenset({"uuid1", "uuid4", "random", "randint", "choice", "token_hex", "urandom"})
IO_BUILTINS = frozenset({"open", "print", "input", "breakpoint"})

ALLOWED_INFRAFLOW = ("infraflow.orchestrator.core", "infraflow.common.contracts")
"""What the core may load from infraflow (plus the catalog, which is data)."""


def core_modules() -> list[ModuleType]:
    names = [core.__name__] + [
        f"{core.__name__}.{m.name}" for m in pkgutil.iter_modules(core.__path__)
    ]
    return [importlib.import_module(n) for n in names]


def tree_of(module: ModuleType) -> ast.Module:
    return ast.parse(inspect.getsource(module), filename=module.__file__ or module.__name__)


def io_imports(tree: ast.Module) -> list[str]:
    """Imports of I/O, clock, randomness or logging modules, or of infraflow's I/O parts."""
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_IMPORTS]
            bad += [a.name for a in node.names if _foreign_infraflow(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_IMPORTS or _foreign_infraflow(node.module):
                bad.append(node.module)
            if top == "datetime":  # ``from datetime import datetime`` is a type; no clocks
                bad += [f"datetime.{a.name}" for a in node.names if a.name in CLOCKS]
    return bad


def _foreign_infraflow(module: str) -> bool:
    return module.startswith("infraflow.") and not (
        module.startswith(ALLOWED_INFRAFLOW) or module == "infraflow.common.catalog"
    )


def clock_and_randomness_calls(tree: ast.Module) -> list[str]:
    """Calls of a clock (``datetime.now()``, ``time.time()``), of randomness (``uuid4()``) or of
    an I/O builtin (``open``, ``print``)."""
    bad: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue  # reading ``ctx.now`` or ``event.time`` is fine; calling a clock is not
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in CLOCKS | RANDOMNESS:
            bad.append(f"line {node.lineno}: {ast.unparse(f)}()")
        elif isinstance(f, ast.Name) and f.id in IO_BUILTINS | CLOCKS | RANDOMNESS:
            bad.append(f"line {node.lineno}: {f.id}()")
    return bad


def awaits(tree: ast.Module) -> list[str]:
    asynchronous = (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)
    return [
        f"line {getattr(node, 'lineno', '?')}: {type(node).__name__}"
        for node in ast.walk(tree)
        if isinstance(node, asynchronous)
    ]


def test_the_core_has_its_modules() -> None:
    names = {m.__name__.rsplit(".", 1)[-1] for m in core_modules()}
    assert {"core", "decider", "effects", "state"} <= names


@pytest.mark.parametrize("module", core_modules(), ids=lambda m: m.__name__)
def test_core_module_imports_nothing_that_does_io(module: ModuleType) -> None:
    assert io_imports(tree_of(module)) == []


@pytest.mark.parametrize("module", core_modules(), ids=lambda m: m.__name__)
def test_core_module_calls_no_clock_and_draws_no_randomness(module: ModuleType) -> None:
    assert clock_and_randomness_calls(tree_of(module)) == []


@pytest.mark.parametrize("module", core_modules(), ids=lambda m: m.__name__)
def test_core_module_never_awaits(module: ModuleType) -> None:
    assert awaits(tree_of(module)) == []


IMPURE = """
import asyncio, logging
import time as clock
from datetime import datetime, UTC
from uuid import uuid4
from nats.aio.client import Client
from infraflow.common.jetstream import append
from infraflow.orchestrator.adapters.eventlog import RunLog
from infraflow.common.contracts import RunEvent


async def decide(state, ctx):
    await asyncio.sleep(0)
    stamp = datetime.now(UTC)
    took = clock.monotonic()
    ok = ctx.now  # reading the context's clock is what the core should do
    print(stamp, took, uuid4(), ok)
"""


def test_the_checks_catch_an_impure_module() -> None:
    """The checks above would fail on a core module that did I/O."""
    tree = ast.parse(IMPURE)

    assert io_imports(tree) == [
        "asyncio",
        "logging",
        "time",
        "uuid",
        "nats.aio.client",
        "infraflow.common.jetstream",
        "infraflow.orchestrator.adapters.eventlog",
    ]
    assert clock_and_randomness_calls(tree) == [
        "line 14: datetime.now()",
        "line 15: clock.monotonic()",
        "line 17: print()",
        "line 17: uuid4()",
    ]
    assert awaits(tree) == ["line 12: AsyncFunctionDef", "line 13: Await"]


def test_importing_the_core_loads_no_io_module() -> None:
    """In a fresh interpreter: the transitive imports stay clear of the broker, the event loop,
    sockets, logging and the service's adapters (``time``/``uuid`` are left out: the standard
    library and msgspec load them for their own use)."""
    script = (
        "import json, sys\n"
        "import infraflow.orchestrator.core\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded: list[str] = json.loads(out)
    io = {"nats", "asyncio", "socket", "sqlite3", "httpx", "logging", "ssl", "selectors"}
    assert sorted(m for m in loaded if m.split(".")[0] in io) == []
    ours = [m for m in loaded if m.startswith("infraflow.")]
    allowed = (*ALLOWED_INFRAFLOW, "infraflow.common.catalog", "infraflow.orchestrator")
    assert [m for m in ours if not (m.startswith(allowed) or m == "infraflow.common")] == []
    assert "infraflow.orchestrator.adapters" not in loaded
    assert "infraflow.orchestrator.handlers" not in loaded
