"""Security: credentials stay out of argv, the environment, logs and error
messages; credential files others can read are refused; a secret key goes
only to the claims endpoint and every other request carries a short-lived
JWT scoped to its run; other users cannot use the mount; plain http to a
host that is not loopback is refused before any connection."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from faultproxy import FaultProxy
from mount_ctl import (SLACK, kill_group, mount, mount_factory, sh, spawn_sh,  # noqa: F401
                       write_secret)

CLAIMS = "/api/v1/auth/jwt/claims"
JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture
def watched_proxy(server):
    """A pass-through proxy to the session server that notes which requests
    carry the secret key anywhere in their bytes."""
    proxy = FaultProxy(server.port, watch=server.secret_key.encode())
    try:
        yield proxy
    finally:
        proxy.close()


def proc_bytes(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def all_environs(pid: int) -> bytes:
    """The environment blocks of the process and of each of its threads."""
    out = proc_bytes(pid, "environ")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += proc_bytes(pid, f"task/{tid}/environ")
        except FileNotFoundError:
            pass
    return out


def exercise(m, server, run: str) -> None:
    """Reads, writes, listings and errors: the requests a mount makes."""
    stream = m.input(run, "sec")
    env = {"S": stream, "L": m.log(run, "sec"), "R": m.path("runs"),
           "X": m.path("runs", "run_doesnotexist00")}
    r = sh('ls "$R" >/dev/null && echo \'{"a":1}\' > "$S" && head -n1 "$S" && cat "$L" '
           '&& { stat "$X" 2>/dev/null; true; }', env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b'{"a":1}\n{"a":1}\n'


# ------------------------------------------------ argv, environ, logs

@pytest.mark.parametrize("kind", ["key", "token", "key_file", "token_file"])
def test_credentials_stay_out_of_argv_environ_and_logs(mount_factory, server, run, kind):
    secret = server.secret_key if kind.startswith("key") else \
        server.mint([f"read:runs:{run}", f"write:inputStreams:{run}"])
    options = ["debug"]             # even libfuse's debug trace must not show it
    if kind == "key":
        m = mount_factory(key=secret, options=options)
    elif kind == "token":
        m = mount_factory(key=None, token=secret, options=options)
    else:
        m = mount_factory(key=None, start=False, options=options)
        path = write_secret(m.tmp, "cred", secret)
        m.options.append(f"{'secret_key' if kind == 'key_file' else 'token'}_file={path}")
        m.start()
    exercise(m, server, run)
    pid = m.proc.pid
    needle = secret.encode()
    assert needle not in proc_bytes(pid, "cmdline")
    assert needle not in all_environs(pid)
    # Where the variable was, its value is wiped.
    environ = proc_bytes(pid, "environ")
    for var in (b"TRIGGER_SECRET_KEY=", b"TRIGGER_ACCESS_TOKEN="):
        at = environ.find(var)
        if at >= 0:
            assert environ[at + len(var):at + len(var) + len(needle)].strip(b"\0") == b"", var
    log = m.stderr().encode()
    assert b"unique:" in log        # the debug trace is there
    assert needle not in log and not JWT_RE.search(log)
    for path in (server.stderr_log, server.request_log):
        data = path.read_bytes()
        assert needle not in data and not JWT_RE.search(data), path


@pytest.mark.parametrize("var,value", [
    ("TRIGGER_ACCESS_TOKEN", "tr_dev_thisIsASecretKeyInTheWrongPlace"),
    ("TRIGGER_SECRET_KEY", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0c2lnbmF0dXJl"),
    ("TRIGGER_SECRET_KEY", "tr_dev_secret with a space in it"),
    ("TRIGGER_ACCESS_TOKEN", "eyJub3QiOiJqc29uIn0.bm90IGpzb24.c2VjcmV0c2lnbmF0dXJl"),
])
def test_refused_credentials_are_not_echoed(mount_factory, var, value):
    m = mount_factory(key=None, env={var: value}, start=False)
    assert m.run_to_exit() != 0
    err = m.stderr()
    assert err.strip(), "a refusal says why"
    assert value not in err
    for part in value.replace(" ", ".").split("."):
        if len(part) >= 12:
            assert part not in err, part


# ------------------------------------------------ credential files

@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o611])
@pytest.mark.parametrize("kind", ["secret_key_file", "token_file"])
def test_credential_files_readable_by_others_are_refused(mount_factory, server, run,
                                                        mode, kind):
    secret = server.secret_key if kind == "secret_key_file" else \
        server.mint([f"read:runs:{run}"])
    m = mount_factory(key=None, start=False)
    path = write_secret(m.tmp, "cred", secret, mode)
    m.options.append(f"{kind}={path}")
    mark = len(server.request_log_entries())
    assert m.run_to_exit() != 0
    err = m.stderr()
    assert path in err and "chmod 600" in err, err
    assert secret not in err
    assert server.request_log_entries()[mark:] == []


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_credential_files_of_the_owner_alone_are_accepted(mount_factory, server, mode):
    m = mount_factory(key=None, start=False)
    path = write_secret(m.tmp, "cred", server.secret_key, mode)
    m.options.append(f"secret_key_file={path}")
    m.start()
    assert sorted(os.listdir(m.path())) == ["runs", "waitpoints"]


def test_credential_file_symlink_and_directory_are_refused(mount_factory, server):
    m = mount_factory(key=None, start=False)
    target = write_secret(m.tmp, "real", server.secret_key)
    link = os.path.join(m.tmp, "link")
    os.symlink(target, link)
    m.options.append(f"secret_key_file={link}")
    assert m.run_to_exit() != 0
    assert server.secret_key not in m.stderr()
    d = mount_factory(key=None, start=False, options=[f"secret_key_file={m.tmp}"])
    assert d.run_to_exit() != 0
    assert "not a regular file" in d.stderr()


# ------------------------------------------------ what goes on the wire

def needed_scope(method: str, path: str) -> str:
    """The one scope a request needs: write to a run's streams to send,
    read that run for everything else, read:runs to list runs."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[0] == "realtime" and method == "POST":
        return f"write:inputStreams:{parts[3]}"
    if parts[:3] == ["api", "v1", "runs"] and len(parts) == 3:
        return "read:runs"
    return f"read:runs:{parts[3]}"


def test_secret_key_goes_only_to_the_claims_endpoint(mount_factory, server, run,
                                                     watched_proxy):
    mark = len(server.request_log_entries())
    m = mount_factory(api_url=watched_proxy.url)
    exercise(m, server, run)
    # A blocked reader: the subscription and the run-status poll.
    reader = spawn_sh('exec cat "$S"', env={"S": m.input(run, "wait")})
    try:
        m.wait_parked(1)
        server.send(run, "wait", 1)
        assert reader.stdout.readline() == b"1\n"
    finally:
        kill_group(reader)
    entries = server.request_log_entries()[mark:]
    mine = [e for e in entries if e["path"] != f"/realtime/v1/streams/{run}/input/wait"
            or e["method"] != "POST"]           # the test's own send above
    secret = [e for e in mine if e["auth"] == "secret"]
    assert secret and all(e["path"] == CLAIMS and e["method"] == "POST" for e in secret), secret
    others = [e for e in mine if e["path"] != CLAIMS]
    assert {e["auth"] for e in others} == {"jwt"}, others
    kinds = {(e["method"], e["path"].split("/")[1]) for e in others}
    assert ("POST", "realtime") in kinds and ("GET", "realtime") in kinds and \
        ("GET", "api") in kinds, kinds
    # The same seen on the wire: the key's bytes only in claims requests,
    # and the tokens short-lived.
    wire = watched_proxy.requests_list()
    assert wire
    assert all(p == CLAIMS for _, p, h in wire if h[":saw-watched"]), \
        [(meth, p) for meth, p, h in wire if h[":saw-watched"]]
    for _, p, h in wire:
        if p != CLAIMS:
            c = h[":claims"]
            assert 0 < c["exp"] - c["iat"] <= 15 * 60, c
            assert c["exp"] > time.time()
            assert c["pub"] is True and c["sub"] == server.env_id
    # Only what each request needs: a lookup cannot be turned into a send.
    wrong = [(e["method"], e["path"], e["scopes"]) for e in others
             if e["scopes"] != [needed_scope(e["method"], e["path"])]]
    assert wrong == [], wrong


def test_a_public_token_is_used_as_given_and_never_exchanged(mount_factory, server, run,
                                                              watched_proxy):
    token = server.mint([f"read:runs:{run}", f"write:inputStreams:{run}"])
    mark = len(server.request_log_entries())
    m = mount_factory(api_url=watched_proxy.url, key=None, token=token)
    exercise(m, server, run)
    entries = server.request_log_entries()[mark:]
    assert entries and {e["auth"] for e in entries} == {"jwt"}
    assert all(e["path"] != CLAIMS for e in entries)


# ------------------------------------------------ other users

def as_nobody(script: str, env: dict) -> subprocess.CompletedProcess:
    return sh(f"exec setpriv --reuid=nobody --regid=nogroup --clear-groups "
              f"--inh-caps=-all bash -c '{script}'", env=env)


def test_other_users_cannot_use_the_mount(mount, server, run):
    path = mount.input(run, "private")
    assert sh('echo 1 > "$S"', env={"S": path}).returncode == 0
    mark = len(server.request_log_entries())
    env = {"M": mount.mnt, "S": path}
    checks = {
        "ls": 'ls "$M"',
        "stat": 'stat "$S"',
        "read": 'head -c1 "$S"',
        "write": 'echo 2 > "$S"',
        "stats": 'cat "$M/.triggerfs-stats"',
    }
    for what, script in checks.items():
        r = as_nobody(script, env)
        assert r.returncode != 0, what
        assert b"Permission denied" in r.stderr, (what, r.stderr)
        assert r.stdout == b"", what
    assert as_nobody("id -un", {}).stdout == b"nobody\n"     # the checks ran as nobody
    assert server.request_log_entries()[mark:] == []
    assert [v for _, v in server.records(run, "private")] == [1]
    # The owner still can.
    assert sorted(os.listdir(mount.path())) == ["runs", "waitpoints"]


# ------------------------------------------------ plain http

@pytest.mark.parametrize("url", ["http://10.255.255.1:1", "http://192.0.2.1:8080/"])
def test_plain_http_to_a_remote_host_is_refused_at_startup(mount_factory, server, url):
    m = mount_factory(api_url=url, start=False)
    t0 = time.monotonic()
    assert m.run_to_exit() != 0
    assert time.monotonic() - t0 < 2 * SLACK      # no connection was tried
    err = m.stderr()
    assert "http://" in err and "not loopback" in err, err
    assert server.secret_key not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_plain_http_to_loopback_is_allowed(mount_factory, server, run, host):
    m = mount_factory(api_url=f"http://{host}:{server.port}")
    assert sh('echo 1 > "$S"', env={"S": m.input(run, "lo")}).returncode == 0
    assert [v for _, v in server.records(run, "lo")] == [1]


# ------------------------------------------------ test output

INNER_TEST = '''
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import server, run, make_server  # noqa: F401
from mount_ctl import mount_factory, sh  # noqa: F401


def test_fails_with_everything_in_its_report(mount_factory, server, run):
    with open(os.environ["KEY_OUT"], "w") as f:
        f.write(server.secret_key)
    m = mount_factory(options=["debug"])
    sh('echo 1 > "$S"; cat "$S" & sleep 0.2; kill %1', env={{"S": m.input(run, "x")}})
    m.proc.send_signal(signal.SIGKILL)      # teardown reports the crash
    print(m.argv(), m.stderr(), server.log_tail(100), server.request_log_entries())
    assert False, (m.argv(), m.stderr(), server.log_tail(100))
'''


def test_failing_tests_do_not_print_credentials(tmp_path):
    """The harness's own failure reports (daemon stderr, server log, request
    log, argv) carry no credential, even with -s and full tracebacks."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER_TEST.format(tests=os.path.dirname(os.path.abspath(__file__))))
    key_out = tmp_path / "key"
    r = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-s", "-v", "-rA", "--tb=long",
                        "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
                        str(inner)], env={**os.environ, "KEY_OUT": str(key_out)},
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and b"1 failed" in out and b"1 error" in out, out[-3000:]
    assert b"unique:" in out            # the daemon's debug trace is in the report
    key = key_out.read_bytes()
    assert key.startswith(b"tr_dev_")
    assert key not in out and not JWT_RE.search(out)
