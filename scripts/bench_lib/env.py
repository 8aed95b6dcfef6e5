"""The benchmark's world: one local API server, mounts of triggerfs, the
helper programs, and what /proc says about a process.

Every process the benchmark starts is a Child in its own process group and
is registered with the Bench, so that cleanup() ends exactly those groups
and unmounts every mount, whatever failed."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "tests" / "sdk"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_LISTENING = re.compile(r"devserver: listening on (http://127\.0\.0\.1:\d+)")


class BenchError(Exception):
    pass


def wait_for(cond: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.005) -> Any:
    """Poll cond until it returns a true value; BenchError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ---- /proc -----------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runtime_s(pid: int) -> float:
    """CPU time of a process's live threads from the scheduler, in ns
    resolution (utime/stime count 10 ms ticks: too coarse for the short
    windows a server's share of a release is taken over)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass            # the thread ended meanwhile
    return total / 1e9


def loadavg() -> float:
    """The 1-minute load average: other work on the machine skews timings."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def proc_status(pid: int) -> dict:
    """VmRSS in bytes and Threads of a process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                out["rss"] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out["threads"] = int(value)
    return out


# ---- child processes -------------------------------------------------------

class Child:
    """A process in its own process group; its stdout lines arrive on a
    queue (read by a thread), its stderr goes to a log file."""

    def __init__(self, argv: list, env: dict, log: Path, stdin: bool = False,
                 cwd: Optional[Path] = None):
        self.name = Path(argv[0]).name
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                start_new_session=True, text=True)
        self.pid = self.proc.pid
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float, what: str) -> str:
        """The next stdout line; BenchError on timeout or exit."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no {what} after {timeout:g}s") from None
        if line is None:
            self.proc.wait()
            raise BenchError(f"{self.name} exited ({self.proc.returncode}) before "
                             f"{what}: {self.log_tail()}")
        return line

    def expect(self, prefix: str, timeout: float) -> str:
        line = self.line(timeout, repr(prefix))
        if not line.startswith(prefix):
            raise BenchError(f"{self.name}: expected {prefix!r}, got {line[:200]!r}")
        return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict:
        """Wait for the end of output and the exit; the last stdout line as
        JSON."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"{self.name}: no result after {timeout:g}s") from None
            if line is None:
                break
            last = line
        if self.wait(max(1.0, deadline - time.monotonic())) != 0:
            raise BenchError(f"{self.name} failed ({self.proc.returncode}): "
                             f"{self.log_tail()}")
        if last is None:
            raise BenchError(f"{self.name} printed nothing")
        return json.loads(last)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} still running after {timeout:g}s") from None

    def stop(self) -> None:
        """End the process group this Child started (by its id)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])


# ---- mounts ----------------------------------------------------------------

class Mount:
    def __init__(self, path: Path, daemon: Child):
        self.path = path
        self.daemon = daemon
        self.pid = daemon.pid

    def stream(self, run: str, stream: str, kind: str = "input") -> Path:
        return self.path / "runs" / run / kind / stream

    @property
    def stats_path(self) -> Path:
        return self.path / ".triggerfs-stats"

    def stats(self) -> dict:
        with open(self.stats_path) as f:
            return json.loads(f.read())

    def wait_parked(self, n: int, timeout: float) -> None:
        wait_for(lambda: self.stats()["parked_reads"] >= n, timeout,
                 f"{n} parked reads", interval=0.02)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def runtime_s(self) -> float:
        return proc_runtime_s(self.pid)

    def status(self) -> dict:
        return proc_status(self.pid)


# ---- the bench -------------------------------------------------------------

class Bench:
    """One local server for the whole run, the build's programs, a scratch
    directory, and every child and mount to clean up."""

    def __init__(self, build: Path, keep: bool = False, verbose: bool = False):
        self.build = build
        self.keep = keep
        self.verbose = verbose
        self.tmp = Path(tempfile.mkdtemp(prefix="triggerfs-bench."))
        self.children: list = []
        self.mounts: list = []
        self.server: Optional[Child] = None
        self.env: dict = {}
        self.url = ""

    # programs
    def prog(self, rel: str) -> str:
        path = self.build / rel
        if not os.access(path, os.X_OK):
            raise BenchError(f"{path} is missing: build first (meson compile -C {self.build})")
        return str(path)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"bench: {msg}", flush=True)

    def spawn(self, argv: list, name: str, stdin: bool = False,
              cwd: Optional[Path] = None, env: Optional[dict] = None) -> Child:
        child = Child(argv, env or self.env, self.tmp / f"{name}.log", stdin=stdin, cwd=cwd)
        self.children.append(child)
        return child

    def run(self, argv: list, name: str, timeout: float,
            env: Optional[dict] = None, cwd: Optional[Path] = None) -> dict:
        """Run a helper to its end; its last stdout line as JSON."""
        child = self.spawn(argv, name, env=env, cwd=cwd)
        try:
            return child.result(timeout)
        finally:
            child.stop()

    def shell(self, script: str, args: list, name: str, timeout: float) -> None:
        """An ordinary shell command line (what a user would type)."""
        child = self.spawn(["sh", "-c", script, "sh", *args], name)
        try:
            if child.wait(timeout) != 0:
                raise BenchError(f"{script!r} failed: {child.log_tail()}")
        finally:
            child.stop()

    # the server
    def start_server(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TRIGGER_")}
        db = self.tmp / "devserver.db"
        self.server = self.spawn([str(ROOT / "scripts" / "devserver"), "--port", "0",
                                  "--db", str(db), "--quiet", "--no-fsync"],
                                 "devserver", env=env)
        line = self.server.line(30, "listening line")
        m = _LISTENING.search(line)
        if not m:
            raise BenchError(f"devserver said {line!r}")
        self.url = m.group(1)
        key = (self.tmp / "devserver.db.key").read_text().strip()
        self.env = dict(env, TRIGGER_API_URL=self.url, TRIGGER_SECRET_KEY=key)

    def server_cpu_s(self) -> float:
        assert self.server is not None
        return proc_runtime_s(self.server.pid)

    def make_runs(self, n: int) -> tuple:
        """n new runs: (their ids, a file listing them)."""
        child = self.spawn([self.prog("bench/bench-direct"), "runs", str(n)], "runs")
        ids = []
        try:
            while len(ids) < n:
                ids.append(child.line(60, "run id"))
            child.wait(30)
        finally:
            child.stop()
        path = self.tmp / f"runs-{n}-{time.monotonic_ns()}.txt"
        path.write_text("\n".join(ids) + "\n")
        return ids, path

    def records_file(self, n: int) -> Path:
        """n records of about 100 bytes each, one JSON line each."""
        path = self.tmp / f"records-{n}.jsonl"
        if not path.exists():
            with open(path, "w") as f:
                for i in range(n):
                    f.write('{"i":%d,"msg":"%s"}\n' % (i, "x" * (80 - len(str(i)))))
        return path

    @contextlib.contextmanager
    def mount(self, name: str) -> Iterator[Mount]:
        path = self.tmp / f"mnt-{name}"
        path.mkdir()
        daemon = self.spawn([self.prog("fs/triggerfs"), "-f", str(path)], f"triggerfs-{name}")
        self.mounts.append(path)
        try:
            wait_for(lambda: daemon.proc.poll() is not None or
                     (os.path.ismount(path) and (path / ".triggerfs-stats").exists()),
                     15, f"the mount at {path}")
            if daemon.proc.poll() is not None:
                raise BenchError(f"triggerfs exited: {daemon.log_tail()}")
            yield Mount(path, daemon)
        finally:
            self.unmount(path)
            try:
                daemon.wait(10)
            except BenchError:
                daemon.stop()

    def unmount(self, path: Path) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if path in self.mounts:
            self.mounts.remove(path)

    def cleanup(self) -> None:
        for path in list(self.mounts):
            self.unmount(path)
        for child in reversed(self.children):
            child.stop()
        if self.keep:
            print(f"bench: logs kept in {self.tmp}")
        else:
            for path in self.tmp.glob("mnt-*"):
                with contextlib.suppress(OSError):
                    path.rmdir()
            shutil.rmtree(self.tmp, ignore_errors=True)
