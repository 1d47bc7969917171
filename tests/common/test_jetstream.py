"""The JetStream helpers against a real nats-server: OCC appends, batched reads, the consumer."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.errors import AppendConflictError
from infraflow.common.jetstream import PullConsumer, append, get_last, read_subject
from infraflow.common.streams import ensure_topology


def _subj(run: str, name: str) -> str:
    return subjects.event("server", "srv_1", run, name)


async def test_append_with_expected_sequence_and_conflict(js: JetStreamContext) -> None:
    scope = subjects.run_events("server", "srv_1", "run_a")
    s1 = await append(js, _subj("run_a", "run_created"), b"1", expected_last_seq=0, scope=scope)
    s2 = await append(js, _subj("run_a", "run_started"), b"2", expected_last_seq=s1, scope=scope)
    assert s2 > s1
    with pytest.raises(AppendConflictError) as info:
        await append(js, _subj("run_a", "run_completed"), b"3", expected_last_seq=s1, scope=scope)
    assert info.value.actual_last_seq == s2
    # other runs interleaving do not conflict
    await append(
        js,
        _subj("run_b", "run_created"),
        b"x",
        expected_last_seq=0,
        scope=subjects.run_events("server", "srv_1", "run_b"),
    )
    s3 = await append(js, _subj("run_a", "run_completed"), b"3", expected_last_seq=s2, scope=scope)
    assert s3 > s2


async def test_retried_append_with_same_msg_id_is_success(js: JetStreamContext) -> None:
    scope = subjects.run_events("server", "srv_1", "run_c")
    s1 = await append(
        js, _subj("run_c", "run_created"), b"1", expected_last_seq=0, scope=scope, msg_id="m1"
    )
    again = await append(
        js, _subj("run_c", "run_created"), b"1", expected_last_seq=0, scope=scope, msg_id="m1"
    )
    assert again == s1
    with pytest.raises(AppendConflictError):
        await append(
            js,
            _subj("run_c", "run_created"),
            b"1",
            expected_last_seq=0,
            scope=scope,
            msg_id="other",
        )


async def test_concurrent_writers_one_winner(js: JetStreamContext) -> None:
    scope = subjects.run_events("server", "srv_1", "run_d")
    results = await asyncio.gather(
        *(
            append(js, _subj("run_d", "run_created"), b"x", expected_last_seq=0, scope=scope)
            for _ in range(20)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, AppendConflictError) for r in results) == 19


async def test_read_subject_in_batches(nc: Client, js: JetStreamContext) -> None:
    for i in range(30):
        await js.publish(_subj("run_e", f"e{i % 3}"), str(i).encode())
        await js.publish(_subj("run_f", "noise"), b"n")
    msgs = await read_subject(
        nc, streams.EVENTS, subjects.run_events("server", "srv_1", "run_e"), batch=7
    )
    assert [m.data for m in msgs] == [str(i).encode() for i in range(30)]
    tail = await read_subject(
        nc, streams.EVENTS, subjects.run_events("server", "srv_1", "run_e"), after_seq=msgs[19].seq
    )
    assert [m.data for m in tail] == [str(i).encode() for i in range(20, 30)]
    assert await read_subject(nc, streams.EVENTS, "wf.events.server.srv_1.run_zz.*") == []
    last = await get_last(js, streams.EVENTS, subjects.run_events("server", "srv_1", "run_e"))
    assert last is not None
    assert last.data == b"29"


async def test_pull_consumer_streams_and_stops_cleanly(nc: Client, js: JetStreamContext) -> None:
    spec = streams.ConsumerSpec(
        stream=streams.EVENTS, durable="t1", filter_subjects=["wf.events.test.>"], ack_wait_s=5
    )
    await ensure_topology(js, consumers=(spec,))
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(msg: Msg) -> None:
        seen.append(msg.data.decode())
        await msg.ack()
        if len(seen) == 200:
            done.set()

    stop = asyncio.Event()
    consumer = PullConsumer(nc, streams.EVENTS, "t1", handler, max_inflight=16)
    task = asyncio.create_task(consumer.run(stop))
    # a lone message is delivered at once, not after the pull request expires
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await js.publish("wf.events.test.x.r0.e", b"0")
    while not seen:
        await asyncio.sleep(0.005)
    assert loop.time() - t0 < 0.5
    for i in range(1, 200):
        await js.publish(f"wf.events.test.x.r{i}.e", str(i).encode())
    await asyncio.wait_for(done.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert sorted(map(int, seen)) == list(range(200))
