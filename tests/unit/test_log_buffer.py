"""The log's line buffer: lines written on a loop go out together when its timer fires,
nothing is held back off the loop, nothing is lost when a loop stops before its flush ran."""

from __future__ import annotations

import asyncio
import io
import threading

import orjson

from services.runtime.logs import LineBuffer


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_lines_written_off_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    buffer = LineBuffer(stream)
    buffer.msg(b'{"a":1}')
    buffer.msg(b'{"b":2}')
    assert stream.getvalue() == b'{"a":1}\n{"b":2}\n'
    assert stream.writes == 2


async def test_lines_written_on_a_loop_go_out_in_one_write_when_the_timer_fires() -> None:
    stream = CountingStream()
    buffer = LineBuffer(stream, flush_seconds=0.05)
    for index in range(100):
        buffer.msg(b"%d" % index)
        if index % 10 == 0:
            await asyncio.sleep(0)  # later loop iterations join the same write
    await asyncio.sleep(0.01)
    assert stream.getvalue() == b""
    await asyncio.sleep(0.1)
    assert stream.getvalue().splitlines() == [b"%d" % index for index in range(100)]
    assert stream.writes == 1
    buffer.msg(b"next")  # a new timer for the next lines
    await asyncio.sleep(0.1)
    assert stream.getvalue().endswith(b"99\nnext\n")
    assert stream.writes == 2


def test_a_line_left_by_a_loop_that_stopped_is_written_with_the_next_one() -> None:
    stream = CountingStream()
    buffer = LineBuffer(stream)
    loop = asyncio.new_event_loop()

    async def write_and_stop() -> None:
        buffer.msg(b"first")
        loop.stop()

    task = loop.create_task(write_and_stop())
    loop.run_forever()
    assert task.done()
    loop.close()
    buffer.msg(b"second")
    assert stream.getvalue() == b"first\nsecond\n"


async def test_lines_from_other_threads_during_flushes_are_each_written_once() -> None:
    """Appends take no lock; a flush must take only the lines it counted."""
    stream = CountingStream()
    buffer = LineBuffer(stream, flush_seconds=0.0005)

    def off_loop(thread: int) -> None:
        for index in range(3000):
            buffer.msg(b"t%d-%d" % (thread, index))

    threads = [asyncio.to_thread(off_loop, thread) for thread in range(3)]
    on_loop = [b"loop-%d" % index for index in range(3000)]

    async def writer() -> None:
        for index, line in enumerate(on_loop):
            buffer.msg(line)
            if index % 50 == 0:
                await asyncio.sleep(0.0005)  # the buffer's timer fires in between

    await asyncio.gather(writer(), *threads)
    buffer.flush()
    lines = stream.getvalue().splitlines()
    expected = on_loop + [b"t%d-%d" % (t, i) for t in range(3) for i in range(3000)]
    assert sorted(lines) == sorted(expected)
    assert [line for line in lines if line.startswith(b"loop-")] == on_loop


class StalledStream(io.BytesIO):
    """A reader that stops reading: every write waits until `resume` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = threading.Event()
        self.entered = threading.Event()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.entered.set()
        assert self.resume.wait(10), "the test never resumed the reader"
        return super().write(data)


async def test_a_stalled_reader_does_not_stall_the_loop() -> None:
    stream = StalledStream()
    buffer = LineBuffer(stream, flush_seconds=0.001)
    buffer.msg(b"first")
    assert await asyncio.to_thread(stream.entered.wait, 5), "the writer never wrote"
    for index in range(100):  # the writer is stuck in write(); the loop goes on
        buffer.msg(b"%d" % index)
        await asyncio.sleep(0.002)
    assert stream.getvalue() == b""
    stream.resume.set()
    await asyncio.to_thread(buffer.flush)
    assert stream.getvalue().splitlines() == [b"first", *(b"%d" % i for i in range(100))]
    assert buffer.dropped_lines == 0


async def test_past_its_bytes_the_buffer_drops_lines_counts_them_and_says_so() -> None:
    stream = StalledStream()
    buffer = LineBuffer(stream, flush_seconds=0.001, max_bytes=1000)
    line = b"x" * 99  # 100 bytes with its newline
    buffer.msg(line)
    assert await asyncio.to_thread(stream.entered.wait, 5)
    for _ in range(15):
        buffer.msg(line)
    # 10 lines of 100 bytes fit (the one being written among them); 6 are dropped
    assert (buffer.dropped_lines, buffer.dropped_bytes) == (6, 600)
    stream.resume.set()
    await asyncio.to_thread(buffer.flush)
    buffer.msg(b"after")
    await asyncio.to_thread(buffer.flush)
    lines = stream.getvalue().splitlines()
    assert lines[:10] == [line] * 10
    summary = orjson.loads(lines[10])
    assert summary["event"].startswith("log lines dropped")
    assert (summary["level"], summary["lines"], summary["bytes"]) == ("warning", 6, 600)
    assert lines[11:] == [b"after"]


def test_lines_a_closed_stream_refuses_are_counted_and_nothing_raises() -> None:
    stream = io.BytesIO()
    stream.close()
    buffer = LineBuffer(stream)
    buffer.msg(b"lost")
    buffer.msg(b"lost too")
    assert buffer.dropped_lines == 2
