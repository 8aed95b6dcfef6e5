"""No duplicate sends: the send endpoint has no idempotency key, so a send
repeated after an answer that never came could be stored twice. The client
looks a send up in its stream before repeating it (client/api.c, "was it
stored?"). Proved through a fault proxy that loses answers, turns them into
502s, drops requests before the server sees them and refuses with 429, over
1,000 sends by trigger-cli and a writer loop on a real mount: the server
holds each value exactly once, in order.

Output streams likewise (client/output.c, "was it stored?"): S2 appends
carry match_seq_num, and a batch whose answer was lost is looked up at the
seq it was sent for before it goes again, with another writer storing
records at the worst moments."""

from __future__ import annotations

import collections
import json
import os
import secrets
import subprocess
import threading
import time
from typing import Callable, Optional

import pytest

from devserver_ctl import DevServer
from faultproxy import FaultProxy
from mount_ctl import mount_factory, sh  # noqa: F401
from test_client import CLI, cli_env, compact

SEND_PREFIX = "/realtime/"
FAULTS = ("pass", "cut", "502", "drop", "429")


class PatternProxy(FaultProxy):
    """A FaultProxy that gives each send (a POST to an input stream) the
    next fault of a repeating pattern:

        pass  forwarded and answered
        cut   forwarded whole, the answer swallowed, the connection reset:
              stored, never confirmed
        502   forwarded whole, the answer replaced by a 502: stored,
              reported as a server error
        drop  the connection reset before the request's last byte reaches
              the server: never stored, though the client sent it all
        429   never forwarded, answered 429: refused, nothing stored

    Other requests (claims, stream reads) pass."""

    prefix = SEND_PREFIX            # the POSTs that take the faults
    known = FAULTS

    def __init__(self, upstream_port: int, pattern: tuple):
        assert pattern and set(pattern) <= set(self.known), pattern
        self.pattern = pattern
        self.sends: list = []       # (idempotency key, fault) per send request
        super().__init__(upstream_port)

    def faults(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(f for _, f in self.sends)

    def sends_list(self) -> list:
        with self._lock:
            return list(self.sends)

    def stream_reads(self, run: str, stream: str) -> int:
        return self.requests_to("GET", DevServer.stream_path(run, stream))

    # ---- the loop side

    def _count(self, conn, data: bytes) -> None:
        for method, path, headers in conn.requests.feed(data):
            fault = "pass"
            with self._lock:
                self.requests.append((method, path, headers))
                if method == "POST" and path.startswith(self.prefix):
                    fault = self.pattern[len(self.sends) % len(self.pattern)]
                    self.sends.append((headers.get("x-trigger-request-idempotency-key"),
                                       fault))
            self._apply(conn, fault)

    def _apply(self, conn, fault: str) -> None:
        conn.fault = fault
        if fault in ("cut", "502"):
            conn.cut_pending = time.monotonic()
        elif fault == "drop":
            self._drop(conn)        # this chunk, the request's end, never goes up
        elif fault == "429":
            self._answer(conn, b"429 Too Many Requests", b'{"error":"Too many requests"}')

    def _cut(self, conn) -> None:
        if getattr(conn, "graceful", False):
            return
        if getattr(conn, "fault", None) == "502" and conn in self._conns:
            self._answer(conn, b"502 Bad Gateway", b'{"error":"Bad Gateway"}')
            return
        super()._cut(conn)

    def _answer(self, conn, status: bytes, body: bytes) -> None:
        """Answer in the server's place and close after it (no reset, so the
        answer is read); the server's side of the connection is reset."""
        conn.graceful = True
        if conn.upstream_w is not None:
            conn.upstream_w.transport.abort()
        conn.client_w.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                            % (status, len(body), body))
        conn.client_w.close()

    def _drop(self, conn) -> None:
        if not getattr(conn, "graceful", False):
            super()._drop(conn)
            return
        with self._lock:
            self._conns.discard(conn)
        for t in conn.tasks:
            t.cancel()


@pytest.fixture
def pattern_proxy(server):
    """pattern_proxy(pattern) -> a PatternProxy to the session server,
    closed after the test."""
    proxies: list = []

    def make(pattern: tuple) -> PatternProxy:
        proxies.append(PatternProxy(server.port, pattern))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def cli_send(srv: DevServer, url: str, run: str, stream: str, lines: list,
             token: Optional[str] = None, timeout: float = 120) -> str:
    """trigger-cli send through `url`; returns its stderr (it must succeed)."""
    env = cli_env(srv, token, {"TRIGGER_API_URL": url})
    proc = subprocess.run([str(CLI), "send", run, stream], input="".join(l + "\n" for l in lines),
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def check_attempts(proxy: PatternProxy, sends: int) -> None:
    """Each logical send has its own idempotency key on all its attempts,
    and was repeated only after an attempt that cannot have been stored."""
    attempts: dict = collections.defaultdict(list)
    for key, fault in proxy.sends_list():
        assert key, "a send without an idempotency key"
        attempts[key].append(fault)
    assert len(attempts) == sends
    for faults in attempts.values():
        assert faults[-1] in ("pass", "cut", "502"), faults     # it got through
        assert all(f in ("drop", "429") for f in faults[:-1]), faults


# ---- the proof --------------------------------------------------------------------

# Of every ten sends, three lose their answer, one gets a 502 after it was
# stored and one never reaches the server.
PROOF = ("pass", "cut", "pass", "cut", "pass", "502", "pass", "cut", "pass", "drop")


def test_1000_sends_through_lost_answers_are_stored_once_in_order(server, run, pattern_proxy):
    proxy = pattern_proxy(PROOF)
    n = 1000
    sent = [{"i": i, "pad": "x" * (i % 17)} for i in range(n)]
    t0 = time.monotonic()
    cli_send(server, proxy.url, run, "proof", [compact(v) for v in sent])
    elapsed = time.monotonic() - t0
    # Zero losses, zero duplicates, in order.
    assert [v for _, v in server.records(run, "proof", timeout=30)] == sent
    faults = proxy.faults()
    assert faults["cut"] >= 300 and faults["502"] >= 100 and faults["drop"] >= 100, faults
    check_attempts(proxy, n)
    # One read per send whose outcome was unknown: a dropped send too (the
    # client sent all of it); none before the first send.
    assert proxy.stream_reads(run, "proof") == faults["cut"] + faults["502"] + faults["drop"]
    assert elapsed < 60, elapsed


def test_identical_values_are_counted_not_merged(server, run, pattern_proxy):
    # Three "yes" stored before the client starts, by another writer: they
    # are not ours, and neither is any of ours taken for another.
    for _ in range(3):
        server.send(run, "same", "yes")
    proxy = pattern_proxy(("cut", "pass", "429", "502", "drop", "cut", "cut"))
    values = ["yes" if i % 4 else {"n": i} for i in range(120)]
    cli_send(server, proxy.url, run, "same", [compact(v) for v in values])
    assert [v for _, v in server.records(run, "same")] == ["yes"] * 3 + values
    faults = proxy.faults()
    assert all(faults[f] >= 15 for f in FAULTS if f != "pass"), faults
    check_attempts(proxy, len(values))
    # A 429 is a refusal: retried without a look.
    assert proxy.stream_reads(run, "same") == faults["cut"] + faults["502"] + faults["drop"]


@pytest.mark.parametrize("other_writer", [False, True])
def test_many_sends_between_faults(server, run, pattern_proxy, other_writer):
    # Runs of 300 plain sends (past the 256 the client remembers of its own
    # sends between two reads of the stream) end in faults; with another
    # writer storing other values all along: each "x" of ours once.
    proxy = pattern_proxy(("pass",) * 300 + ("drop", "pass", "cut", "502", "drop", "pass"))
    stop = threading.Event()
    others: list = []

    def write_others() -> None:
        while not stop.wait(0.005):
            server.send(run, "mix", {"other": len(others)})
            others.append(len(others))

    t = threading.Thread(target=write_others)
    if other_writer:
        t.start()
    try:
        cli_send(server, proxy.url, run, "mix", ['"x"'] * 612)
    finally:
        stop.set()
        if other_writer:
            t.join()
    stored = [v for _, v in server.records(run, "mix")]
    assert stored.count("x") == 612
    assert [v for v in stored if v != "x"] == [{"other": k} for k in others]
    assert len(others) > 10 if other_writer else not others
    assert proxy.faults()["drop"] == 4, proxy.faults()
    check_attempts(proxy, 612)


def test_a_send_whose_every_answer_is_lost_is_found_not_repeated(server, run, pattern_proxy):
    proxy = pattern_proxy(("cut",))
    values = ["a", {"b": [1, 2.5]}, "a", 1e3, "1000"]
    cli_send(server, proxy.url, run, "lost", [compact(v) for v in values])
    assert [v for _, v in server.records(run, "lost")] == values
    sends = proxy.sends_list()
    assert [f for _, f in sends] == ["cut"] * len(values)  # one attempt each
    assert len({k for k, _ in sends}) == len(values)
    assert proxy.stream_reads(run, "lost") == len(values)


def test_spelling_of_a_value_does_not_hide_it(server, run, pattern_proxy):
    # The server stores JSON.stringify(JSON.parse(text)): found all the same.
    proxy = pattern_proxy(("cut",))
    lines = ['{ "b" : 1.0, "a" : [ 1e2, -0 ] }', '"\\u00e9t\\u00e9"', '12345678901234567890']
    cli_send(server, proxy.url, run, "spell", lines)
    # (A double, as JavaScript prints it.)
    assert [v for _, v in server.records(run, "spell")] == \
        [{"b": 1, "a": [100, 0]}, "\u00e9t\u00e9", 12345678901234567000]
    assert [f for _, f in proxy.sends_list()] == ["cut"] * 3


def test_a_credential_that_cannot_read_sends_blind_and_asks_once(server, run, pattern_proxy):
    token = server.mint([f"write:inputStreams:{run}"])
    proxy = pattern_proxy(("pass", "pass", "drop", "pass", "pass"))
    cli_send(server, proxy.url, run, "wo", [str(i) for i in range(20)], token=token)
    assert [v for _, v in server.records(run, "wo")] == list(range(20))
    assert proxy.faults() == {"pass": 20, "drop": 5}, proxy.faults()
    # The first dropped send asks to read the stream, is refused and is sent
    # again blindly; the later ones do not ask again.
    assert proxy.stream_reads(run, "wo") == 1


# The margin client/api.c allows between its idea of the server's clock and
# the server's (CLOCK_MARGIN_MS), and a little more.
CLOCK_MARGIN_S = 3.5


@pytest.mark.parametrize("offset", [0, 600, -600])
def test_a_first_send_is_placed_by_the_records_timestamps(server, make_server, offset):
    """Nothing is read before the first send to a stream.  When its answer
    is lost, the check counts only the records stamped since it began (less
    a margin for the clocks, the server's clock taken from Date, here also
    ten minutes ahead and behind ours): the same value stored earlier by
    another writer is not taken for it.  A first send that never reached
    the server is sent again; one stored whose answer was lost is not."""
    srv = make_server(args=("--clock-offset", str(offset))) if offset else server
    run, _ = srv.trigger_run()
    for stream in ("t-drop", "t-cut"):
        srv.send(run, stream, "yes")
    stamped = max(r["timestamp"] for s in ("t-drop", "t-cut")
                  for r in srv.raw_records(run, s)) / 1000
    deadline = time.monotonic() + 3 * CLOCK_MARGIN_S
    while time.time() + offset < stamped + CLOCK_MARGIN_S:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proxy = PatternProxy(srv.port, ("drop", "pass", "cut"))
    try:
        cli_send(srv, proxy.url, run, "t-drop", ['"yes"'])
        cli_send(srv, proxy.url, run, "t-cut", ['"yes"'])
        assert [f for _, f in proxy.sends_list()] == ["drop", "pass", "cut"]
        assert proxy.stream_reads(run, "t-drop") == 1
        assert proxy.stream_reads(run, "t-cut") == 1
    finally:
        proxy.close()
    assert [v for _, v in srv.records(run, "t-drop")] == ["yes", "yes"]
    assert [v for _, v in srv.records(run, "t-cut")] == ["yes", "yes"]


def test_writes_on_a_mount_through_lost_answers_are_stored_once(server, run, pattern_proxy,
                                                                 mount_factory):
    proxy = pattern_proxy(PROOF)
    m = mount_factory(api_url=proxy.url)
    n = 200
    r = sh('for i in $(seq 0 $((N - 1))); do echo "{\\"i\\":$i}" >> "$S" || exit 9; done',
           env={"S": m.input(run, "fs"), "N": str(n)}, timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")
    assert [v for _, v in server.records(run, "fs")] == [{"i": i} for i in range(n)]
    faults = proxy.faults()
    assert faults["cut"] >= 60 and faults["502"] >= 20 and faults["drop"] >= 20, faults
    check_attempts(proxy, n)


def test_writes_to_a_followed_stream_through_lost_answers_are_stored_once(
        server, run, pattern_proxy, mount_factory, tmp_path):
    """While a reader of the mount follows the stream, the daemon takes where
    the stream stands from that subscription instead of reading the tail
    before its first send (client/api.c, send_begin).  Checking sends whose
    answer was lost must stay exact: the very first send never reaches the
    server though all of it went out, its value is one someone else stored
    before (it must be sent again, not taken for stored), identical values
    are counted apart, and the reader sees every record once."""
    for _ in range(3):
        server.send(run, "fol", "yes")
    proxy = pattern_proxy(("drop", "pass", "cut", "502", "pass", "cut", "pass"))
    m = mount_factory(api_url=proxy.url)
    out = tmp_path / "reader"
    with open(out, "wb") as f:
        reader = subprocess.Popen(["cat", m.input(run, "fol")], stdout=f,
                                  stderr=subprocess.PIPE, start_new_session=True)
    try:
        m.wait_parked(1)
        n = 70
        values = ["yes" if i % 3 != 1 else {"n": i} for i in range(n)]
        lines = "".join(compact(v) + "\n" for v in values)
        r = sh('while IFS= read -r v; do printf "%s\\n" "$v" >> "$S" || exit 9; done',
               env={"S": m.input(run, "fol")}, input=lines.encode(), timeout=60)
        assert (r.returncode, r.stderr) == (0, b"")
        assert [v for _, v in server.records(run, "fol")] == ["yes"] * 3 + values
        faults = proxy.faults()
        assert proxy.sends_list()[0][1] == "drop"
        assert faults["cut"] >= 15 and faults["502"] >= 5 and faults["drop"] >= 5, faults
        check_attempts(proxy, n)
        # The reader's subscription, then one read per send whose outcome
        # was unknown: no read of the tail before the first send.
        assert proxy.stream_reads(run, "fol") == 1 + faults["cut"] + faults["502"] + faults["drop"]
        server.cancel(run)
        _, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
        assert out.read_text().splitlines() == [compact(v) for v in ["yes"] * 3 + values]
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


# ---- output streams: S2 appends -----------------------------------------------------

class S2PatternProxy(PatternProxy):
    """A PatternProxy whose faults go to S2 appends, with two more that
    play another writer of the stream (the task) at the worst moments:

        other-cut  another writer's record is stored just before the append
                   reaches the server (which refuses it: 412), and the
                   answer is swallowed: the tail moved by one record, as if
                   a one-record batch of ours had been stored
        cut-other  the append is stored, its answer swallowed, and another
                   writer's record stored after it before the reset"""

    prefix = "/s2/v1/streams/"
    known = FAULTS + ("other-cut", "cut-other")

    def __init__(self, upstream_port: int, pattern: tuple, other: Callable[[], None]):
        self.other = other
        super().__init__(upstream_port, pattern)

    def _apply(self, conn, fault: str) -> None:
        if fault == "other-cut":
            self.other()                # before this request goes up
        conn.other_after = fault == "cut-other"
        super()._apply(conn, "cut" if fault in ("other-cut", "cut-other") else fault)

    def _cut(self, conn) -> None:
        if getattr(conn, "other_after", False) and conn in self._conns:
            conn.other_after = False
            self.other()                # after ours, before the client knows
        super()._cut(conn)


class OtherWriter:
    """Another writer of a run's output stream (as the task's
    streams.writer), straight to the server: {"other": k}, k = 0, 1, ..."""

    def __init__(self, server: DevServer, run: str, stream: str):
        self.server, self.s2, self.count = server, server.open_output(run, stream), 0

    def __call__(self) -> None:
        body = json.dumps({"data": {"other": self.count}, "id": secrets.token_urlsafe(5)[:7]})
        status, ack = self.server.s2_append(self.s2, [body])
        assert status == 200, ack
        self.count += 1


def write_groups(m, run: str, stream: str, groups: list) -> None:
    """One write(2) per group of values: printf(1) of its lines."""
    lines = "".join("".join(compact(v) + "\\n" for v in g) + "\n" for g in groups)
    r = sh('while IFS= read -r g; do env printf "%b" "$g" >> "$O" || exit 9; done',
           env={"O": m.path("runs", run, "output", stream)}, input=lines.encode(),
           timeout=120)
    assert (r.returncode, r.stderr) == (0, b"")


def check_output(server: DevServer, run: str, stream: str, groups: list,
                 other: OtherWriter) -> None:
    """Ours each once, in order; the other writer's records each once, in
    order."""
    stored = [v for _, v in server.records(run, stream, output=True)]
    assert [v for v in stored if "i" in v] == [v for g in groups for v in g]
    assert [v for v in stored if "other" in v] == [{"other": k} for k in range(other.count)]


def test_s2_stand_in_answers_a_mismatch_as_s2_does(server, run):
    # Real S2 (api/src/v1/stream): 412 {"seq_num_mismatch": <tail>}, and
    # nothing stored; the ack says where the batch went.
    s2 = server.open_output(run, "match")
    assert server.s2_append(s2, ['{"data":1,"id":"a"}'], match_seq_num=1) == \
        (412, {"seq_num_mismatch": 0})
    status, ack = server.s2_append(s2, ['{"data":1,"id":"a"}', '{"data":2,"id":"b"}'],
                                   match_seq_num=0)
    assert (status, ack["start"]["seq_num"], ack["end"]["seq_num"]) == (200, 0, 2)
    assert server.s2_append(s2, ['{"data":3,"id":"c"}'], match_seq_num=0) == \
        (412, {"seq_num_mismatch": 2})
    assert [v for _, v in server.records(run, "match", output=True)] == [1, 2]


@pytest.mark.parametrize("pattern,reads", [
    # The tail moved by exactly our batch's length though nothing of ours
    # was stored: "tail == expected + n" alone would lose every value.
    (("other-cut", "pass", "pass"), 1),
    # Ours was stored and another writer's after it: the tail is past
    # expected + n, and ours must not go again.
    (("cut-other", "pass"), 1),
])
def test_output_append_after_a_lost_answer_reads_the_record_it_expected(
        server, run, mount_factory, pattern, reads):
    other = OtherWriter(server, run, "one")
    proxy = S2PatternProxy(server.port, pattern, other)
    try:
        m = mount_factory(api_url=proxy.url)
        groups = [[{"i": i}] for i in range(12)]
        write_groups(m, run, "one", groups)
        check_output(server, run, "one", groups, other)
        assert other.count == 12
        # One look at the record each lost answer was expected at (and the
        # catch-up of the first lookup, which stats the file).
        stream_reads = proxy.requests_to("GET", DevServer.stream_path(run, "one", output=True))
        assert reads * 12 <= stream_reads <= reads * 12 + 1
    finally:
        proxy.close()


# Of every twelve appends, five lose their answer (two with another writer
# storing around them), one gets a 502 after it was stored and one never
# reaches the server.
OUT_PROOF = ("pass", "cut", "pass", "other-cut", "502", "pass", "cut-other", "drop",
             "pass", "cut", "pass", "cut")


def test_output_appends_through_lost_answers_are_stored_once(server, run, mount_factory):
    other = OtherWriter(server, run, "out")
    other()         # not empty: the first append learns the tail from a 412
    proxy = S2PatternProxy(server.port, OUT_PROOF, other)
    try:
        m = mount_factory(api_url=proxy.url)
        # 60 writes of one to three values (a write's values go in one or
        # two batches).
        groups, i = [], 0
        for g in range(60):
            groups.append([{"i": i + k} for k in range(g % 3 + 1)])
            i += g % 3 + 1
        write_groups(m, run, "out", groups)
        check_output(server, run, "out", groups, other)
        faults = proxy.faults()
        assert faults["cut"] >= 15 and faults["other-cut"] >= 5 and \
            faults["cut-other"] >= 5 and faults["502"] >= 5 and faults["drop"] >= 5, faults
    finally:
        proxy.close()
