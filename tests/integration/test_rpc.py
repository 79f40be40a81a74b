"""gRPC-over-Kafka on the real broker, with a test handler: statuses, deadlines, many clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from crossrec import settings as config
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.rpc.client import RpcClient
from crossrec.rpc.generations import Generations, topic_of
from crossrec.rpc.protocol import Code, Request, RpcError, now_ms
from crossrec.rpc.server import RpcServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

ECHO = "/test.Echo/Echo"
SLOW = "/test.Echo/Slow"
FAIL = "/test.Echo/Fail"
BUG = "/test.Echo/Bug"


async def echo(body: bytes, content_type: str) -> bytes:
    return body


async def slow(body: bytes, content_type: str) -> bytes:
    await asyncio.sleep(float(body))
    return body


async def fail(body: bytes, content_type: str) -> bytes:
    raise RpcError(Code.INVALID_ARGUMENT, "num: must be a positive integer")


async def bug(body: bytes, content_type: str) -> bytes:
    raise ZeroDivisionError("oops")


@contextlib.asynccontextmanager
async def echo_server(settings: config.Settings, **options: float):
    name = f"test-rpc-{uuid.uuid4().hex[:8]}"
    await create_topics(settings, (TopicSpec(name, 2),))
    server = RpcServer(
        settings,
        {ECHO: echo, SLOW: slow, FAIL: fail, BUG: bug},
        group=f"g-{name}",
        topic=settings.topic(name),
        **options,
    )
    await server.start()
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.assigned.wait(), 30)
        yield server, settings.topic(name)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await server.stop()


async def test_statuses_and_deadlines(stack: config.Settings) -> None:
    async with (
        echo_server(stack) as (server, topic),
        RpcClient(stack, request_topic=topic) as client,
    ):
        assert await client.call(ECHO, b"hello", timeout=10) == b"hello"

        with pytest.raises(RpcError) as unknown:
            await client.call("/test.Echo/Nope", b"", timeout=10)
        assert unknown.value.code == Code.UNIMPLEMENTED

        with pytest.raises(RpcError) as invalid:
            await client.call(FAIL, b"", timeout=10)
        assert (invalid.value.code, invalid.value.message) == (
            Code.INVALID_ARGUMENT,
            "num: must be a positive integer",
        )

        with pytest.raises(RpcError) as internal:
            await client.call(BUG, b"", timeout=10)
        assert (
            internal.value.code == Code.INTERNAL and "ZeroDivisionError" in internal.value.message
        )

        with pytest.raises(RpcError) as late:
            await client.call(SLOW, b"1.0", timeout=0.3)  # the server answers after the deadline
        assert late.value.code == Code.DEADLINE_EXCEEDED
        await asyncio.sleep(1.2)
        assert server.counts["expired"] >= 1  # ... and it did not send the useless reply

        # a request already past its deadline when it arrives is dropped unanswered
        expired_before = server.counts["expired"]
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        await producer.start()
        stale = Request(
            ECHO, "stale", client.reply_topic, 0, now_ms() - 1000, "application/protobuf", b"x"
        )
        current = await client.current_topic(topic)  # the request topic's generation now
        await producer.send_and_wait(current, b"x", headers=stale.headers())
        await producer.send_and_wait(
            current, b"no headers at all"
        )  # malformed metadata: dropped, logged
        await producer.stop()
        assert await client.call(ECHO, b"still serving", timeout=10) == b"still serving"
        assert server.counts["expired"] == expired_before + 1
        assert server.counts["malformed"] >= 1


async def test_many_clients_each_hear_only_their_replies(stack: config.Settings) -> None:
    async with echo_server(stack) as (_, topic):
        clients = [RpcClient(stack, request_topic=topic) for _ in range(4)]
        await asyncio.gather(*(c.start() for c in clients))
        try:

            async def ask(n: int, client: RpcClient) -> bytes:
                return await client.call(ECHO, f"{n}".encode(), timeout=20)

            asked = [(n, clients[n % 4]) for n in range(200)]
            answers = await asyncio.gather(*(ask(n, c) for n, c in asked))
            assert answers == [f"{n}".encode() for n, _ in asked]
            assert len({c.reply_topic for c in clients}) == 4
        finally:
            await asyncio.gather(*(c.stop() for c in clients))


async def test_reply_topics_rotate_without_losing_replies(stack: config.Settings) -> None:
    """A client moves to a fresh reply topic while requests are in flight: every call is answered
    (slow ones on the topic they were told), and earlier topics are deleted once their requests'
    deadlines have passed."""
    rotating = dataclasses.replace(stack, rpc_reply_topic_seconds=0.5)
    async with (
        echo_server(stack) as (_, topic),
        RpcClient(rotating, request_topic=topic) as client,
    ):
        first = client.reply_topic
        used = {first}

        async def ask(n: int) -> bytes:
            used.add(client.reply_topic)
            if n % 10 == 0:  # answered after a rotation, on the topic it was sent with
                return await client.call(SLOW, b"0.8", timeout=10)
            return await client.call(ECHO, f"{n}".encode(), timeout=10)

        answers = []
        for round_ in range(6):
            answers += await asyncio.gather(*(ask(round_ * 20 + n) for n in range(20)))
            await asyncio.sleep(0.3)
        expected = [b"0.8" if n % 10 == 0 else f"{n}".encode() for n in range(120)]
        assert answers == expected
        assert len(used) >= 3  # it did rotate, more than once

        async def existing() -> set[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        deadline = asyncio.get_running_loop().time() + 30
        while first in await existing():  # its last request's deadline was ~10 s after sending
            assert asyncio.get_running_loop().time() < deadline, "old reply topic never deleted"
            await asyncio.sleep(0.5)
        assert client.reply_topic in await existing()
        assert await client.call(ECHO, b"after", timeout=10) == b"after"


async def test_servers_forget_reply_topics_no_longer_answered_on(stack: config.Settings) -> None:
    """Rotating clients leave a trail of reply topics; a server stops tracking their metadata
    (its producer would refresh them all on every new one) and still answers on new ones."""
    rotating = dataclasses.replace(stack, rpc_reply_topic_seconds=0.5)
    async with (
        echo_server(stack, forget_reply_topics_after=1.0) as (server, topic),
        RpcClient(rotating, request_topic=topic) as client,
    ):
        used = set()
        for n in range(12):
            used.add(client.reply_topic)
            assert await client.call(ECHO, f"{n}".encode(), timeout=10) == f"{n}".encode()
            await asyncio.sleep(0.25)
        assert len(used) >= 3  # the server answered on several reply topics
        await asyncio.sleep(2.5)
        last = client.reply_topic  # the call below reads it before its first await
        assert await client.call(ECHO, b"later", timeout=10) == b"later"
        for _ in range(100):  # the serve loop prunes every half second or so
            if set(server.reply_topics) == {last}:
                break
            await asyncio.sleep(0.1)
        assert set(server.reply_topics) == {last}
        assert server.producer.client._topics == {last}  # what its metadata refreshes ask for


async def test_request_topics_are_replaced_without_losing_requests(stack: config.Settings) -> None:
    """With 3 s generations, calls made across several of them are all answered, each went to
    the generation of its moment, and the topics of generations long over are deleted."""
    short = dataclasses.replace(stack, rpc_request_topic_seconds=3.0)
    gens = Generations(3.0)
    async with (
        echo_server(short) as (_, topic),
        RpcClient(short, request_topic=topic) as client,
    ):
        first = gens.at(now_ms())
        sent, answers = [], []
        while gens.at(now_ms()) < first + 4:
            batch = [f"{len(sent) + n}".encode() for n in range(10)]
            sent += batch
            answers += await asyncio.gather(*(client.call(ECHO, b, timeout=15) for b in batch))
            await asyncio.sleep(0.2)
        assert answers == sent

        # requests sent in the last milliseconds of a generation leave in a batch after it ends
        # (the producer lingers): the client must still track their topic to deliver them
        boundary = gens.start_ms(gens.at(now_ms()) + 1)
        await asyncio.sleep((boundary - now_ms() - 2) / 1000)
        late = [f"late-{n}".encode() for n in range(20)]
        lingering = [asyncio.create_task(client.call(ECHO, b, timeout=15)) for b in late]
        await asyncio.sleep(0.004)  # the next generation's first requests, before they leave
        early = [asyncio.create_task(client.call(ECHO, b, timeout=15)) for b in late]
        assert await asyncio.gather(*lingering, *early) == late + late

        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while topic_of(topic, first) in await admin.list_topics():
                assert asyncio.get_running_loop().time() < deadline, "old generation kept"
                await asyncio.sleep(0.5)
            assert topic_of(topic, gens.at(now_ms())) in await admin.list_topics()
        finally:
            await admin.close()


async def test_a_generation_whose_reader_fails_to_start_is_read_again(
    stack: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's reader of a new generation may fail to start (the broker is briefly away): it
    logs, and the next round starts another, so the server serves on (injected failure: the
    first start of a generation's consumer raises; the broker is real)."""
    short = dataclasses.replace(stack, rpc_request_topic_seconds=3.0)
    real_start = AIOKafkaConsumer.start
    failed: list[str] = []

    async def flaky_start(self: AIOKafkaConsumer) -> None:
        if not failed and ".g" in (self._group_id or ""):
            failed.append(self._group_id)
            raise KafkaConnectionError("injected: broker away")
        await real_start(self)

    monkeypatch.setattr(AIOKafkaConsumer, "start", flaky_start)
    async with (
        echo_server(short) as (_, topic),
        RpcClient(short, request_topic=topic) as client,
    ):
        gens = Generations(3.0)
        first = gens.at(now_ms())
        while gens.at(now_ms()) < first + 3:
            assert await client.call(ECHO, b"on", timeout=15) == b"on"
            await asyncio.sleep(0.3)
    assert len(failed) == 1
