"""The resource cache fold, the batch fold and the pure helpers (metrics, cursors, tenancy)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from infraflow.common.catalog import DEFAULT_CATALOG, Catalog, WorkflowType
from infraflow.common.contracts import AnyRunEvent, encode
from infraflow.projector.core.batch import StreamMessage, decode_batch, fold_batch
from infraflow.projector.core.cursors import CursorError, decode_cursor, encode_cursor
from infraflow.projector.core.metrics import duration_stats, estimate_ms, median, percentile
from infraflow.projector.core.resources import evolve_resource, redact
from infraflow.projector.core.runs import evolve_run
from infraflow.projector.core.state import ResourceState, RunState, to_micros
from infraflow.projector.core.tenancy import narrow, visible

from .support import T0, RunHistory, register_input


def fold_resource(
    histories: list[RunHistory], resource: ResourceState | None = None
) -> ResourceState | None:
    """Fold several runs' events (in the order given) into one resource."""
    runs: dict[str, RunState] = {}
    events: list[AnyRunEvent] = [e for h in histories for e in h.events]
    for e in events:
        run = evolve_run(runs.get(e.run_id), e)
        assert run is not None
        runs[run.id] = run
        resource = evolve_resource(resource, e, run, DEFAULT_CATALOG.get(run.type))
    return resource


def test_register_creates_the_server_from_redacted_input() -> None:
    h = RunHistory(input=register_input("node-7"))
    h.created()

    r = fold_resource([h])

    assert r is not None
    assert (r.id, r.type, r.name, r.site, r.project_id) == (
        h.resource_id,
        "server",
        "node-7",
        "dc1",
        "prj_a",
    )
    assert r.attributes == {
        "bmc": {"address": "https://10.0.0.1", "username": "admin", "verifyTls": False},
        "tags": {"rack": "r1"},
    }
    assert r.state == "registering"
    assert r.active_run_id == h.run_id


def test_register_then_inventory_output_then_registered() -> None:
    h = RunHistory(input=register_input())
    h.created()
    h.started()
    h.step_ok(0, {"resource": {"vendor": "Dell", "powerState": "On", "state": "bogus"}})
    h.step_ok(1, {"resource": {"hardware": {"cpus": 2}}})
    h.completed()

    r = fold_resource([h])

    assert r is not None
    assert r.state == "registered"  # from the catalog, never from a step's output
    assert r.attributes["vendor"] == "Dell"
    assert r.attributes["powerState"] == "On"
    assert r.attributes["hardware"] == {"cpus": 2}
    assert "state" not in r.attributes
    assert r.last_run_id == h.run_id
    assert r.active_run_id is None
    assert r.observed_at == to_micros(T0 + timedelta(seconds=7))


def test_power_action_updates_power_but_keeps_state() -> None:
    reg = RunHistory(input=register_input()).happy()
    power = RunHistory(
        "server.lifecycle", resource_id=reg.resource_id, at=T0 + timedelta(minutes=5)
    )
    power.created()
    power.started()
    power.step_ok(0)
    power.step_ok(1, {"resource": {"powerState": "Off"}})

    r = fold_resource([reg, power])
    assert r is not None
    assert r.state == "registered"
    assert r.active_run_id == power.run_id  # the lock holder while it runs

    power.completed()
    r = fold_resource([reg, power])
    assert r is not None
    assert r.attributes["powerState"] == "Off"
    assert (r.state, r.last_run_id, r.active_run_id) == ("registered", power.run_id, None)


def test_failed_inspection_sets_error_and_cancel_restores_prior_state() -> None:
    reg = RunHistory(input=register_input()).happy()
    inspect = RunHistory("server.inspect", resource_id=reg.resource_id, at=T0 + timedelta(hours=1))
    inspect.created()
    inspect.started()
    r = fold_resource([reg, inspect])
    assert r is not None
    assert r.state == "inspecting"

    inspect.failed()
    assert fold_resource([reg, inspect]).state == "error"  # type: ignore[union-attr]

    provision = RunHistory("server.provision", resource_id=reg.resource_id, at=T0)
    provision.created()
    provision.started()
    provision.cancelled()  # no cancelled state declared: back to where it was
    assert fold_resource([reg, provision]).state == "registered"  # type: ignore[union-attr]


def test_decommissioned_server_stays_readable() -> None:
    reg = RunHistory(input=register_input()).happy()
    gone = RunHistory("server.decommission", resource_id=reg.resource_id).happy()

    r = fold_resource([reg, gone])

    assert r is not None
    assert r.state == "decommissioned"


def test_runs_on_unknown_resources_do_not_invent_rows() -> None:
    h = RunHistory("server.inspect").happy()
    assert fold_resource([h]) is None


def test_an_older_observation_never_overwrites_a_newer_one() -> None:
    reg = RunHistory(input=register_input()).happy({0: {"resource": {"powerState": "On"}}})
    late = RunHistory("sync.server-state", resource_id=reg.resource_id, at=T0 - timedelta(days=1))
    late.created()
    late.step_ok(0, {"resource": {"powerState": "Off"}})

    r = fold_resource([reg, late])

    assert r is not None
    assert r.attributes["powerState"] == "On"


def test_redact_drops_secret_keys_at_any_depth() -> None:
    assert redact(
        {"bmc": {"password": "x", "user": "u"}, "apiToken": "t", "l": [{"secret": 1}]}
    ) == {
        "bmc": {"user": "u"},
        "l": [{}],
    }


def test_batch_skips_applied_and_undecodable_messages() -> None:
    h = RunHistory().happy()
    msgs = [StreamMessage(i + 1, "wf.events.x", encode(e)) for i, e in enumerate(h.events)]
    bad = StreamMessage(len(msgs) + 1, "wf.events.bad", b"{not json")

    batch = decode_batch([*msgs, bad], applied_seq=2)

    assert [m.seq for m, _ in batch.events] == list(range(3, len(msgs) + 1))
    assert [s.seq for s in batch.skipped] == [bad.seq]
    assert batch.last_seq == bad.seq  # the position moves past what was skipped
    changes = fold_batch(batch, {}, {}, DEFAULT_CATALOG)
    assert changes.orphans == len(batch.events)  # run_created (seq 1) is not in the state given
    assert not changes.runs


def test_a_fold_failure_skips_the_event_instead_of_stalling() -> None:
    class BrokenCatalog(Catalog):
        def get(self, name: str) -> WorkflowType | None:
            raise RuntimeError("boom")

    h = RunHistory().happy()
    msgs = [StreamMessage(i + 1, "s", encode(e)) for i, e in enumerate(h.events)]

    changes = fold_batch(decode_batch(msgs, 0), {}, {}, BrokenCatalog(DEFAULT_CATALOG.types()))

    assert len(changes.failed) == len(msgs)
    assert "boom" in changes.failed[0].reason
    assert changes.events == len(msgs)  # every event was attempted, none stalled the batch


def test_batch_folds_into_loaded_state() -> None:
    h = RunHistory(input=register_input()).happy()
    msgs = [StreamMessage(i + 1, "s", encode(e)) for i, e in enumerate(h.events)]
    runs: dict[str, RunState] = {}
    resources: dict[tuple[str, str], ResourceState] = {}

    first = fold_batch(decode_batch(msgs[:4], 0), runs, resources, DEFAULT_CATALOG)
    second = fold_batch(decode_batch(msgs, 4), runs, resources, DEFAULT_CATALOG)

    assert list(first.runs) == [h.run_id]
    assert list(second.runs) == [h.run_id]
    assert runs[h.run_id].status == "completed"
    assert resources[("server", h.resource_id)].state == "registered"
    assert second.events == len(msgs) - 4
    assert runs[h.run_id].seqs == [m.seq for m in msgs]  # where its history is in the stream


def test_percentiles_medians_and_estimates() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([], 50) is None
    assert median([3, 1, 2]) == 2
    assert median([1, 2, 3, 10]) == 2
    assert estimate_ms([100, 200], 5000) == 5000
    assert estimate_ms([100, 200, 900], 5000) == 200
    assert estimate_ms([10] * 20 + [99_999] * 10, 5000) == 10  # only the latest 20 count
    assert duration_stats([1, 2, 3]) == {"avg": 2, "p50": 2, "p95": 3, "p99": 3, "max": 3}


def test_cursor_round_trip_and_rejection() -> None:
    cursor = encode_cursor("runs", "run_0ABC")
    assert decode_cursor("runs", cursor) == "run_0ABC"
    with pytest.raises(CursorError):
        decode_cursor("resources.server", cursor)
    with pytest.raises(CursorError):
        decode_cursor("runs", "%%%")


def test_tenancy_scope() -> None:
    assert visible("p1", None)
    assert visible("p1", ["p1"])
    assert not visible("p2", ["p1"])
    assert not visible(None, ["p1"])
    assert narrow(None, None) is None
    assert narrow(["p1", "p2"], ["p2", "p3"]) == ["p2"]
    assert narrow(None, ["p3"]) == ["p3"]
    assert narrow(["p1"], []) == []
