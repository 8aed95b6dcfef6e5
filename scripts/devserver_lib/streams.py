"""Stream logs in memory (tail, recent records, waiting readers) and the
SSE readers.

A v2 run's streams are read as S2 (the real server's stream store) serves
them (its open-source server, api/src/v1/stream/sse.rs):

    event: batch
    data: {"records":[{"seq_num":0,"timestamp":...,"body":"..."}]}
    id: <seq of the last record sent>,<records sent>,<metered bytes sent>

    event: ping
    data: {"timestamp":...,"tail":{"seq_num":...,"timestamp":...}}

    data: [DONE]

A ping goes out at once when the reader has caught up with what is stored,
then after every random 5-15 s of silence. Only live batches (records that
arrived while the reader was connected and caught up) carry a `tail`.
Timeout-Seconds is an idle budget: each batch sent renews it.

A v1 run's streams are read as the real server's Redis streams serve them
(redisRealtimeStreams.server.ts): `id: <ms>-<n>` and one `data:` line per
record (the sent value's JSON text as a JSON string), `: ping` every 10 s,
and the end after Timeout-Seconds without a record, checked every 5 s.

Readers wait on one future per stream that the next append resolves; no
polling. Each connection costs one coroutine and a few counters."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from typing import Optional

from . import jsjson, store as storemod

PING_MIN, PING_MAX = 5.0, 15.0   # S2: a ping after a random 5-15 s of silence
V1_BLOCK = 5.0                # Redis XREAD BLOCK of the v1 reader
V1_PING = 10.0                # the v1 reader's ping comment interval
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


class Faults:
    """Test knobs (devserver --sse-error-after, --sse-silence): misbehaviour
    the real server can show, injected once per stream."""

    def __init__(self, error_after: Optional[int] = None, silence: float = 0.0):
        self.error_after, self.silence = error_after, silence
        self.errored: set = set()     # streams whose error was sent
        self.silenced: set = set()    # streams whose silence was served

    def take_error(self, s: "Stream") -> Optional[int]:
        """Records to send before the error on a new connection, or None."""
        key = (s.run, s.name)
        if self.error_after is None or key in self.errored:
            return None
        return self.error_after

    def take_silence(self, s: "Stream") -> float:
        key = (s.run, s.name)
        if not self.silence or key in self.silenced:
            return 0.0
        self.silenced.add(key)
        return self.silence


class Hub:
    def __init__(self, store: storemod.Store, faults: Optional[Faults] = None):
        self.store = store
        self.faults = faults or Faults()
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

    def batch_data(self, s: Stream, records: list, live: bool) -> bytes:
        """The data line of a batch event. The readers an append wakes are
        all sent the same batch, one after the other: it is encoded once
        for them (the last few batches are kept)."""
        key = (s, records[0].seq, records[-1].seq, s.tail if live else -1)
        data = self.recent_data.get(key)
        if data is None:
            tail = ',"tail":{"seq_num":%d,"timestamp":%d}' % (s.tail, s.last_ts) if live else ""
            data = ('data: {"records":[%s]%s}\n'
                    % (",".join(r.frag for r in records), tail)).encode()
            if len(data) <= RECENT_BATCH_BYTES:
                self.recent_data[key] = data
                if len(self.recent_data) > RECENT_BATCHES:
                    self.recent_data.popitem(last=False)
        return data


def ping_event(s: Stream) -> bytes:
    return b'event: ping\ndata: {"timestamp":%d,"tail":{"seq_num":%d,"timestamp":%d}}\n\n' % (
        storemod.now_ms(), s.tail, s.last_ts)


DONE_EVENT = b"data: [DONE]\n\n"
INJECTED_ERROR = b"event: error\ndata: injected by devserver --sse-error-after\n\n"


class _Connection:
    """What both readers share: one SSE response on one stream, woken by
    appends, returning on shutdown or disconnect."""

    def __init__(self, hub: Hub, stream: Stream, resp, transport, next_seq: int,
                 timeout: float):
        self.hub, self.stream, self.resp, self.transport = hub, stream, resp, transport
        # S2 clamps a start past the tail to the tail.
        self.next_seq = min(max(next_seq, 0), stream.tail)
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()

    async def _write(self, data: bytes) -> None:
        await self.resp.write(data)
        self.last_write = self.loop.time()

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

    def _over(self) -> bool:
        return self.hub.closing or self.transport is None or self.transport.is_closing()

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
        raise NotImplementedError


class Reader(_Connection):
    """One S2-framed (v2) SSE connection reading one stream from `next_seq`."""

    def __init__(self, *args):
        super().__init__(*args)
        self.count = 0
        self.bytes = 0
        self.error_left = self.hub.faults.take_error(self.stream)

    def _batch_event(self, records: list, live: bool) -> bytes:
        self.count += len(records)
        self.bytes += sum(r.size for r in records)
        # S2 (axum) writes the event's id after its data.
        return (b"event: batch\n" + self.hub.batch_data(self.stream, records, live)
                + b"id: %d,%d,%d\n\n" % (records[-1].seq, self.count, self.bytes))

    async def _flush_new(self, live: bool) -> bool:
        """Send what is stored past next_seq. False once an injected error
        ended the connection."""
        while self.next_seq < self.stream.tail:
            records = self.hub.batch(self.stream, self.next_seq)
            if not records:
                return True
            if self.error_left is not None:
                records = records[:self.error_left]
                self.error_left -= len(records)
            if records:
                self.next_seq = records[-1].seq + 1
                await self._write(self._batch_event(records, live))
            if self.error_left == 0:
                self.hub.faults.errored.add((self.stream.run, self.stream.name))
                await self._write(INJECTED_ERROR)
                return False
        return True

    @staticmethod
    def _ping_gap() -> float:
        return random.uniform(PING_MIN, PING_MAX)

    async def _serve(self) -> str:
        if not await self._flush_new(live=False):     # the replay
            return "error"
        await self._write(ping_event(self.stream))    # caught up
        deadline = self.loop.time() + self.timeout
        next_ping = self.loop.time() + self._ping_gap()
        silence = self.hub.faults.take_silence(self.stream)
        if silence:
            await self._sleep_quietly(self.loop.time() + silence)
            next_ping = self.loop.time() + self._ping_gap()
        while True:
            if self._over():
                return "closed"
            if self.next_seq < self.stream.tail:
                if not await self._flush_new(live=True):
                    return "error"
                deadline = self.loop.time() + self.timeout     # an idle budget
                next_ping = self.loop.time() + self._ping_gap()
                continue
            now = self.loop.time()
            if now >= deadline:
                await self._write(DONE_EVENT)
                return "timeout"
            if now >= next_ping:
                await self._write(ping_event(self.stream))
                next_ping = now + self._ping_gap()
            await self._sleep_until(min(deadline, next_ping))

    async def _sleep_quietly(self, until: float) -> None:
        while self.loop.time() < until and not self._over():
            await asyncio.sleep(min(0.5, until - self.loop.time()))


def v1_event_id(rec: Record) -> bytes:
    return b"%d-%d" % (rec.ts, rec.seq)


def parse_v1_event_id(text: str) -> int:
    """Last-Event-ID of a v1 reader (<ms>-<n>) -> the next seq."""
    _, _, n = text.partition("-")
    return int(n) + 1 if n.isdigit() else 0


class V1Reader(_Connection):
    """One Redis-style (v1) SSE connection."""

    async def _flush_new(self) -> bool:
        sent = False
        while self.next_seq < self.stream.tail:
            records = self.hub.batch(self.stream, self.next_seq)
            if not records:
                break
            self.next_seq = records[-1].seq + 1
            out = []
            for rec in records:
                data = json.loads(rec.body).get("data")
                if data is not None:
                    out.append(b"id: %s\ndata: %s\n\n" % (
                        v1_event_id(rec), jsjson.string(data).encode()))
            if out:
                await self._write(b"".join(out))
                sent = True
        return sent

    async def _serve(self) -> str:
        last_data = self.loop.time()
        while True:
            if self._over():
                return "closed"
            if self.loop.time() - self.last_write >= V1_PING:
                await self._write(b": ping\n\n")
            if await self._flush_new():
                last_data = self.loop.time()
                continue
            await self._sleep_until(self.loop.time() + V1_BLOCK)
            if self._over():
                return "closed"
            if self.next_seq >= self.stream.tail and \
                    self.loop.time() - last_data >= self.timeout:
                return "timeout"
