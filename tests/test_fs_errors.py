"""API failures as errno, through a real mount: unknown run ENOENT,
finished run EROFS (which every writer reports), missing scope and expired token EACCES (without a
request), server down EIO within the send deadline. Each error leaves one
log line naming the run."""

from __future__ import annotations

import errno
import os
import time

from devserver_ctl import wait_for
from mount_ctl import SLACK, mount, mount_factory, os_error, sh  # noqa: F401


def sends_to(server, run: str, stream: str) -> list:
    path = server.stream_path(run, stream)
    return [e for e in server.request_log_entries()
            if e["method"] == "POST" and e["path"] == path]


def one_log_line(m, pattern: str, start: int = 0) -> str:
    """Exactly one daemon log line (from line `start`) matches."""
    m.wait_log(pattern, start=start)
    lines = m.log_matching(pattern, start)
    assert len(lines) == 1, "\n".join(lines)
    return lines[0]


def test_unknown_run_is_enoent(mount):
    bad = "run_doesnotexist"
    r = sh('ls "$R"; echo "rc=$?"; stat "$R" >/dev/null; echo "rc=$?"; '
           'echo 1 > "$R/input/chat"; echo "rc=$?"',
           env={"R": mount.path("runs", bad)})
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "rc=2\nrc=1\nrc=1\n"
    assert err.count("No such file or directory") == 3, err
    assert os_error(lambda: os.stat(mount.path("runs", bad))) == errno.ENOENT
    assert os_error(lambda: os.open(mount.input(bad, "chat"), os.O_RDONLY)) == errno.ENOENT
    assert mount.log_matching(rf"run {bad}\b"), mount.stderr()


def test_unknown_runs_looked_up_together_wait_once(mount):
    """An unknown run is asked again for seconds (the server may read a
    lagging replica); lookups of other names in runs/ do not queue behind
    it: `stat` of ten typos at once takes about as long as one."""
    def stat(names: list) -> tuple:
        script = 'for r in $NAMES; do stat "$D/$r" >/dev/null 2>&1 & done; ' \
                 'fails=0; for j in $(jobs -p); do wait "$j" || fails=$((fails+1)); done; ' \
                 'echo "$fails"'
        start = time.monotonic()
        r = sh(script, timeout=120, env={"D": mount.path("runs"), "NAMES": " ".join(names)})
        return int(r.stdout), time.monotonic() - start

    fails, one = stat(["run_typo0"])
    assert fails == 1 and one >= 2, one     # the retries did wait
    names = [f"run_typo{i}" for i in range(1, 11)]
    fails, ten = stat(names)
    assert fails == 10
    assert ten < 2 * one, (one, ten)        # one after the other: 10x
    for name in names:
        assert mount.log_matching(rf"run {name}: not found"), name


def test_finished_run_refuses_writes_with_erofs(mount, server, run):
    path = mount.input(run, "chat")
    assert sh('echo 1 > "$S"', env={"S": path}).returncode == 0
    server.cancel(run)
    start = len(mount.log_lines())
    r = sh('echo 2 > "$S"', env={"S": path})
    assert r.returncode == 1
    assert b"Read-only file system" in r.stderr, r.stderr
    line = one_log_line(mount, rf"run {run} stream chat: send failed", start)
    assert "HTTP 400" in line and "completed run" in line, line
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os_error(lambda: os.write(fd, b"3\n")) == errno.EROFS
    finally:
        os.close(fd)
    assert [v for _, v in server.records(run, "chat")] == [1]
    # Readers of a finished run get what it holds, then end of file.
    assert sh('timeout 5 cat "$S"', env={"S": path}).stdout == b"1\n"


def test_no_writer_exits_0_on_a_finished_run(mount, server, run, tmp_path):
    """EPIPE is what tee reads as "the reader went away" (exit 0): the
    errno of a finished run must be a failure for every writer."""
    path = mount.input(run, "done")
    server.cancel(run)
    src = tmp_path / "v.json"
    src.write_text('{"v":1}\n')
    writers = {
        "tee": 'echo \'{"v":1}\' | tee "$S" >/dev/null',
        "tee -p": 'echo \'{"v":1}\' | tee -p "$S" >/dev/null',
        "dd": 'dd if="$F" of="$S" status=none',
        "cp": 'cp "$F" "$S"',
        "echo": 'echo \'{"v":1}\' > "$S"',
        "printf": "/usr/bin/printf '{\"v\":1}\\n' > \"$S\"",
        # with: a file left to the garbage collector reports nothing
        "python": '/usr/bin/python3 -c \'import sys\nwith open(sys.argv[1], "w") as f: f.write("{}\\n")\' "$S"',
    }
    for name, script in writers.items():
        r = sh(script, env={"S": path, "F": str(src)})
        assert r.returncode != 0, f"{name} exited 0 on a finished run"
        assert b"Read-only file system" in r.stderr, (name, r.stderr)
    assert server.records(run, "done") == []


def test_token_without_write_scope_is_eacces_without_a_request(mount_factory, server, run):
    token = server.mint([f"read:runs:{run}"])
    m = mount_factory(token=token)
    path = m.input(run, "chat")
    # The mode says so: read-only for everyone.
    assert os.stat(path).st_mode & 0o777 == 0o444
    r = sh('echo 1 > "$S"', env={"S": path})
    assert r.returncode == 1
    assert b"Permission denied" in r.stderr, r.stderr
    assert os_error(lambda: os.open(path, os.O_WRONLY)) == errno.EACCES
    assert sends_to(server, run, "chat") == []          # no request was made
    assert m.log_matching(rf"run {run}: .*no scope to send"), m.stderr()
    # Reading is in scope.
    server.send(run, "chat", "hi")
    assert sh('timeout 5 head -n1 "$S"', env={"S": path}).stdout == b'"hi"\n'
    # A token that may send shows a writable file.
    m2 = mount_factory(token=server.mint([f"read:runs:{run}", f"write:inputStreams:{run}"]))
    assert os.stat(m2.input(run, "chat")).st_mode & 0o777 == 0o644


def test_expired_token_is_eacces(mount_factory, server, run):
    token = server.mint([f"read:runs:{run}", f"write:inputStreams:{run}"], exp_in=2)
    exp = int(time.time()) + 2
    m = mount_factory(token=token)
    path = m.input(run, "chat")
    assert sh('echo 1 > "$S"', env={"S": path}).returncode == 0
    wait_for(lambda: time.time() >= exp + 0.05, 5, what="the token to expire")
    start = len(m.log_lines())
    r = sh('echo 2 > "$S"', env={"S": path})
    assert r.returncode == 1
    assert b"Permission denied" in r.stderr, r.stderr
    assert m.log_matching(rf"run {run}: the access token expired", start), m.stderr()
    assert [v for _, v in server.records(run, "chat")] == [1]


def test_server_down_is_eio_within_the_send_deadline(make_server, mount_factory):
    srv = make_server()
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key, options=["send_timeout=2s"])
    path = m.input(run, "chat")
    assert sh('echo 1 > "$S"', env={"S": path}).returncode == 0
    srv.stop()
    start = len(m.log_lines())
    t0 = time.monotonic()
    r = sh('echo 2 > "$S"', env={"S": path})
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    assert b"Input/output error" in r.stderr, r.stderr
    assert elapsed < 2 + 2 * SLACK, elapsed
    one_log_line(m, rf"run {run} stream chat: send failed", start)


def test_a_lost_connection_is_one_line_and_its_return_another(make_server, mount_factory):
    """While the server is down the subscription retries many times; the
    log says so once, and once more when it is back (how long, how many
    retries), and the reader then gets the record."""
    from mount_ctl import Lines, kill_group, spawn_sh
    srv = make_server()
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key)
    proc = spawn_sh('exec cat "$S"', env={"S": m.input(run, "chat")})
    try:
        m.wait_parked(1)
        start = len(m.log_lines())
        srv.stop()
        m.wait_log(rf"run {run} stream chat: connection lost", start=start)
        time.sleep(6)        # the outage: several reconnection attempts
        srv.start()
        back = m.wait_log(rf"run {run} stream chat: connection back after ([\d.]+) s and (\d+) retries",
                          timeout=30 * SLACK, start=start)
        assert float(back.group(1)) >= 5 and int(back.group(2)) >= 2, back.string
        lost = m.log_matching(r"connection lost", start)
        assert len(lost) == 1, lost
        assert "HTTP 0" not in "\n".join(m.log_lines()[start:])
        srv.send(run, "chat", "after")
        assert Lines(proc.stdout.fileno()).next()[0] == '"after"'
    finally:
        kill_group(proc)
