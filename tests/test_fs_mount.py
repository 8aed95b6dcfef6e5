"""The mount itself: shutdown with readers blocked (SIGTERM, lazy unmount),
a second mount on the same directory, the listings of runs/ and input/,
and refused startups (credentials, key file mode, expired token, bad URL)."""

from __future__ import annotations

import errno
import os
import re
import signal
import time

from mount_ctl import (SLACK, Mount, blocked_cats, kill_group, lazy_unmount, mount,  # noqa: F401
                       mount_factory, mounted, os_error, sh, spawn_sh, write_secret)


def cats_on_two_streams(m, run: str, n: int) -> list:
    return blocked_cats(m, [m.input(run, f"s{i % 2}") for i in range(n)])


def wait_all(procs: list, timeout: float) -> list:
    """[(rc, stderr)] of processes that must end by themselves in time."""
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
        _, err = p.communicate(timeout=max(0.0, deadline - time.monotonic()))
        out.append((p.returncode, err.decode()))
    return out


# ---------------------------------------------------------------- shutdown

def test_sigterm_with_readers_blocked(mount_factory, run):
    m = mount_factory()
    procs = cats_on_two_streams(m, run, 3)
    try:
        m.signal(signal.SIGTERM)
        t0 = time.monotonic()
        results = wait_all(procs, 2 * SLACK)
        assert time.monotonic() - t0 < 1.0 * SLACK
        for rc, err in results:
            # An error, not end of file: the stream did not end.
            assert rc == 1 and "cat:" in err, (rc, err)
        assert m.wait_exit() == 0
        assert not mounted(m.mnt)
    finally:
        for p in procs:
            kill_group(p)


def test_lazy_unmount_with_readers_blocked(mount_factory, run):
    m = mount_factory()
    procs = cats_on_two_streams(m, run, 2)
    try:
        lazy_unmount(m.mnt)
        assert not mounted(m.mnt)
        results = wait_all(procs, 3 * SLACK)
        for rc, err in results:
            assert rc == 1 and "cat:" in err, (rc, err)
        assert m.wait_exit() == 0
        # No libfuse complaint about a mount that is already gone.
        assert not [l for l in m.log_lines() if not l.startswith("triggerfs: ")], m.stderr()
    finally:
        for p in procs:
            kill_group(p)


def test_second_mount_on_the_same_directory_is_refused(mount_factory, server, run):
    m = mount_factory()
    second = mount_factory(mountpoint=m.mnt, start=False)
    assert second.run_to_exit() != 0
    lines = second.log_lines()
    assert len(lines) == 1 and "already mounted" in lines[0], lines
    # The first mount is untouched.
    assert sh('echo 1 > "$S"', env={"S": m.input(run, "chat")}).returncode == 0
    assert server.records(run, "chat") == [(0, 1)]


# ---------------------------------------------------------------- listing

def test_runs_lists_live_runs_with_a_secret_key(mount, server, run):
    finished, _ = server.trigger_run()
    server.cancel(finished)
    names = os.listdir(mount.path("runs"))
    assert run in names
    assert finished not in names
    assert sorted(os.listdir(mount.path())) == ["runs", "waitpoints"]  # .triggerfs-stats is hidden
    # A run used through the mount is listed, finished or not.
    os.stat(mount.path("runs", finished))
    assert finished in os.listdir(mount.path("runs"))


def test_runs_lists_the_runs_in_scope_with_a_token(mount_factory, server, run):
    other, _ = server.trigger_run()
    m = mount_factory(token=server.mint([f"read:runs:{run}", f"write:inputStreams:{run}"]))
    assert os.listdir(m.path("runs")) == [run]
    assert other not in os.listdir(m.path("runs"))


def test_input_lists_streams_used(mount, server, run):
    base = mount.path("runs", run)
    assert sorted(os.listdir(base)) == ["input", "log", "output", "status"]
    assert os.listdir(os.path.join(base, "input")) == []
    r = sh('echo 1 > "$B/input/alpha" && cat "$B/log/beta"', env={"B": base})
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(os.path.join(base, "input"))) == ["alpha", "beta"]
    assert sorted(os.listdir(os.path.join(base, "log"))) == ["alpha", "beta"]
    r = sh('ls "$B/input"; wc -c < "$B/log/alpha"', env={"B": base})
    assert r.stdout == b"alpha\nbeta\n2\n"


def test_unknown_names_are_enoent(mount, run):
    for path in (mount.path("nope"), mount.path("runs", run, "nope"),
                 mount.path("runs", run, "input", "a", "b")):
        assert os_error(lambda: os.stat(path)) in (errno.ENOENT, errno.ENOTDIR), path
    assert os_error(lambda: os.stat(mount.path("nope"))) == errno.ENOENT
    assert os_error(lambda: os.stat(mount.path("runs", run, "nope"))) == errno.ENOENT
    r = sh('ls "$P"', env={"P": mount.path("runs", run, "nope")})
    assert r.returncode == 2 and b"No such file or directory" in r.stderr


def test_log_is_read_only(mount, server, run):
    path = mount.log(run, "chat")
    assert os.stat(path).st_mode & 0o777 == 0o444
    r = sh('echo 1 > "$L"', env={"L": path})
    assert r.returncode == 1 and b"Permission denied" in r.stderr, r.stderr
    assert os_error(lambda: os.open(path, os.O_WRONLY)) == errno.EACCES
    assert server.records(run, "chat") == []


# ---------------------------------------------------------------- startup errors

def refused(m: Mount, *needles: str, secret: str = "") -> str:
    """The daemon exits non-zero with one clear line and leaves no mount."""
    assert m.run_to_exit() != 0
    lines = m.log_lines()
    assert len(lines) == 1 and lines[0].startswith("triggerfs: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    if secret:
        assert secret not in m.stderr()
    assert not mounted(m.mnt)
    return lines[0]


def test_missing_credentials_are_refused(mount_factory):
    refused(mount_factory(key=None, start=False), "no credentials", "TRIGGER_SECRET_KEY")


def test_key_file_readable_by_others_is_refused(mount_factory, server):
    m = mount_factory(key=None, start=False)
    path = write_secret(m.tmp, "key", server.secret_key, 0o644)
    m.options.append(f"secret_key_file={path}")
    refused(m, path, "chmod 600", secret=server.secret_key)
    # The same file with mode 0600 mounts.
    os.chmod(path, 0o600)
    ok = mount_factory(key=None, options=[f"secret_key_file={path}"])
    assert sorted(os.listdir(ok.path())) == ["runs", "waitpoints"]


def test_expired_token_is_refused(mount_factory, server, run):
    token = server.mint([f"read:runs:{run}"], exp_in=-60)
    refused(mount_factory(token=token, start=False), "expired", secret=token)


def test_expired_token_is_refused_with_its_expiry_as_a_date(mount_factory, server, run):
    token = server.mint([f"read:runs:{run}"], exp_in=-3600)
    line = refused(mount_factory(token=token, start=False), "expired at", "UTC", secret=token)
    assert re.search(r"expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line


def test_wrong_secret_key_is_refused_before_mounting(mount_factory, server):
    bad = "tr_dev_" + "x" * 20
    line = refused(mount_factory(key=bad, start=False), "rejects the secret key",
                   "nothing mounted", secret=bad)
    assert "HTTP 401" in line, line


def test_token_signed_with_another_key_is_refused_before_mounting(mount_factory, server, run):
    token = server.mint(["read:runs", "write:inputStreams"], key="tr_dev_" + "y" * 20)
    line = refused(mount_factory(token=token, start=False), "rejects the access token",
                   secret=token)
    assert "HTTP 401" in line, line


def test_credential_on_the_command_line_is_refused(mount_factory):
    m = mount_factory(start=False, options=["secret_key=tr_dev_notarealkey"])
    refused(m, "command line")


def test_malformed_api_url_is_refused(mount_factory, server):
    for url in ("not a url", "ftp://127.0.0.1/", "http://example.com"):
        refused(mount_factory(api_url=url, start=False), secret=server.secret_key)


def test_daemon_keeps_secrets_out_of_its_environment_and_argv(mount, server):
    pid = mount.proc.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert server.secret_key.encode() not in f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert server.secret_key.encode() not in f.read()


def test_editing_the_tree_is_eperm_with_a_log_line(mount, server, run):
    inp = mount.input(run, "chat")
    env = {"M": mount.mnt, "S": inp, "R": mount.path("runs", run)}
    edits = {
        "mkdir": 'mkdir "$M/mine"',
        "touch": 'touch "$M/newfile"',
        "rm": 'rm -f "$S"',
        "mv": 'mv "$S" "$S.old"',
        "rmdir": 'rmdir "$R/log"',
        "ln -s": 'ln -s /tmp "$M/link"',
    }
    for what, script in edits.items():
        start = len(mount.log_lines())
        r = sh(script, env=env)
        assert r.returncode != 0, what
        assert b"Operation not permitted" in r.stderr, (what, r.stderr)
        line = mount.wait_log(r"refused: the tree is the API's", start=start)
        assert line, what
    # touch of an existing stream is accepted (times are ignored).
    assert sh('touch "$S"', env=env).returncode == 0
    assert server.records(run, "chat") == []
