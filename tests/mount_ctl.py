"""Drive real triggerfs mounts from tests.

    m = Mount(server.url, key=server.secret_key).start()
    m.input(run, "chat")          # MNT/runs/<run>/input/chat
    m.stats()["parked_reads"]     # MNT/.triggerfs-stats
    m.wait_log("has finished")
    m.stop()                      # unmount, reap, check exit status and sanitizers

The daemon runs in the foreground (-f) with its stderr in a file that tests
can search. Credentials reach it through its environment or a 0600 file,
never argv, and are never printed. Teardown always lazily unmounts and reaps
the daemon, whatever the test did, and fails the test if the daemon crashed
or a sanitizer reported anything.

The build comes from $TRIGGERFS_BUILD (default /work/main/build); set
TRIGGERFS_SANITIZE=1 for a sanitizer build to scale latency bounds."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import select
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest

from devserver_ctl import wait_for

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("TRIGGERFS_BUILD", str(ROOT / "build")))
DAEMON = BUILD / "fs" / "triggerfs"
SANITIZE = os.environ.get("TRIGGERFS_SANITIZE") == "1"
# Latency bounds are for the optimised build; a sanitizer build is slower.
SLACK = 10.0 if SANITIZE else 1.0
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:")
CRED_VARS = ("TRIGGER_SECRET_KEY", "TRIGGER_ACCESS_TOKEN", "TRIGGER_API_URL")


def mounted(path: str) -> bool:
    """Is `path` a mount point now (per /proc/self/mountinfo)?"""
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == want:
                return True
    return False


def lazy_unmount(path: str) -> None:
    subprocess.run(["fusermount3", "-u", "-z", path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)


def sanitizer_report(text: str) -> Optional[str]:
    """The first sanitizer report in a daemon's stderr, with some context."""
    for marker in SANITIZER_REPORTS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return None


def write_secret(directory: str, name: str, value: str, mode: int = 0o600) -> str:
    """A credential file with `mode` (created 0600 first, so it is never
    readable by others while holding the secret unless asked)."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, mode)
    return path


class Mount:
    """One triggerfs daemon on a fresh temporary mount point.

    key/token go into the daemon's environment (TRIGGER_SECRET_KEY /
    TRIGGER_ACCESS_TOKEN); `options` are extra -o values ("timeout=1s",
    "token_file=/path"); api_url is added unless None.
    `mountpoint` reuses another mount's directory (never unmounted here)."""

    def __init__(self, api_url: Optional[str], key: Optional[str] = None,
                 token: Optional[str] = None, options: Iterable[str] = (),
                 env: Optional[dict] = None, mountpoint: Optional[str] = None):
        self.api_url = api_url
        self.options = list(options)
        self.tmp = tempfile.mkdtemp(prefix="triggerfs-test-")
        self.shared_mountpoint = mountpoint is not None
        self.mnt = mountpoint or os.path.join(self.tmp, "mnt")
        if not self.shared_mountpoint:
            os.mkdir(self.mnt)
        self.stderr_path = os.path.join(self.tmp, "triggerfs.stderr")
        self.env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
        if key is not None:
            self.env["TRIGGER_SECRET_KEY"] = key
        if token is not None:
            self.env["TRIGGER_ACCESS_TOKEN"] = token
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self._stopped = False
        self._mounted = False      # start() saw it mounted
        self._expect_exit = False  # run_to_exit(): the test checks the status

    # ---- the process

    def argv(self) -> list:
        argv = [str(DAEMON), "-f"]
        if self.api_url is not None:
            argv += ["-o", f"api_url={self.api_url}"]
        for opt in self.options:
            argv += ["-o", opt]
        return argv + [self.mnt]

    def spawn(self) -> "Mount":
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, env=self.env)
        return self

    def start(self, timeout: float = 10.0 * SLACK) -> "Mount":
        """Spawn and wait until mounted; fail with the daemon's stderr if it
        exits first."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while not mounted(self.mnt):
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError(f"triggerfs exited with {rc} before mounting:\n"
                                     f"{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"triggerfs not mounted after {timeout}s:\n"
                                     f"{self.stderr()}")
            time.sleep(0.005)
        self._mounted = True
        return self

    def run_to_exit(self, timeout: float = 10.0 * SLACK) -> int:
        """For startup errors: spawn, wait for the exit status."""
        self._expect_exit = True
        self.spawn()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline or self.log_matching(r"^triggerfs: mounted "):
                raise AssertionError(f"triggerfs did not refuse to start:\n{self.stderr()}")
            time.sleep(0.005)
        self.returncode = self.proc.returncode
        return self.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.alive(), f"triggerfs is not running:\n{self.stderr()}"
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 5.0 * SLACK) -> int:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"triggerfs did not exit within {timeout}s:\n"
                                 f"{self.stderr()}") from None
        return self.returncode

    def stop(self) -> list:
        """Unmount (lazily: blocked readers must not hang teardown), then
        reap the daemon: it should exit by itself; SIGTERM, then SIGKILL if
        not. Returns the problems found (empty when all is well)."""
        if self._stopped:
            return []
        self._stopped = True
        problems = []
        ours = self._mounted or not self.shared_mountpoint
        if ours and mounted(self.mnt):
            lazy_unmount(self.mnt)
        if self.proc is not None:
            how = "unmount"
            if not ours and self.proc.poll() is None:
                # Mounted on top of another mount's directory although it
                # should have refused: SIGTERM makes it unmount itself.
                how = "SIGTERM"
                self.proc.terminate()
            try:
                self.returncode = self.proc.wait(5 * SLACK)
            except subprocess.TimeoutExpired:
                how = "SIGTERM"
                self.proc.terminate()
                try:
                    self.returncode = self.proc.wait(5 * SLACK)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.returncode = self.proc.wait()
                    problems.append("triggerfs ignored unmount and SIGTERM: killed")
            if self.returncode != 0 and not problems and not self._expect_exit:
                problems.append(f"triggerfs exited with status {self.returncode} after {how}")
        if ours and mounted(self.mnt):
            lazy_unmount(self.mnt)
            problems.append(f"{self.mnt} was still mounted after the daemon exited")
        report = sanitizer_report(self.stderr())
        if report:
            problems.append(f"sanitizer report in triggerfs stderr:\n{report}")
        if problems:
            problems.append(f"triggerfs stderr:\n{self.stderr()[-4000:]}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems

    # ---- the log

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list:
        return self.stderr().splitlines()

    def wait_log(self, pattern: str, timeout: float = 5.0 * SLACK, start: int = 0) -> re.Match:
        """Wait for a stderr line (from line `start` on) matching `pattern`."""
        rx = re.compile(pattern)

        def find():
            for line in self.log_lines()[start:]:
                m = rx.search(line)
                if m:
                    return m
            return None
        try:
            return wait_for(find, timeout, what=f"triggerfs log line /{pattern}/")
        except AssertionError:
            raise AssertionError(f"no triggerfs log line /{pattern}/ within {timeout}s; "
                                 f"stderr:\n{self.stderr()[-3000:]}") from None

    def log_matching(self, pattern: str, start: int = 0) -> list:
        rx = re.compile(pattern)
        return [line for line in self.log_lines()[start:] if rx.search(line)]

    # ---- paths and state

    def path(self, *parts: str) -> str:
        return os.path.join(self.mnt, *parts)

    def input(self, run: str, stream: str) -> str:
        return self.path("runs", run, "input", stream)

    def log(self, run: str, stream: str) -> str:
        return self.path("runs", run, "log", stream)

    def stats(self) -> dict:
        with open(self.path(".triggerfs-stats")) as f:
            return json.loads(f.read())

    def wait_stats(self, timeout: float = 5.0 * SLACK, **want: int) -> dict:
        """Wait until every named counter has the wanted value."""
        last: dict = {}

        def ok():
            nonlocal last
            last = self.stats()
            return all(last.get(k) == v for k, v in want.items())
        try:
            wait_for(ok, timeout, what=f"stats {want}")
        except AssertionError:
            raise AssertionError(f"stats {last} never matched {want} within {timeout}s") \
                from None
        return last

    def wait_parked(self, n: int = 1, timeout: float = 5.0 * SLACK) -> None:
        """Wait until `n` reads are parked at the end of a stream."""
        self.wait_stats(timeout, parked_reads=n)


# ---------------------------------------------------------------- helpers

def sh(script: str, timeout: float = 10.0 * SLACK, env: Optional[dict] = None,
       input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """Run `bash -c script` with extra env vars (paths go in as $VARS, so no
    quoting games). Output is bytes; use .stdout.decode()."""
    full = dict(os.environ)
    full.update(env or {})
    for var in CRED_VARS:
        full.pop(var, None)
    return subprocess.run(["bash", "-c", script], env=full, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def spawn_sh(script: str, env: Optional[dict] = None, **kw: Any) -> subprocess.Popen:
    """Start `bash -c script` in its own process group (stdout piped)."""
    full = dict(os.environ)
    full.update(env or {})
    for var in CRED_VARS:
        full.pop(var, None)
    return subprocess.Popen(["bash", "-c", script], env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kw)


def blocked_cats(m: "Mount", paths: list) -> list:
    """One `cat` per path, each parked at the end of its (empty) stream."""
    procs = [spawn_sh('exec cat "$S"', env={"S": p}) for p in paths]
    try:
        m.wait_parked(len(paths))
    except BaseException:
        for p in procs:
            kill_group(p)
        raise
    return procs


def kill_group(proc: subprocess.Popen) -> None:
    """End a spawn_sh process and its children (ours only: its own group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def os_error(fn: Callable[[], Any]) -> int:
    """The errno `fn` raises (fails the test if it succeeds)."""
    try:
        result = fn()
    except OSError as e:
        return e.errno
    raise AssertionError(f"expected an OSError, got {result!r}")


def errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def mount_factory(server):
    """mount_factory(key=..., token=..., options=[...], api_url=...,
    start=True) -> a Mount (started unless start=False), stopped and
    checked after the test. Defaults: the session server, its secret key."""
    mounts: list = []
    default = object()

    def make(key: Any = default, token: Optional[str] = None, options: Iterable[str] = (),
             api_url: Any = default, env: Optional[dict] = None, start: bool = True,
             mountpoint: Optional[str] = None) -> Mount:
        if key is default:
            key = server.secret_key if token is None else None
        m = Mount(server.url if api_url is default else api_url, key=key, token=token,
                  options=options, env=env, mountpoint=mountpoint)
        mounts.append(m)
        return m.start() if start else m

    yield make
    problems = []
    for m in reversed(mounts):      # stacked mounts unwind from the top
        problems += m.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def mount(mount_factory) -> Mount:
    """A mount of the session server with its secret key."""
    return mount_factory()


class Lines:
    """Lines from a file descriptor (a child's stdout), each with the
    monotonic time it was read, with deadlines."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.eof = False

    def next(self, timeout: float = 5.0 * SLACK) -> tuple:
        """-> (line without its newline, arrival time); fails after timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                raise AssertionError(f"no line within {timeout}s (eof={self.eof}, "
                                     f"partial={self.buf[:200]!r})")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                self.eof = not chunk
                self.buf += chunk
        arrived = time.monotonic()
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(), arrived

    def quiet(self, seconds: float) -> bool:
        """True if nothing arrives for `seconds` (an asserted absence)."""
        if self.buf:
            return False
        ready, _, _ = select.select([self.fd], [], [], seconds)
        return not ready
