"""runs/<runId>/output/<streamId>: the run's realtime output stream.
Reading is the observer's view (from the start for every open, blocking at
the end, end of file once the run has finished, one subscription shared by
every reader); writing appends each JSON value as one record, stored as the
SDK's streams.writer stores it, so the SDK's streams.read gets the value
itself."""

from __future__ import annotations

import errno
import json
import os
import pty
import secrets
import select
import subprocess

from mount_ctl import (Lines, blocked_cats, kill_group, mount, mount_factory,  # noqa: F401
                       os_error, sh, spawn_sh)
from test_sdk import procs, sdk, sdk_installed  # noqa: F401

MIB = 1024 * 1024


def raw_records(server, run: str, stream: str) -> list:
    return server.raw_records(run, stream, output=True)


def values(server, run: str, stream: str) -> list:
    return [v for _, v in server.records(run, stream, output=True)]


def task_writes(server, run: str, stream: str, vals: list) -> None:
    """Append as a task's streams.writer does: the PUT, then one S2 append,
    each value a record {"data": <value>, "id": <7 random characters>}."""
    s2 = server.open_output(run, stream)
    bodies = [json.dumps({"data": v, "id": secrets.token_urlsafe(5)[:7]}) for v in vals]
    status, ack = server.s2_append(s2, bodies)
    assert status == 200, ack


# ---- writing ---------------------------------------------------------------

def test_echo_is_stored_as_the_sdk_stores_it(mount, server, run):
    path = mount.path("runs", run, "output", "progress")
    r = sh('echo \'{"pct":50}\' > "$O"', env={"O": path})
    assert (r.returncode, r.stderr) == (0, b"")
    # Stored before echo returned, as streams.writer stores a chunk: the
    # record's body is {"data": <the value itself>, "id": <7 characters>}.
    [rec] = raw_records(server, run, "progress")
    body = json.loads(rec["body"])
    assert body["data"] == {"pct": 50}
    assert isinstance(body["id"], str) and len(body["id"]) == 7


def test_sdk_streams_read_gets_objects_the_mount_wrote(mount, server, run, sdk):
    path = mount.path("runs", run, "output", "progress")
    r = sh('{ echo \'{"pct":10}\'; jq -n \'{pct: 20, note: "two"}\'; echo \'"a string" 3\'; } > "$O"',
           env={"O": path})
    assert r.returncode == 0, r.stderr
    got = sdk.run("output_read", RUN_ID=run, STREAM_ID="progress", COUNT=4)
    assert got == [{"type": "object", "value": {"pct": 10}},
                   {"type": "object", "value": {"pct": 20, "note": "two"}},
                   {"type": "string", "value": "a string"},
                   {"type": "number", "value": 3}]


def test_values_of_one_write_go_in_order_in_one_batch(mount, server, run):
    path = mount.path("runs", run, "output", "batch")
    data = "".join(json.dumps({"i": i}) + "\n" for i in range(200)).encode()
    before = len(server.request_log_entries())
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    assert values(server, run, "batch") == [{"i": i} for i in range(200)]
    appends = [e for e in server.request_log_entries()[before:]
               if e["method"] == "POST" and e["path"].endswith("/records")]
    # One PUT for the credentials, then S2 appends: far fewer than values.
    assert 1 <= len(appends) <= 3, appends


def test_write_rules_bad_value_and_size(mount, server, run):
    path = mount.path("runs", run, "output", "rules")
    fd = os.open(path, os.O_WRONLY)
    # The value before the bad one is stored, the write is short, and the
    # next write and the close fail: nothing from the bad value on.
    assert os.write(fd, b'1\n{oops\n3\n') == 2
    assert os_error(lambda: os.write(fd, b'4\n')) == errno.EINVAL
    assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert values(server, run, "rules") == [1]
    # A truncated value fails the close and is not stored.
    r = sh("/usr/bin/printf '{\"a\":' > \"$O\"", env={"O": path})
    assert r.returncode != 0
    assert values(server, run, "rules") == [1]
    # A value over 1 MiB written in 64 KiB pieces, as cat writes it.
    big = b'"' + b"x" * (MIB + 10) + b'"\n'
    failed = []
    fd = os.open(path, os.O_WRONLY)
    for i in range(0, len(big), 65536):
        try:
            os.write(fd, big[i:i + 65536])
        except OSError as e:
            failed.append(e.errno)
    assert os_error(lambda: os.close(fd)) == errno.EFBIG
    assert failed and set(failed) == {errno.EFBIG}, failed
    assert values(server, run, "rules") == [1]


def test_public_token_cannot_write_but_can_read(mount_factory, server):
    run, run_jwt = server.trigger_run()
    m = mount_factory(token=run_jwt)
    path = m.path("runs", run, "output", "s")
    assert os_error(lambda: open(path, "w")) == errno.EACCES
    assert os.stat(path).st_mode & 0o222 == 0
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os_error(lambda: os.read(fd, 10)) == errno.EAGAIN
    finally:
        os.close(fd)


def test_finished_run_refuses_writes(mount, server, run):
    path = mount.path("runs", run, "output", "late")
    assert sh('echo 1 > "$O"', env={"O": path}).returncode == 0
    server.cancel(run)
    # The credentials are asked for again at every open: the API refuses,
    # with the errno no writer takes for "the reader went away".
    for tool in ('echo 2 > "$O"', 'echo 2 | tee "$O" >/dev/null', 'echo 2 | dd of="$O" 2>/dev/null'):
        r = sh(tool, env={"O": path})
        assert r.returncode != 0, tool
    assert os_error(lambda: open(path, "w")) == errno.EROFS   # known finished now
    assert values(server, run, "late") == [1]


# ---- reading ---------------------------------------------------------------

def test_cat_gets_what_the_sdk_writer_wrote(mount, server, run, sdk):
    path = mount.path("runs", run, "output", "sdk")
    cat = spawn_sh('exec cat "$O"', env={"O": path})
    try:
        mount.wait_parked(1)
        out = sdk.run("output_write", ['{"step":1}', '"two"', "3"], RUN_ID=run, STREAM_ID="sdk")
        assert out[0]["written"] == 3
        lines = Lines(cat.stdout.fileno())
        assert [lines.next()[0] for _ in range(3)] == ['{"step":1}', '"two"', "3"]
    finally:
        kill_group(cat)


def test_cat_follows_from_the_start_and_ends_with_the_run(mount, server, run):
    path = mount.path("runs", run, "output", "chat")
    assert sh('echo \'{"n":0}\' > "$O"', env={"O": path}).returncode == 0
    cat = spawn_sh('exec cat "$O"', env={"O": path})
    try:
        lines = Lines(cat.stdout.fileno())
        assert lines.next()[0] == '{"n":0}'
        mount.wait_parked(1)
        # What a task writes (S2 appends as streams.writer makes them)
        # arrives too.
        task_writes(server, run, "chat", [{"n": 1}, {"n": 2}])
        assert [lines.next()[0] for _ in range(2)] == ['{"n":1}', '{"n":2}']
        server.cancel(run)
        assert cat.wait(15) == 0                       # end of file with the run
    finally:
        kill_group(cat)
    # A new open reads everything again, from the start.
    r = sh('cat "$O"', env={"O": path})
    assert r.stdout == b'{"n":0}\n{"n":1}\n{"n":2}\n'


def test_tail_f_and_one_subscription_for_all_readers(mount, server, run):
    """`tail -f` as a person runs it, on a terminal (stdout line-buffered;
    into a pipe tail buffers what it reads before the file's end, so
    pipelines use cat or `stdbuf -oL tail -f`)."""
    path = mount.path("runs", run, "output", "log")
    task_writes(server, run, "log", ["before"])
    procs = blocked_cats(mount, [path, path])
    tails = []
    try:
        for argv in (["tail", "-f", path], ["stdbuf", "-oL", "tail", "-n", "+1", "-f", path]):
            master, slave = pty.openpty()
            tails.append((subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                                           stderr=slave, start_new_session=True), master))
            os.close(slave)
        # The cats and `tail -n +1` park at the end; plain `tail -f` reads
        # its last lines, then polls the size (O_NONBLOCK).
        mount.wait_parked(3)
        assert mount.stats()["subscriptions"] == 1
        assert sh('echo \'"hello"\' > "$O"', env={"O": path}).returncode == 0
        for tail, master in tails:
            lines = Lines(master)
            assert [lines.next()[0].rstrip("\r") for _ in range(2)] == ['"before"', '"hello"']
        for p in procs:
            lines = Lines(p.stdout.fileno())
            assert [lines.next()[0] for _ in range(2)] == ['"before"', '"hello"']
    finally:
        for p in procs:
            kill_group(p)
        for tail, master in tails:
            kill_group(tail)
            os.close(master)


def test_nonblocking_and_poll(mount, server, run):
    path = mount.path("runs", run, "output", "p")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os_error(lambda: os.read(fd, 100)) == errno.EAGAIN
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(200) == []
        assert sh('echo 5 > "$O"', env={"O": path}).returncode == 0
        assert p.poll(15000) == [(fd, select.POLLIN)]
        assert os.read(fd, 100) == b"5\n"
    finally:
        os.close(fd)


def test_listing_names_the_runs_output_streams(mount, server, run):
    sh('echo 1 > "$O"', env={"O": mount.path("runs", run, "output", "made-here")})
    task_writes(server, run, "by-task", [1])
    names = os.listdir(mount.path("runs", run, "output"))
    assert "made-here" in names and "by-task" in names


def test_readers_resume_exactly_once_across_a_server_restart(mount_factory, make_server):
    srv = make_server()
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key)
    path = m.path("runs", run, "output", "r")
    task_writes(srv, run, "r", [0, 1])
    cat = spawn_sh('exec cat "$O"', env={"O": path})
    try:
        lines = Lines(cat.stdout.fileno())
        assert [lines.next()[0] for _ in range(2)] == ["0", "1"]
        srv.kill9()
        srv.restart()
        task_writes(srv, run, "r", [2, 3])
        assert sh('echo 4 > "$O"', env={"O": path}, timeout=60).returncode == 0
        assert [lines.next(30)[0] for _ in range(3)] == ["2", "3", "4"]
        assert lines.quiet(1.0)                      # nothing twice
    finally:
        kill_group(cat)
