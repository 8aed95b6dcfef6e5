"""Read = receive, through a real mount: reads at the end block until the
next record (once, wait, on), end with EOF when the run finishes, time out,
honour O_NONBLOCK and poll/select; log/ never blocks; big reads that the
kernel splits do not park."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import threading
import time

from mount_ctl import (SLACK, Lines, kill_group, mount, mount_factory,  # noqa: F401
                       os_error, sh, spawn_sh)

MIB = 1024 * 1024
PROMPT = 0.05 * SLACK          # "within 50 ms of the send"


def blocked_reader(mount, script: str, **env: str):
    """Start `bash -c script` and wait until its read is parked in the daemon."""
    proc = spawn_sh(script, env=env)
    try:
        mount.wait_parked(1)
    except BaseException:
        kill_group(proc)
        raise
    assert proc.poll() is None
    return proc


def finish(proc, timeout: float = 5.0 * SLACK) -> tuple:
    """Wait for the process to end by itself: (rc, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------- once

def test_head_blocks_until_a_value_is_sent(mount, server, run):
    proc = blocked_reader(mount, 'head -n1 "$S"', S=mount.input(run, "approval"))
    try:
        deadline = time.monotonic() + 0.5
        lines = Lines(proc.stdout.fileno())
        assert lines.quiet(deadline - time.monotonic())    # still blocked at 0.5 s
        server.send(run, "approval", {"approved": True})
        assert finish(proc) == (0, '{"approved":true}\n', "")
    finally:
        kill_group(proc)
    assert mount.stats()["parked_reads"] == 0


def test_read_builtin_from_the_stream(mount, server, run):
    proc = blocked_reader(mount, 'read -r v < "$S"; echo "rc=$? v=$v"',
                          S=mount.input(run, "once"))
    try:
        server.send(run, "once", ["a", 1])
        assert finish(proc) == (0, 'rc=0 v=["a",1]\n', "")
    finally:
        kill_group(proc)


def test_consecutive_reads_on_one_descriptor(mount, server, run):
    server.send(run, "q", 1)
    server.send(run, "q", {"two": 2})
    proc = spawn_sh('exec 3< "$S"; read -r a <&3; echo "a=$a"; read -r b <&3; echo "b=$b"; '
                    'read -r c <&3; echo "c=$c"', env={"S": mount.input(run, "q")})
    try:
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == "a=1"
        assert lines.next()[0] == 'b={"two":2}'
        mount.wait_parked(1)                  # the third read waits
        server.send(run, "q", "three")
        assert lines.next()[0] == 'c="three"'
        assert finish(proc)[0] == 0
    finally:
        kill_group(proc)


# ---------------------------------------------------------------- wait

def test_timeout_head_exits_124_promptly(mount, server, run):
    t0 = time.monotonic()
    r = sh('timeout 2 head -n1 "$S"', env={"S": mount.input(run, "w")})
    elapsed = time.monotonic() - t0
    assert (r.returncode, r.stdout) == (124, b"")
    assert 2.0 <= elapsed < 2.0 + 0.5 * SLACK, elapsed
    # The interrupted read was answered (EINTR) before head could die.
    assert mount.stats()["parked_reads"] == 0


def test_mount_timeout_gives_etimedout(mount_factory, server, run):
    m = mount_factory(options=["timeout=1s"])
    fd = os.open(m.input(run, "w"), os.O_RDONLY)
    try:
        t0 = time.monotonic()
        assert os_error(lambda: os.read(fd, 100)) == errno.ETIMEDOUT
        assert 1.0 <= time.monotonic() - t0 < 1.0 + 0.5 * SLACK
    finally:
        os.close(fd)
    r = sh('head -n1 "$S"', env={"S": m.input(run, "w")})
    assert r.returncode == 1
    assert b"Connection timed out" in r.stderr, r.stderr
    assert m.stats()["parked_reads"] == 0
    # After a timeout the stream still delivers.
    server.send(run, "w", 7)
    assert sh('head -n1 "$S"', env={"S": m.input(run, "w")}).stdout == b"7\n"

def test_a_blocked_read_registers_no_waitpoint(mount_factory, server, run):
    # A registration from outside would take the task's own .wait() slot.
    gone = mount_factory(options=["waitpoints"], start=False)
    assert gone.run_to_exit() != 0
    assert "unknown option" in gone.stderr()
    mark = len(server.request_log_entries())     # (the server is the session's)
    m = mount_factory()
    proc = blocked_reader(m, 'head -n1 "$S"', S=m.input(run, "approval"))
    try:
        server.send(run, "approval", {"ok": 1})
        assert finish(proc) == (0, '{"ok":1}\n', "")
    finally:
        kill_group(proc)
    paths = [e["path"] for e in server.request_log_entries()[mark:]]
    assert not [p for p in paths if "wait" in p], paths


# ---------------------------------------------------------------- on

def stream_records(mount, server, run, proc, stream: str, expect) -> None:
    """Send three records; each must come out of proc within PROMPT of the
    send's completion. Then cancel the run: proc ends by itself, status 0."""
    lines = Lines(proc.stdout.fileno())
    for i in range(3):
        mount.wait_parked(1)
        value = {"i": i, "text": f"message {i}"}
        server.send(run, stream, value)
        sent = time.monotonic()
        line, arrived = lines.next()
        assert line == expect(value)
        assert arrived - sent < PROMPT, f"record {i} took {arrived - sent:.3f}s"
    server.cancel(run)
    rc, rest, err = finish(proc)
    assert (rc, rest, err) == (0, "", "")


def test_cat_follows_the_stream_and_ends_with_the_run(mount, server, run):
    proc = spawn_sh('exec cat "$S"', env={"S": mount.input(run, "chat")})
    try:
        stream_records(mount, server, run, proc, "chat",
                       lambda v: json.dumps(v, separators=(",", ":")))
    finally:
        kill_group(proc)


def test_while_read_loop_follows_the_stream(mount, server, run):
    proc = spawn_sh('while read -r v; do echo "got $v"; done < "$S"; echo end',
                    env={"S": mount.input(run, "chat")})
    try:
        lines = Lines(proc.stdout.fileno())
        for i in range(3):
            mount.wait_parked(1)
            server.send(run, "chat", i)
            sent = time.monotonic()
            line, arrived = lines.next()
            assert line == f"got {i}"
            assert arrived - sent < PROMPT, f"record {i} took {arrived - sent:.3f}s"
        server.cancel(run)
        assert lines.next()[0] == "end"
        assert finish(proc)[0] == 0
    finally:
        kill_group(proc)


def tail_follows(mount, server, run, argv: str, bound: float) -> None:
    proc = spawn_sh(f'exec tail {argv} "$L"', env={"L": mount.log(run, "chat")})
    try:
        lines = Lines(proc.stdout.fileno())
        for i in range(2):
            server.send(run, "chat", {"n": i})
            sent = time.monotonic()
            line, arrived = lines.next(timeout=bound + 2)
            assert line == f'{{"n":{i}}}'
            assert arrived - sent < bound, f"record {i} took {arrived - sent:.3f}s"
    finally:
        kill_group(proc)


def test_tail_f_log_on_an_empty_stream(mount, server, run):
    tail_follows(mount, server, run, "-f", 1.0 + 0.3 * SLACK)


def test_tail_f_log_fast_poll(mount, server, run):
    tail_follows(mount, server, run, "-s 0.1 -f", 0.3 * SLACK)


def fd_position(pid: int, path: str) -> int:
    """The file position of `pid`'s descriptor open on `path` (-1: none)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    return int(f.readline().split()[1])
        except FileNotFoundError:
            pass
    return -1


def test_tail_n0_f_shows_only_new_records(mount, server, run):
    server.send(run, "chat", "old 1")
    server.send(run, "chat", "old 2")
    path = mount.log(run, "chat")
    size = len(b'"old 1"\n"old 2"\n')
    proc = spawn_sh('exec tail -n0 -s 0.1 -f "$L"', env={"L": path})
    try:
        from devserver_ctl import wait_for
        # tail has positioned itself at the end: what follows is new.
        wait_for(lambda: fd_position(proc.pid, path) == size, 5 * SLACK,
                 what="tail at the end of the log")
        server.send(run, "chat", "new")
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == '"new"'
    finally:
        kill_group(proc)


def test_tail_f_log_with_data_follows(mount, server, run):
    server.send(run, "chat", "first")
    proc = spawn_sh('exec tail -s 0.1 -f "$S"', env={"S": mount.log(run, "chat")})
    try:
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == '"first"'
        server.send(run, "chat", "second")
        sent = time.monotonic()
        line, arrived = lines.next()
        assert line == '"second"'
        assert arrived - sent < 0.3 * SLACK
    finally:
        kill_group(proc)


# ---------------------------------------------------------------- log/

def test_cat_log_returns_everything_at_once(mount, server, run):
    for i in range(3):
        server.send(run, "chat", {"i": i, "word": "x" if i % 2 else "y"})
    # The mount has never seen this stream: the first read must wait for the
    # replay of what the API holds, and then not block at the end.
    t0 = time.monotonic()
    r = sh('cat "$L"; echo "rc=$?"; grep -c \'"word":"y"\' "$L"; wc -l < "$L"',
           env={"L": mount.log(run, "chat")})
    assert time.monotonic() - t0 < 1.0 * SLACK
    assert r.stdout.decode() == ('{"i":0,"word":"y"}\n{"i":1,"word":"x"}\n'
                                 '{"i":2,"word":"y"}\nrc=0\n2\n3\n'), r.stderr
    st = os.stat(mount.log(run, "chat"))
    assert st.st_size == len('{"i":0,"word":"y"}\n') * 3


def test_log_of_an_empty_stream_is_empty(mount, server, run):
    r = sh('cat "$L"; echo "rc=$?"; wc -c < "$L"; tail -n1 "$L"',
           env={"L": mount.log(run, "empty")})
    assert r.stdout == b"rc=0\n0\n"
    assert mount.stats()["parked_reads"] == 0


def test_log_shows_a_send_made_through_the_api_right_before(mount, server, run):
    log = mount.log(run, "chat")
    assert sh('cat "$L"', env={"L": log}).stdout == b""
    server.send(run, "chat", "later")
    r = sh('cat "$L"', env={"L": log})
    assert r.stdout == b'"later"\n'


# ---------------------------------------------------------------- big reads

def fill_one_mib(server, run, stream: str) -> bytes:
    """Two string records whose log lines sum to exactly 1 MiB."""
    half = MIB // 2
    a, b = "a" * (half - 3), "b" * (half - 3)     # "<n chars>"\n: n + 3 bytes
    server.send(run, stream, a)
    server.send(run, stream, b)
    return f'"{a}"\n"{b}"\n'.encode()


def test_two_mib_read_returns_one_record_at_once(mount, server, run):
    data = fill_one_mib(server, run, "big")
    first, second = data[:MIB // 2], data[MIB // 2:]
    assert os.stat(mount.input(run, "big")).st_size == MIB
    r = sh('timeout 5 dd if="$S" bs=2M count=1 status=none', env={"S": mount.input(run, "big")})
    assert r.returncode == 0, r.stderr
    # One read(2) returns one record. The kernel splits a 2 MiB read; a
    # piece ending exactly at the end of the record may be one byte short.
    assert len(r.stdout) in (len(first) - 1, len(first))
    assert r.stdout == first[:len(r.stdout)]
    assert os.stat(mount.input(run, "big")).st_size == len(second)
    r = sh('timeout 5 head -c 524288 "$S"', env={"S": mount.input(run, "big")})
    assert (r.returncode, r.stdout) == (0, second)
    r = sh('timeout 5 dd if="$S" bs=2M count=1 status=none', env={"S": mount.log(run, "big")})
    assert (r.returncode, r.stdout) == (0, data)
    assert os.stat(mount.input(run, "big")).st_size == 0
    assert os.stat(mount.log(run, "big")).st_size == MIB
    assert mount.stats()["parked_reads"] == 0


# ---------------------------------------------------------------- O_NONBLOCK, poll

def test_nonblocking_read_at_the_end_is_eagain(mount, server, run):
    fd = os.open(mount.input(run, "nb"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os_error(lambda: os.read(fd, 100)) == errno.EAGAIN
        server.send(run, "nb", 1)
        from devserver_ctl import wait_for
        assert wait_for(lambda: os.stat(mount.input(run, "nb")).st_size == 2, 5 * SLACK)
        assert os.read(fd, 100) == b"1\n"
        assert os_error(lambda: os.read(fd, 100)) == errno.EAGAIN
    finally:
        os.close(fd)
    assert mount.stats()["parked_reads"] == 0


def in_syscall(tid: int, numbers: set) -> bool:
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0] in {str(n) for n in numbers}


# x86_64 numbers: poll 7, select 23, pselect6 270, ppoll 271
WAIT_SYSCALLS = {7, 23, 270, 271}


def wake_test(mount, server, run, wait_fn) -> None:
    """A thread waits in select/poll on a stream at its end; it must stay
    asleep while nothing comes and wake within PROMPT of a send."""
    server.send(run, "p", "old")
    fd = os.open(mount.input(run, "p"), os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b'"old"\n'
        result: dict = {}

        def waiter():
            result["tid"] = threading.get_native_id()
            result["ready"] = wait_fn(fd, 10.0)
            result["at"] = time.monotonic()
        t = threading.Thread(target=waiter)
        t.start()
        from devserver_ctl import wait_for
        wait_for(lambda: "tid" in result and in_syscall(result["tid"], WAIT_SYSCALLS),
                 5 * SLACK, what="the thread in select/poll")
        t.join(0.3)                       # nothing to read: it must not wake
        assert t.is_alive() and "ready" not in result
        server.send(run, "p", "new")
        sent = time.monotonic()
        t.join(5 * SLACK)
        assert result.get("ready"), result
        assert result["at"] - sent < PROMPT, f"woke {result['at'] - sent:.3f}s after the send"
        assert os.read(fd, 100) == b'"new"\n'
    finally:
        os.close(fd)


def test_select_wakes_when_a_record_is_sent(mount, server, run):
    wake_test(mount, server, run, lambda fd, t: select.select([fd], [], [], t)[0] == [fd])


def test_poll_wakes_when_a_record_is_sent(mount, server, run):
    def wait(fd, t):
        p = select.poll()
        p.register(fd, select.POLLIN)
        return p.poll(t * 1000) == [(fd, select.POLLIN)]
    wake_test(mount, server, run, wait)


def test_poll_reports_eof_when_the_run_finishes(mount, server, run):
    fd = os.open(mount.input(run, "p"), os.O_RDONLY)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0) == []
        server.cancel(run)
        assert p.poll(5000 * SLACK) == [(fd, select.POLLIN)]
        assert os.read(fd, 100) == b""
    finally:
        os.close(fd)


def test_sigint_on_a_blocked_cat_returns_at_once(mount, server, run):
    proc = blocked_reader(mount, 'exec cat "$S"', S=mount.input(run, "c"))
    try:
        os.kill(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(5 * SLACK)
        assert time.monotonic() - t0 < 0.2 * SLACK
        assert proc.returncode == -signal.SIGINT
    finally:
        kill_group(proc)
    assert mount.stats()["parked_reads"] == 0


# ---------------------------------------------------------------- fan-out, signals, load

def test_log_followers_share_one_subscription_each_with_its_own_position(mount, server, run):
    server.send(run, "fan", 0)
    path = mount.log(run, "fan")
    procs = [spawn_sh('exec tail -s 0.1 -n +1 -f "$S"', env={"S": path}) for _ in range(3)]
    try:
        readers = [Lines(p.stdout.fileno()) for p in procs]
        for r in readers:                     # each starts at 0
            assert r.next()[0] == "0"
        assert mount.stats()["subscriptions"] == 1
        for i in (1, 2):
            server.send(run, "fan", i)
            for r in readers:                 # every record to every follower
                assert r.next()[0] == str(i)
        # A late reader of the log starts at the beginning too.
        assert sh('cat "$S"', env={"S": path}).stdout == b"0\n1\n2\n"
    finally:
        for p in procs:
            kill_group(p)
    assert mount.wait_stats(subscriptions=0, open_handles=0)


def test_cat_readers_of_input_share_the_records_once_each(mount, server, run):
    """Three `cat input/S` at once: each record goes to one of them, in the
    order they blocked; together they see every record once."""
    path = mount.input(run, "fan")
    procs = []
    try:
        for k in range(3):
            procs.append(spawn_sh('exec cat "$S"', env={"S": path}))
            mount.wait_parked(k + 1)
        readers = [Lines(p.stdout.fileno()) for p in procs]
        for i in range(3):
            server.send(run, "fan", i)
            assert readers[i].next()[0] == str(i)    # the longest waiting first
        for i in range(3, 9):
            server.send(run, "fan", i)
        mount.wait_parked(3)
        server.cancel(run)
        outs = [finish(p) for p in procs]
        assert all(rc == 0 for rc, _, _ in outs)
        got = sorted([0, 1, 2] + [int(v) for r, (_, out, _) in zip(readers, outs)
                                   for v in (r.buf.decode() + out).split()])
        assert got == list(range(9))
        assert mount.stats()["subscriptions"] <= 1
    finally:
        for p in procs:
            kill_group(p)
    assert mount.wait_stats(subscriptions=0, open_handles=0)


READER_WITH_HANDLER = r'''
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda *a: print("signal", flush=True))
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
print(os.read(fd, 100).decode(), end="", flush=True)
'''


def test_a_caught_signal_interrupts_the_parked_read_and_the_reader_retries(mount, server, run):
    """EINTR drops the parked request at once; Python retries the read
    (PEP 475), which parks again and gets the next record."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", READER_WITH_HANDLER, mount.input(run, "sig")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == "open"
        mount.wait_parked(1)
        before = mount.log_lines()
        os.kill(proc.pid, signal.SIGUSR1)
        assert lines.next()[0] == "signal"
        mount.wait_parked(1)                  # parked again by the retry
        assert mount.log_lines() == before    # an interrupt is not an error
        server.send(run, "sig", {"after": "signal"})
        assert lines.next()[0] == '{"after":"signal"}'
        assert proc.wait(5 * SLACK) == 0
    finally:
        kill_group(proc)


def test_blocked_readers_do_not_starve_stat_and_ls(mount, server, run):
    """A parked read holds no daemon thread: with 300 reads parked, stat,
    ls and a log read are answered at once."""
    n = 300
    path = mount.input(run, "many")
    fds = [os.open(path, os.O_RDONLY) for _ in range(n)]
    results: list = []
    threads = [threading.Thread(target=lambda fd=fd: results.append(os.read(fd, 100)))
               for fd in fds]
    try:
        for t in threads:
            t.start()
        mount.wait_parked(n, timeout=10 * SLACK)
        for _ in range(3):
            t0 = time.monotonic()
            os.stat(path)
            os.listdir(mount.path("runs", run, "input"))
            assert sh('cat "$L"', env={"L": mount.log(run, "many")}).returncode == 0
            assert time.monotonic() - t0 < 0.5 * SLACK
        for i in range(n):                    # one record for each reader
            server.send(run, "many", i)
        for t in threads:
            t.join(10 * SLACK)
        assert sorted(results) == sorted(b"%d\n" % i for i in range(n))
    finally:
        if any(t.is_alive() for t in threads):
            server.cancel(run)                # EOF ends every reader
            for t in threads:
                t.join(10 * SLACK)
        for fd in fds:
            os.close(fd)
    assert mount.stats()["parked_reads"] == 0
