"""runs/<runId>/status: the run's status word and a newline, asked of the
API at every open, so a shell loop can wait for the run to finish."""

from __future__ import annotations

import errno
import threading
import time

from devserver_ctl import wait_for
from mount_ctl import mount, mount_factory, os_error, sh  # noqa: F401


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_status_is_one_line_fresh_at_every_open(mount, server, run):
    path = mount.path("runs", run, "status")
    assert read(path) == "EXECUTING\n"
    r = sh('read -r s < "$S" && echo "[$s]"', env={"S": path})
    assert r.stdout == b"[EXECUTING]\n", r.stderr
    server.cancel(run)
    # No cache between opens: each open asks again, so one of them sees the
    # cancel once it has taken effect (the server stops the run shortly after).
    wait_for(lambda: read(path) == "CANCELED\n", 10, what="status CANCELED")
    assert sh('grep -qx CANCELED "$S"', env={"S": path}).returncode == 0


def test_until_grep_loop_sees_the_run_finish(mount, server, run):
    path = mount.path("runs", run, "status")
    # The idiom from the man page, with an inotify-free poll.
    loop = 'n=0; until grep -qx CANCELED "$S"; do n=$((n+1)); sleep 0.2; done; echo "$n"'
    timer = threading.Timer(1.0, server.cancel, args=(run,))
    timer.start()
    try:
        started = time.monotonic()
        r = sh(loop, env={"S": path}, timeout=30)
    finally:
        timer.join()
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 1              # it did wait ...
    assert time.monotonic() - started < 15  # ... and saw the change (gross bound)


def test_status_of_unknown_run_and_its_refusals(mount, server, run):
    assert os_error(lambda: read(mount.path("runs", "run_doesnotexist", "status"))) \
        == errno.ENOENT
    path = mount.path("runs", run, "status")
    r = sh('echo x > "$S"', env={"S": path})
    assert r.returncode != 0
    assert os_error(lambda: open(path, "w")) == errno.EACCES
    assert "status" in sh('ls "$D"', env={"D": mount.path("runs", run)}).stdout.decode().split()


def test_public_token_reads_status(mount_factory, server):
    run, run_jwt = server.trigger_run()
    m = mount_factory(token=run_jwt)
    assert read(m.path("runs", run, "status")) == "EXECUTING\n"
