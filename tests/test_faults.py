"""Faults: the server killed and restarted under a stream, stalled
connections, sends while the server is down, readers killed and
interrupted by the hundred, the daemon killed or unmounted under blocked
readers.  Fast versions for CI; scripts/soak runs the long ones."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from devserver_ctl import DevServer, wait_for
from faultproxy import FaultProxy
from mount_ctl import (SLACK, Lines, Mount, blocked_cats, kill_group, lazy_unmount, mount,  # noqa: F401
                       mount_factory, mounted, sh, spawn_sh)


@pytest.fixture
def proxy_factory():
    """proxy_factory(upstream_port) -> a FaultProxy closed after the test."""
    proxies: list = []

    def make(port: int) -> FaultProxy:
        proxies.append(FaultProxy(port))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


class KillableMount(Mount):
    """A Mount whose daemon the test itself kills: its status is expected."""

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait_exit()
        self._expect_exit = True


def send_retrying(srv: DevServer, run: str, stream: str, value, timeout: float = 30.0) -> None:
    """Send through the API, retrying while the server is down (a send
    whose answer was lost may be stored twice; tests compare with what the
    server holds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            srv.send(run, stream, value)
            return
        except (OSError, http.client.HTTPException):  # killed mid-answer too
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def start_cats(path: str, n: int, out_dir: Path) -> list:
    """n `cat path` readers, each writing to out_dir/cat<i>."""
    procs = []
    for i in range(n):
        with open(out_dir / f"cat{i}", "wb") as out:
            procs.append(subprocess.Popen(["cat", path], stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.PIPE, start_new_session=True))
    return procs


def line_count(path: Path) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# ------------------------------------------------ the server killed under a stream

def stream_with_restarts(srv: DevServer, run: str, stream: str, records: int,
                         restart_every: float, duration: float, at_least: int = 4) -> int:
    """Send `records` values {"i": n} paced over `duration` seconds while
    another thread kill -9s and restarts the server every `restart_every`
    seconds. The sends also wait for the restarts (at_least spread over the
    stream), so a slow restart on a loaded machine does not leave the stream
    spanning fewer of them. Returns the number of restarts."""
    stop = threading.Event()
    restarts = 0
    failure: list = []

    def killer() -> None:
        nonlocal restarts
        try:
            while not stop.wait(restart_every):
                srv.kill9()
                srv.start()
                restarts += 1
        except BaseException as e:      # reported by the main thread
            failure.append(e)

    t = threading.Thread(target=killer, name="server-killer")
    t.start()
    try:
        t0 = time.monotonic()
        for i in range(records):
            send_retrying(srv, run, stream, {"i": i})
            # Paced, so that the stream spans several restarts.
            ahead = t0 + duration * (i + 1) / records - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            deadline = time.monotonic() + 30 * SLACK
            while restarts < at_least * (i + 1) // records and not failure \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    if failure:
        raise failure[0]
    if srv.proc is None:
        srv.start()
    return restarts


def check_readers_got_the_stream(srv: DevServer, run: str, stream: str, records: int,
                                 cats: list, outs: list, timeout: float) -> None:
    stored = srv.records(run, stream, timeout=30)
    # Every value is stored (retried sends whose answer was lost may be
    # stored twice: that is the server's doing, and readers must see it).
    assert sorted({v["i"] for _, v in stored}) == list(range(records))
    want = [compact(v) for _, v in stored]
    # input/S is the consumers' view: each record goes to one reader.
    try:
        wait_for(lambda: sum(line_count(o) for o in outs) >= len(want), timeout)
    except AssertionError:
        raise AssertionError(f"readers did not get {len(want)} records within {timeout}s: "
                             f"they have {[line_count(o) for o in outs]}") from None
    srv.cancel(run)
    for p in cats:
        _, err = p.communicate(timeout=10 * SLACK)
        assert p.returncode == 0, err        # end of file: the run finished
    shares = [o.read_text().splitlines() for o in outs]
    # Together every record once; each reader's share in stream order.
    assert sorted(line for share in shares for line in share) == sorted(want)
    for o, share in zip(outs, shares):
        it = iter(want)
        assert all(line in it for line in share), f"{o.name}: out of order"


def first_difference(got: list, want: list) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"line {i}: {a!r}, want {b!r}"
    return f"{len(got)} lines, want {len(want)}"


def test_readers_get_every_record_once_while_the_server_is_killed(
        make_server, mount_factory, tmp_path):
    srv = make_server(args=("--no-fsync", "-q"))
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key)
    path = m.input(run, "s")
    cats = start_cats(path, 4, tmp_path)
    outs = [tmp_path / f"cat{i}" for i in range(4)]
    try:
        m.wait_parked(4)
        restarts = stream_with_restarts(srv, run, "s", 1000, restart_every=1.0, duration=6.0)
        assert restarts >= 4
        check_readers_got_the_stream(srv, run, "s", 1000, cats, outs, 20 * SLACK)
    finally:
        for p in cats:
            kill_group(p)


# ------------------------------------------------ stalled connections

def stream_gets(proxy: FaultProxy, run: str, stream: str) -> list:
    path = DevServer.stream_path(run, stream)
    return [h for m, p, h in proxy.requests_list() if m == "GET" and p == path]


@pytest.fixture
def proxied(server, mount_factory, proxy_factory, run):
    """(mount through a proxy, proxy, a reader's Lines, path) with record 0
    already read by a `cat` of input/s."""
    proxy = proxy_factory(server.port)
    m = mount_factory(api_url=proxy.url)
    server.send(run, "s", 0)
    reader = spawn_sh('exec cat "$S"', env={"S": m.input(run, "s")})
    try:
        lines = Lines(reader.stdout.fileno())
        assert lines.next()[0] == "0"
        m.wait_parked(1)
        yield m, proxy, lines
    finally:
        kill_group(reader)


def test_stalled_subscription_is_replaced_and_resumes(proxied, answering, server, run):
    m, proxy, lines = proxied
    assert len(stream_gets(proxy, run, "s")) == 1
    proxy.stall(new=False)          # this connection goes silent, new ones work
    t0 = time.monotonic()
    for i in (1, 2, 3):
        server.send(run, "s", i)
    # Meanwhile, on another mount: 25 s of silence is no dead connection.
    silence_of_25_seconds_is_not_a_dead_connection(*answering, server)
    got = [lines.next(timeout=60 * SLACK)[0] for _ in range(3)]
    elapsed = time.monotonic() - t0
    assert got == ["1", "2", "3"]
    # Found out by the silence: 40 s without a byte (the real server may
    # be quiet 15 s between pings; 30 s of silence is no dead connection).
    assert 35 < elapsed < 50 * SLACK, elapsed
    gets = stream_gets(proxy, run, "s")
    assert len(gets) == 2, gets
    assert gets[1].get("last-event-id") == "0", gets[1]
    server.send(run, "s", 4)        # nothing repeated before it
    assert lines.next()[0] == "4"


def test_delivery_resumes_when_a_stall_is_lifted(proxied, server, run):
    m, proxy, lines = proxied
    proxy.stall()
    for i in (1, 2, 3):
        server.send(run, "s", i)
    assert lines.quiet(1.0), "a record got through a stalled connection"
    proxy.passthrough()
    assert [lines.next()[0] for _ in range(3)] == ["1", "2", "3"]
    server.send(run, "s", 4)
    assert lines.next()[0] == "4"


def test_connections_cut_under_a_reader_lose_and_repeat_nothing(proxied, server, run):
    m, proxy, lines = proxied
    for cut in range(1, 7):
        for i in range(5 * cut - 4, 5 * cut + 1):
            server.send(run, "s", i)
        assert proxy.cut_all() >= 1     # with records on the way, maybe
        proxy.wait(lambda: len(stream_gets(proxy, run, "s")) == cut + 1, 10 * SLACK,
                   "the subscription to reconnect")
    assert [lines.next()[0] for _ in range(30)] == [str(i) for i in range(1, 31)]
    server.send(run, "s", 31)
    assert lines.next()[0] == "31"
    # Each reconnect resumed after the last record the daemon had.
    assert all("last-event-id" in h for h in stream_gets(proxy, run, "s")[1:])


# ------------------------------------------------ sends while the server is down

def write_line(path: str, line: bytes) -> tuple:
    """-> (errno or 0, seconds) of one write(2) of `line` on a fresh open."""
    fd = os.open(path, os.O_WRONLY)
    t0 = time.monotonic()
    try:
        os.write(fd, line)
        return 0, time.monotonic() - t0
    except OSError as e:
        return e.errno, time.monotonic() - t0
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


WRITE_LINE = textwrap.dedent("""
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY)
    t0 = time.monotonic()
    try:
        os.write(fd, sys.argv[2].encode())
        err = 0
    except OSError as e:
        err = e.errno
    print(err, time.monotonic() - t0, flush=True)
""")


def write_line_in_child(path: str, line: bytes) -> subprocess.Popen:
    """write_line in another process, whose stdout says "errno seconds".
    (This process must not hold a file of the mount open while it forks
    the server: the child's close-on-exec would flush that file, and a
    FUSE flush waits for the write in progress on it.)"""
    return subprocess.Popen(["/usr/bin/python3", "-c", WRITE_LINE, path, line.decode()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)


def in_fuse_request(pid: int) -> bool:
    """Is the process waiting for the daemon's answer to a FUSE request?"""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read() == "request_wait_answer"
    except FileNotFoundError:
        return False


def test_sends_while_the_server_is_down_retry_until_send_timeout(make_server, mount_factory):
    srv = make_server(args=("-q",))
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key, options=["send_timeout=3s"])
    path = m.input(run, "chat")
    assert write_line(path, b"1\n")[0] == 0

    # Down for less than send_timeout: the write waits and succeeds.
    srv.kill9()
    writer = write_line_in_child(path, b"2\n")
    wait_for(lambda: in_fuse_request(writer.pid), 10 * SLACK, what="the write to be under way")
    srv.start()
    out, _ = writer.communicate(timeout=10 * SLACK)
    assert out.split()[0] == b"0", out

    # Down for longer: retried until send_timeout, then EIO.
    srv.kill9()
    err, elapsed = write_line(path, b"3\n")
    assert err == errno.EIO, os.strerror(err) if err else "the write succeeded"
    assert 3 - 0.5 < elapsed < 3 + 2 * SLACK, elapsed
    # Said in words: what happened, not "HTTP 0".
    assert m.log_matching(r"send failed: .*connection refused"), m.stderr()
    assert "HTTP 0" not in m.stderr()
    srv.start()
    assert write_line(path, b"4\n")[0] == 0
    # What succeeded was stored, once; what failed was not (sends on one
    # stream are ordered, so a late "3" would come before "4").
    assert [v for _, v in srv.records(run, "chat")] == [1, 2, 4]


def test_a_send_on_a_stalled_connection_fails_at_send_timeout(server, mount_factory,
                                                             proxy_factory, run):
    proxy = proxy_factory(server.port)
    m = mount_factory(api_url=proxy.url, options=["send_timeout=2s"])
    path = m.input(run, "chat")
    assert write_line(path, b"1\n")[0] == 0
    proxy.stall()
    err, elapsed = write_line(path, b"2\n")
    assert err in (errno.EIO, errno.ETIMEDOUT), os.strerror(err) if err else "succeeded"
    assert 2 - 0.5 < elapsed < 2 + 2 * SLACK, elapsed
    proxy.cut_all()                 # what the stall held never arrives
    proxy.passthrough()
    assert write_line(path, b"3\n")[0] == 0
    assert [v for _, v in server.records(run, "chat")] == [1, 3]


def test_a_send_whose_outcome_is_unknown_is_stored_once(server, mount_factory,
                                                        proxy_factory, run):
    proxy = proxy_factory(server.port)
    m = mount_factory(api_url=proxy.url, options=["send_timeout=10s"])
    path = m.input(run, "lost")
    assert write_line(path, b"1\n")[0] == 0
    send = DevServer.stream_path(run, "lost")

    def posts() -> int:
        return sum(1 for meth, p, _ in proxy.requests_list() if meth == "POST" and p == send)

    # The server stores it, the answer is lost: found in the stream, not
    # sent again (the API ignores idempotency keys, so a repeat would be a
    # second record).
    proxy.cut_after_request("POST")
    err, _ = write_line(path, b"2\n")
    proxy.passthrough()
    assert err == 0, os.strerror(err)
    assert proxy.cuts == 1 and posts() == 2
    # The request is lost on the way: not in the stream, so sent again.
    proxy.stall()
    result: list = []
    writer = threading.Thread(target=lambda: result.append(write_line(path, b"3\n")))
    writer.start()
    try:
        proxy.wait(lambda: proxy.held() > 0, 10 * SLACK, "the send to reach the proxy")
        proxy.cut_all()             # what the stall held never arrives
    finally:
        proxy.passthrough()
        writer.join(15 * SLACK)
    assert result and result[0][0] == 0, result
    assert [v for _, v in server.records(run, "lost")] == [1, 2, 3]
    assert posts() == 3


# ------------------------------------------------ readers killed and interrupted

STORM_READER = textwrap.dedent("""
    import os, signal, sys, threading
    signal.signal(signal.SIGUSR1, lambda *a: None)
    path, n = sys.argv[1], int(sys.argv[2])
    lock = threading.Lock()

    def reader(k):
        fd = os.open(path, os.O_RDONLY)
        buf = b""
        while True:
            chunk = os.read(fd, 65536)   # EINTR is retried (PEP 475)
            if not chunk:
                return
            buf += chunk
            while b"\\n" in buf:
                line, _, buf = buf.partition(b"\\n")
                with lock:
                    sys.stdout.write(f"{k} {line.decode()}\\n")
                    sys.stdout.flush()

    for k in range(n):
        threading.Thread(target=reader, args=(k,), daemon=True).start()
    threading.Event().wait()
""")


def test_300_blocked_readers_killed_and_interrupted(mount, server, run, tmp_path):
    path = mount.input(run, "s")
    cats = start_cats(path, 250, tmp_path)
    storm = [subprocess.Popen(["/usr/bin/python3", "-c", STORM_READER, path, "10"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
             for _ in range(5)]
    try:
        mount.wait_parked(300, timeout=30 * SLACK)
        # The storm: 2 s of SIGUSR1 to 50 reading threads (each read is
        # interrupted, answered EINTR and parked again), while half of the
        # cats die of SIGINT and the other half of SIGKILL.
        end = time.monotonic() + 2.0
        doomed = iter(cats)
        while time.monotonic() < end:
            for p in storm:
                os.kill(p.pid, signal.SIGUSR1)
            for p in (next(doomed, None) for _ in range(4)):
                if p is not None:
                    os.kill(p.pid, signal.SIGINT if p.pid % 2 else signal.SIGKILL)
            assert mount.stats()["parked_reads"] <= 300
            time.sleep(0.01)
        for p in cats:
            kill_group(p)
        # The storm readers are all parked again, each exactly once: 50
        # records, one to each of them (input/S is the consumers' view).
        mount.wait_parked(50, timeout=10 * SLACK)
        for i in range(50):
            server.send(run, "s", i)
        got = []
        for p in storm:
            lines = Lines(p.stdout.fileno())
            got += [lines.next()[0] for _ in range(10)]
        assert sorted(int(line.split(" ")[1]) for line in got) == list(range(50))
        for p in storm:
            os.kill(p.pid, signal.SIGKILL)
        stats = mount.wait_stats(parked_reads=0, open_handles=0)
        assert stats["parked_reads"] == 0
        assert sh('ls "$M"/runs >/dev/null', env={"M": mount.mnt}).returncode == 0
    finally:
        for p in cats + storm:
            kill_group(p)


# ------------------------------------------------ the daemon goes away under readers

def blocked_readers(m: Mount, run: str, n: int) -> list:
    return blocked_cats(m, [m.input(run, "s")] * n)


@pytest.mark.parametrize("how", ["sigkill", "sigterm", "lazy-unmount"])
def test_readers_get_errors_when_the_daemon_goes_away_then_remount(how, server, run):
    server.send(run, "s", 1)
    m = KillableMount(server.url, key=server.secret_key).start()
    m2 = None
    procs: list = []
    try:
        procs = blocked_readers(m, run, 3)      # one of them has record 1
        t0 = time.monotonic()
        if how == "sigkill":
            m.kill9()
        elif how == "sigterm":
            m.signal(signal.SIGTERM)
        else:
            lazy_unmount(m.mnt)
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=5 * SLACK)
            outs.append(out)
            # An error, not end of file (the run goes on) and not a hang.
            assert p.returncode == 1 and b"cat:" in err, (p.returncode, err)
        assert sorted(outs) == [b"", b"", b"1\n"], outs
        assert time.monotonic() - t0 < 3 * SLACK
        if how == "sigkill":
            assert mounted(m.mnt)   # a dead mount stays until unmounted
            r = sh('stat "$M"', env={"M": m.mnt})
            assert b"Transport endpoint is not connected" in r.stderr, r.stderr
            assert subprocess.run(["fusermount3", "-u", m.mnt], timeout=10).returncode == 0
        else:
            assert m.wait_exit() == 0
        assert not mounted(m.mnt)
        # Mounted again on the same directory, the stream is all there.
        m2 = Mount(server.url, key=server.secret_key, mountpoint=m.mnt).start()
        server.send(run, "s", 2)
        r = sh('head -n2 "$S"', env={"S": m2.input(run, "s")})
        assert r.stdout == b"1\n2\n", r
    finally:
        for p in procs:
            kill_group(p)
        problems = (m2.stop() if m2 else []) + m.stop()
        assert not problems, problems


# ------------------------------------------------ faults the real server makes
#
# Played by the proxy (FaultProxy(..., answers=True)), on real mounts: in
# each, every record reaches the reader once and in order, and no reader
# sees an end of file while its run lives.

@pytest.fixture
def answering(server, mount_factory):
    """(mount through an answering proxy, the proxy)."""
    proxy = FaultProxy(server.port, answers=True)
    try:
        yield mount_factory(api_url=proxy.url), proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def cat_on_a_new_run(m: Mount, server: DevServer):
    """-> (run, `cat input/s` parked on it, its Lines); killed at the end."""
    run, _ = server.trigger_run()
    reader = spawn_sh('exec cat "$S"', env={"S": m.input(run, "s")})
    try:
        lines = Lines(reader.stdout.fileno())
        m.wait_parked(1)
        yield run, reader, lines
    finally:
        kill_group(reader)


def run_path(run: str) -> str:
    return f"/api/v3/runs/{run}"


NOT_FOUND = dict(status=404, body={"error": "Not found"},
                 headers={"x-should-retry": "true"})


def test_a_run_just_triggered_is_found_through_a_lagging_replica(answering, server):
    m, proxy = answering
    run, _ = server.trigger_run()
    lag = proxy.answer("GET", run_path(run), seconds=3.0, **NOT_FOUND)
    reader = spawn_sh('head -n1 "$S"', env={"S": m.input(run, "s")})
    try:
        m.wait_parked(1, timeout=15 * SLACK)
        server.send(run, "s", {"hello": 1})
        out, err = reader.communicate(timeout=10 * SLACK)
        assert (reader.returncode, out, err) == (0, b'{"hello":1}\n', b"")
    finally:
        kill_group(reader)
    # The lookup was repeated through the lag, not answered ENOENT.
    assert len(lag.hits) >= 2, lag.hits


def test_a_lagging_replica_under_a_waiting_reader_is_no_end_of_file(answering, server):
    m, proxy = answering
    with cat_on_a_new_run(m, server) as (run, reader, lines):
        # Longer than the client retries one lookup: several status polls
        # of the waited run meet it.
        lag = proxy.answer("GET", run_path(run), seconds=9.0, **NOT_FOUND)
        proxy.wait(lambda: not lag.live(), 20 * SLACK, "the lag to end")
        assert len(lag.hits) >= 3, lag.hits
        assert reader.poll() is None, "the reader saw an end of file"
        for i in range(3):
            server.send(run, "s", i)
        assert [lines.next()[0] for _ in range(3)] == ["0", "1", "2"]
        server.cancel(run)
        assert reader.wait(timeout=15 * SLACK) == 0     # now the end


def test_a_429_waits_for_the_reset(answering, server):
    m, proxy = answering
    run, _ = server.trigger_run()
    reset_at = time.monotonic() + 2.0
    reset_ms = int((time.time() + 2.0) * 1000)
    limited = proxy.answer(
        "GET", run_path(run), 429, times=2,
        body={"title": "Rate Limit Exceeded", "status": 429,
              "error": "Rate limit exceeded 0/60 requests remaining."},
        headers={"Content-Type": "application/problem+json; charset=utf-8",
                 "x-ratelimit-limit": "60", "x-ratelimit-remaining": "0",
                 "x-ratelimit-reset": str(reset_ms)})
    reader = spawn_sh('head -n1 "$S"', env={"S": m.input(run, "s")})
    try:
        m.wait_parked(1, timeout=15 * SLACK)
        server.send(run, "s", "after the limit")
        out, _ = reader.communicate(timeout=10 * SLACK)
        assert (reader.returncode, out) == (0, b'"after the limit"\n')
    finally:
        kill_group(reader)
    # One refusal, then nothing until the reset: the second try came after it.
    assert len(limited.hits) == 2, limited.hits
    assert limited.hits[1] >= reset_at - 0.05, (limited.hits, reset_at)


def test_event_error_mid_stream_loses_and_repeats_nothing(answering, server):
    m, proxy = answering
    with cat_on_a_new_run(m, server) as (run, reader, lines):
        got = []
        for round_ in range(3):
            for i in range(5 * round_, 5 * round_ + 5):
                server.send(run, "s", i)
            got += [lines.next()[0] for _ in range(5)]
            proxy.sse_error()
            proxy.wait(lambda: proxy.errors_sent == round_ + 1, 10 * SLACK,
                       "the error to go out")
        for i in range(15, 20):
            server.send(run, "s", i)
        got += [lines.next(timeout=15 * SLACK)[0] for _ in range(5)]
        assert got == [str(i) for i in range(20)]
        assert lines.quiet(0.5) and reader.poll() is None
    gets = stream_gets(proxy, run, "s")
    assert len(gets) == 4, gets     # one reconnect per error
    assert [h.get("last-event-id") for h in gets[1:]] == ["4", "9", "14"]


def silence_of_25_seconds_is_not_a_dead_connection(m: Mount, proxy: FaultProxy,
                                                   server: DevServer) -> None:
    """Waited out inside the stall test's 40 s (the suite's time)."""
    with cat_on_a_new_run(m, server) as (run, reader, lines):
        proxy.stall(new=False)      # the stream goes silent, pings too
        for i in range(3):
            server.send(run, "s", i)
        assert lines.quiet(25.0), "a record came through the silence"
        assert reader.poll() is None, "the reader saw an end of file"
        proxy.passthrough()
        assert [lines.next()[0] for _ in range(3)] == ["0", "1", "2"]
    assert len(stream_gets(proxy, run, "s")) == 1, "the silent connection was replaced"


def test_a_token_polls_within_its_rate_limit_however_many_runs(server, mount_factory):
    proxy = FaultProxy(server.port)
    runs = [server.trigger_run()[0] for _ in range(8)]
    token = server.mint(["read:runs", "write:inputStreams"], exp_in=600)
    m = mount_factory(api_url=proxy.url, token=token)
    readers = [spawn_sh('exec cat "$S"', env={"S": m.input(r, "s")}) for r in runs]
    try:
        m.wait_parked(len(runs), timeout=20 * SLACK)
        before = proxy.requests_to("GET", "/api/")
        t0 = time.monotonic()
        # Half the limit's window: at most 30 of the token's 60 a minute
        # (polling each run every 2 s would make 120).
        while time.monotonic() - t0 < 30.0:
            assert all(r.poll() is None for r in readers), "a reader ended"
            time.sleep(0.5)
        made = proxy.requests_to("GET", "/api/") - before
        assert 5 <= made <= 30, made       # polled, and within the budget
        for r in runs:
            server.send(r, "s", "ok")
        for r in readers:
            assert Lines(r.stdout.fileno()).next()[0] == '"ok"'
    finally:
        for r in readers:
            kill_group(r)
        proxy.close()
