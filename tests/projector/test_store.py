"""The SQLite read model on its own: transactions with the position, replays, keyset pages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from infraflow.common.catalog import DEFAULT_CATALOG
from infraflow.common.contracts import AnyRunEvent, encode
from infraflow.projector.adapters.store import ProjectionStore, RunFilter, rebuild
from infraflow.projector.core.batch import StreamMessage
from infraflow.projector.core.state import to_micros

from .support import T0, RunHistory, register_input


def messages(events: list[AnyRunEvent], first_seq: int = 1) -> list[StreamMessage]:
    return [StreamMessage(first_seq + i, "wf.events.x", encode(e)) for i, e in enumerate(events)]


def snapshot(store: ProjectionStore) -> list[tuple[object, ...]]:
    conn = store._reader()
    return [
        *conn.execute("SELECT * FROM runs ORDER BY id"),
        *conn.execute("SELECT * FROM run_docs ORDER BY id"),
        *conn.execute("SELECT * FROM codes ORDER BY kind, code"),
        *conn.execute("SELECT * FROM agg_counts ORDER BY grain, project, start, type, rtype"),
        *conn.execute("SELECT * FROM agg_durations ORDER BY grain, project, start, type, bin"),
        *conn.execute("SELECT * FROM agg_errors ORDER BY grain, project, start, type, code"),
        *conn.execute("SELECT * FROM resources ORDER BY type, id"),
        *conn.execute("SELECT * FROM projector_position"),
    ]


def test_replayed_messages_are_harmless(tmp_path: Path) -> None:
    h = RunHistory(input=register_input()).happy()
    msgs = messages(h.events)
    store = ProjectionStore(tmp_path / "a.sqlite3", DEFAULT_CATALOG)
    store.apply(msgs[:5])
    store.apply(msgs[3:])  # overlaps what was applied
    once = snapshot(store)

    again = store.apply(msgs)  # a full replay

    assert again.events == 0
    assert snapshot(store) == once
    assert store.applied_seq == len(msgs)
    run = store.get_run(h.run_id)
    assert run is not None
    assert run.status == "completed"
    assert run.seqs == list(range(1, len(msgs) + 1))
    store.close()


def test_position_survives_reopening_and_reset_forgets_it(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    h = RunHistory().happy()
    store = ProjectionStore(path, DEFAULT_CATALOG)
    store.apply(messages(h.events, first_seq=10))
    store.close()

    reopened = ProjectionStore(path, DEFAULT_CATALOG)
    assert reopened.applied_seq == 9 + len(h.events)
    reopened.close()

    rebuild(path, DEFAULT_CATALOG)
    fresh = ProjectionStore(path, DEFAULT_CATALOG)
    assert fresh.applied_seq == 0
    assert fresh.get_run(h.run_id) is None
    fresh.close()


def test_list_filters_combine_and_pages_follow_the_keyset(tmp_path: Path) -> None:
    store = ProjectionStore(tmp_path / "c.sqlite3", DEFAULT_CATALOG)
    events: list[AnyRunEvent] = []
    histories = []
    for i in range(30):
        h = RunHistory(
            ["server.register", "server.inspect", "server.lifecycle"][i % 3],
            project_id=f"prj_{i % 2}",
            triggered_by=f"usr_{i % 5}",
            at=T0 + timedelta(minutes=i),
        )
        h.created()
        if i % 4:
            h.started()
        histories.append(h)
        events += h.events
    store.apply(messages(events))
    by_id = {h.run_id: h for h in histories}

    def ids(f: RunFilter, limit: int = 100, after: str | None = None) -> list[str]:
        return [r.id for r in store.list_runs(f, after, limit)]

    everything = ids(RunFilter())
    assert everything == sorted(by_id, reverse=True)
    inspects = ids(RunFilter(type=["server.inspect"]))
    assert {by_id[i].workflow_type for i in inspects} == {"server.inspect"}
    assert len(inspects) == 10
    combo = ids(
        RunFilter(
            type=["server.inspect", "server.lifecycle"], project_id=["prj_1"], status=["running"]
        )
    )
    expected = [
        i
        for i in everything
        if by_id[i].workflow_type != "server.register"
        and by_id[i].project_id == "prj_1"
        and any(e.name == "run_started" for e in by_id[i].events)
    ]
    assert combo == expected
    assert combo
    window = ids(
        RunFilter(
            since=to_micros(T0 + timedelta(minutes=10)), until=to_micros(T0 + timedelta(minutes=20))
        )
    )
    assert len(window) == 10
    # pages of 7 along a multi-value driver: no gap, no repeat
    f = RunFilter(triggered_by=["usr_0", "usr_1", "usr_3"])
    pages: list[str] = []
    after = None
    while page := ids(f, 7, after):
        pages += page
        after = page[-1]
    assert pages == ids(f)
    assert ids(RunFilter(project_id=[])) == []
    store.close()
