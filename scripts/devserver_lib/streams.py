"""Input-stream logs in memory (tail, recent records, waiting readers) and
the SSE reader, framed as S2 (the real server's stream store) frames it:

    id: <seq of the last record sent>,<records sent>,<metered bytes sent>
    event: batch
    data: {"records":[{"seq_num":0,"timestamp":...,"body":"..."}],"tail":{...}}

    event: ping
    data: {"timestamp":...}

    data: [DONE]

Readers wait on one future per stream that the next append resolves; no
polling. Each connection costs one coroutine and a few counters."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Optional

from . import store as storemod

PING_INTERVAL = 5.0           # seconds of silence before a ping
BATCH_MAX_RECORDS = 1000      # S2's read batch limits
BATCH_MAX_BYTES = 1024 * 1024
RECENT_RECORDS = 256          # kept in memory per stream for live readers,
RECENT_BYTES = 4 * 1024 * 1024            # at most this much per stream
RECENT_BUDGET = 64 * 1024 * 1024          # and this much for all streams
RECENT_BATCHES = 16           # encoded batch events kept for other readers,
RECENT_BATCH_BYTES = 64 * 1024            # those up to this size
RECORD_OVERHEAD = 8           # S2 metered size = 8 + body bytes (no headers)


class Record:
    __slots__ = ("seq", "ts", "body", "size", "_frag")

    def __init__(self, seq: int, ts: int, body: str):
        self.seq, self.ts, self.body = seq, ts, body
        self.size = RECORD_OVERHEAD + len(body.encode())
        self._frag: Optional[str] = None

    @property
    def frag(self) -> str:
        """The record as JSON, built once and shared by every reader."""
        if self._frag is None:
            self._frag = '{"seq_num":%d,"timestamp":%d,"body":%s}' % (
                self.seq, self.ts, json.dumps(self.body, ensure_ascii=False))
        return self._frag


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Stream:
    __slots__ = ("run", "name", "tail", "last_ts", "recent", "recent_bytes", "waiting")

    def __init__(self, run: str, name: str, tail: int, last_ts: int):
        self.run, self.name, self.tail, self.last_ts = run, name, tail, last_ts
        self.recent: collections.deque = collections.deque()
        self.recent_bytes = 0
        self.waiting: set = set()     # futures of readers, resolved by the next append

    def _remember(self, rec: Record) -> None:
        self.recent.append(rec)
        self.recent_bytes += rec.size
        while len(self.recent) > RECENT_RECORDS or (
                len(self.recent) > 1 and self.recent_bytes > RECENT_BYTES):
            self.recent_bytes -= self.recent.popleft().size

    def appended(self, rec: Record) -> None:
        self.tail, self.last_ts = rec.seq + 1, rec.ts
        self._remember(rec)
        self.wake_all()

    def wake_all(self) -> None:
        for fut in self.waiting:
            _wake(fut)
        self.waiting.clear()


class Hub:
    def __init__(self, store: storemod.Store):
        self.store = store
        self.streams: dict = {}
        self.readers: set = set()     # futures of running readers
        self.closing = False
        self.recent_lru: collections.OrderedDict = collections.OrderedDict()
        self.recent_total = 0
        self.recent_data: collections.OrderedDict = collections.OrderedDict()

    def get(self, run: str, name: str) -> Stream:
        key = (run, name)
        s = self.streams.get(key)
        if s is None:
            tail, last_ts = self.store.stream_tail(run, name)
            s = self.streams[key] = Stream(run, name, tail, last_ts)
        return s

    def appended(self, s: Stream, rec: Record) -> None:
        """A record was stored: wake the stream's readers, and keep recent
        records in memory within the global budget (least recently
        written streams forget theirs first; readers then use the DB)."""
        before = s.recent_bytes
        s.appended(rec)
        self.recent_total += s.recent_bytes - before
        key = (s.run, s.name)
        self.recent_lru[key] = s
        self.recent_lru.move_to_end(key)
        while self.recent_total > RECENT_BUDGET and len(self.recent_lru) > 1:
            _, old = self.recent_lru.popitem(last=False)
            self.recent_total -= old.recent_bytes
            old.recent.clear()
            old.recent_bytes = 0

    async def close(self, timeout: float = 2.0) -> None:
        """Shutdown: make every reader return, and wait until they have."""
        self.closing = True
        for s in self.streams.values():
            s.wake_all()
        if self.readers:
            await asyncio.wait(set(self.readers), timeout=timeout)

    def batch(self, s: Stream, from_seq: int) -> list:
        """The next batch of records from `from_seq`, within S2's limits."""
        if s.recent and s.recent[0].seq <= from_seq:
            start = from_seq - s.recent[0].seq
            source = [s.recent[i] for i in range(start, min(len(s.recent),
                                                           start + BATCH_MAX_RECORDS))]
        else:
            source = [Record(*row) for row in
                      self.store.read_records(s.run, s.name, from_seq, BATCH_MAX_RECORDS)]
        out, total = [], 0
        for rec in source:
            if out and total + rec.size > BATCH_MAX_BYTES:
                break
            out.append(rec)
            total += rec.size
        return out

    def batch_data(self, s: Stream, records: list) -> bytes:
        """The data line of a batch event. The readers an append wakes are
        all sent the same batch, one after the other: it is encoded once
        for them (the last few batches are kept)."""
        key = (s, records[0].seq, records[-1].seq, s.tail)
        data = self.recent_data.get(key)
        if data is None:
            data = ('data: {"records":[%s],"tail":{"seq_num":%d,"timestamp":%d}}\n\n'
                    % (",".join(r.frag for r in records), s.tail, s.last_ts)).encode()
            if len(data) <= RECENT_BATCH_BYTES:
                self.recent_data[key] = data
                if len(self.recent_data) > RECENT_BATCHES:
                    self.recent_data.popitem(last=False)
        return data


def ping_event() -> bytes:
    return b'event: ping\ndata: {"timestamp":%d}\n\n' % storemod.now_ms()


DONE_EVENT = b"data: [DONE]\n\n"


class Reader:
    """One SSE connection reading one stream from `next_seq`."""

    def __init__(self, hub: Hub, stream: Stream, resp, transport, next_seq: int,
                 timeout: float):
        self.hub, self.stream, self.resp, self.transport = hub, stream, resp, transport
        # S2 clamps a start past the tail to the tail.
        self.next_seq = min(next_seq, stream.tail)
        self.timeout = timeout
        self.count = 0
        self.bytes = 0
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()

    async def _write(self, data: bytes) -> None:
        await self.resp.write(data)
        self.last_write = self.loop.time()

    def _batch_event(self, records: list) -> bytes:
        self.count += len(records)
        self.bytes += sum(r.size for r in records)
        return (b"id: %d,%d,%d\nevent: batch\n" % (records[-1].seq, self.count, self.bytes)
                + self.hub.batch_data(self.stream, records))

    async def _flush_new(self) -> None:
        while self.next_seq < self.stream.tail:
            records = self.hub.batch(self.stream, self.next_seq)
            if not records:
                return
            self.next_seq = records[-1].seq + 1
            await self._write(self._batch_event(records))

    async def _sleep_until(self, when: float) -> None:
        """Until the stream's next append or loop time `when`."""
        fut = self.loop.create_future()
        self.stream.waiting.add(fut)
        timer = self.loop.call_at(when, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self.stream.waiting.discard(fut)

    def _gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def run(self) -> str:
        """Serve until the timeout, shutdown or disconnect; says which."""
        done = self.loop.create_future()
        self.hub.readers.add(done)
        try:
            return await self._serve()
        finally:
            self.hub.readers.discard(done)
            done.set_result(None)

    async def _serve(self) -> str:
        deadline = self.loop.time() + self.timeout
        if self.next_seq >= self.stream.tail:
            # Nothing to replay: say so at once (a ping is only a keepalive
            # to clients, but it tells a reader it has caught up).
            await self._write(ping_event())
        while True:
            await self._flush_new()
            now = self.loop.time()
            if now >= deadline:
                await self._write(DONE_EVENT)
                return "timeout"
            if self.hub.closing or self._gone():
                return "closed"
            await self._sleep_until(min(deadline, self.last_write + PING_INTERVAL))
            if self.hub.closing or self._gone():
                return "closed"
            if (self.next_seq >= self.stream.tail and
                    self.loop.time() >= self.last_write + PING_INTERVAL and
                    self.loop.time() < deadline):
                await self._write(ping_event())
