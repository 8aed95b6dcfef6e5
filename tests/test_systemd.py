"""systemd: readiness and shutdown through sd_notify, the test playing
systemd's part with a NOTIFY_SOCKET of its own; the shipped unit's commands
run as systemd would run them (start, stop, recovery after a crash); and
`systemd-analyze verify` on the unit."""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
from typing import Optional

from mount_ctl import (BUILD, ROOT, SLACK, lazy_unmount, mount_factory,  # noqa: F401
                       mounted, sanitizer_report, sh, write_secret)

UNIT_IN = ROOT / "systemd" / "triggerfs@.service.in"


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: a datagram socket; each message
    comes with its sender's pid (SCM_CREDENTIALS), as systemd reads it."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.seen: list = []      # (fields, pid) in arrival order

    def close(self) -> None:
        self.sock.close()

    def _recv(self, timeout: float) -> Optional[tuple]:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        msg, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        fields = dict(line.split("=", 1) for line in msg.decode().splitlines() if "=" in line)
        self.seen.append((fields, pid))
        return fields, pid

    def wait_for(self, key: str, timeout: float) -> tuple:
        """-> (fields, sender pid) of the first message setting `key`."""
        deadline = time.monotonic() + timeout
        for fields, pid in self.seen:
            if key in fields:
                return fields, pid
        while True:
            left = deadline - time.monotonic()
            got = self._recv(max(0.0, left))
            if got and key in got[0]:
                return got
            if left <= 0:
                raise AssertionError(f"no {key}= within {timeout}s; got {self.seen}")

    def drain(self) -> list:
        while self._recv(0):
            pass
        return self.seen


def send_and_read_back(mnt: str, server, run: str) -> None:
    """The mount works: a send is stored by the server and read back."""
    r = sh('echo \'{"n":1}\' > "$F" && head -n1 "$F"',
           env={"F": os.path.join(mnt, "runs", run, "input", "chat")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == '{"n":1}\n'
    assert [v for _, v in server.records(run, "chat")] == [{"n": 1}]


def test_ready_once_the_mount_answers_and_stopping_on_sigterm(mount_factory, server, run,
                                                              tmp_path):
    notes = NotifySocket(str(tmp_path))
    try:
        m = mount_factory(env={"NOTIFY_SOCKET": notes.path}, start=False)
        m.spawn()
        fields, pid = notes.wait_for("READY", 10 * SLACK)
        # Checked the moment READY=1 arrives: what systemd starts next may
        # use the mount at once.
        assert mounted(m.mnt), "READY=1 before the mount exists"
        assert run in os.listdir(m.path("runs"))
        assert fields["READY"] == "1"
        # systemd (NotifyAccess=main) hears only the process it started:
        # with -f the daemon must not notify from a forked child.
        assert pid == m.proc.pid
        assert server.url in fields.get("STATUS", "") and m.mnt in fields["STATUS"]
        send_and_read_back(m.mnt, server, run)
        assert not any("STOPPING" in f for f, _ in notes.drain())

        m.signal(signal.SIGTERM)
        fields, pid = notes.wait_for("STOPPING", 5 * SLACK)
        assert fields["STOPPING"] == "1" and pid == m.proc.pid
        assert m.wait_exit() == 0
        assert not mounted(m.mnt)
        assert sum("READY" in f for f, _ in notes.seen) == 1
    finally:
        notes.close()


def test_a_refused_start_never_says_ready(mount_factory, server, tmp_path):
    notes = NotifySocket(str(tmp_path))
    try:
        m = mount_factory(key=None, env={"NOTIFY_SOCKET": notes.path}, start=False)
        key = write_secret(m.tmp, "key", server.secret_key, 0o640)
        m.options.append(f"secret_key_file={key}")
        assert m.run_to_exit() != 0
        assert not any("READY" in f for f, _ in notes.drain())
        assert not mounted(m.mnt)
    finally:
        notes.close()


# ---------------------------------------------------------------- the unit

def unit_text(bindir: str) -> str:
    """The unit as meson configures it for a daemon in `bindir`."""
    return UNIT_IN.read_text().replace("@bindir@", bindir)


def unit_commands(text: str, instance: str, path: str, env: dict) -> dict:
    """{ExecStartPre: [(ignore_failure, argv)], ...} with %i, %f and ${VAR}
    expanded the way systemd does ("${VAR}" as a word is one word, empty
    when unset)."""
    out: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.startswith("Exec"):
            continue
        ignore = value.startswith("-")
        argv = []
        for word in shlex.split(value.lstrip("-")):
            word = word.replace("%i", instance).replace("%f", path)
            if word.startswith("${") and word.endswith("}"):
                word = env.get(word[2:-1], "")
            argv.append(word)
        out.setdefault(key, []).append((ignore, argv))
    return out


def environment_file(text: str, instance: str) -> str:
    for line in text.splitlines():
        if line.startswith("EnvironmentFile="):
            return line.split("=", 1)[1].replace("%i", instance)
    raise AssertionError("the unit has no EnvironmentFile=")


class UnitInstance:
    """One instance of triggerfs@.service run the way systemd runs it: the
    environment is only what EnvironmentFile= gives, NOTIFY_SOCKET is ours."""

    def __init__(self, text: str, mountpoint: str, conf: dict, notify: NotifySocket):
        self.mnt = mountpoint
        self.instance = subprocess.run(["systemd-escape", "--path", mountpoint],
                                       capture_output=True, text=True, check=True).stdout.strip()
        self.commands = unit_commands(text, self.instance, mountpoint, conf)
        # What systemd gives: PATH, NOTIFY_SOCKET, the EnvironmentFile's
        # variables (and the test's sanitizer settings).
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": notify.path,
                    **{k: v for k, v in os.environ.items() if k.endswith("SAN_OPTIONS")},
                    **conf}
        self.notify = notify
        self.proc: Optional[subprocess.Popen] = None
        self.stderr = os.path.join(os.path.dirname(notify.path), f"{self.instance}.log")

    def run(self, key: str) -> None:
        for ignore, argv in self.commands.get(key, []):
            r = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10 * SLACK)
            assert ignore or r.returncode == 0, (key, argv, r.stderr)

    def start(self) -> dict:
        self.run("ExecStartPre")
        (_, argv), = self.commands["ExecStart"]
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        self.notify.seen.clear()
        fields, pid = self.notify.wait_for("READY", 10 * SLACK)
        assert pid == self.proc.pid
        assert mounted(self.mnt)
        return fields

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(10 * SLACK)
        self.run("ExecStopPost")
        return rc

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if mounted(self.mnt):
            lazy_unmount(self.mnt)


def test_the_unit_starts_stops_and_recovers_from_a_crash(server, run, tmp_path):
    text = unit_text(str(BUILD / "fs"))
    assert "Type=notify" in text.splitlines()
    notes = NotifySocket(str(tmp_path))
    mnt = str(tmp_path / "mnt" / "trigger")   # ExecStartPre makes it
    key = write_secret(str(tmp_path), "key", server.secret_key)
    conf = {"API_URL": server.url, "OPTIONS": f"secret_key_file={key}"}
    unit = UnitInstance(text, mnt, conf, notes)
    assert environment_file(text, unit.instance) == f"/etc/triggerfs/{unit.instance}.conf"
    try:
        unit.start()
        send_and_read_back(mnt, server, run)
        assert unit.stop() == 0
        assert "STOPPING" in notes.wait_for("STOPPING", 5 * SLACK)[0]
        assert not mounted(mnt)

        # A crash leaves a dead mount that refuses a new one; the unit's
        # ExecStopPost clears it so that Restart=on-failure works.
        unit.start()
        assert unit.stop(signal.SIGKILL) == -signal.SIGKILL
        assert not mounted(mnt)
        unit.start()
        assert run in os.listdir(os.path.join(mnt, "runs"))
        assert unit.stop() == 0
        assert not mounted(mnt)
        with open(unit.stderr) as f:
            log = f.read()
        assert server.secret_key not in log
        assert sanitizer_report(log) is None, log
    finally:
        unit.cleanup()
        notes.close()


def test_the_unit_with_no_options_and_the_default_url_starts_the_daemon(server, tmp_path):
    """Empty OPTIONS and API_URL in the conf reach the daemon as `-o ""` and
    an empty first argument: accepted (the daemon then says what it lacks)."""
    text = unit_text(str(BUILD / "fs"))
    notes = NotifySocket(str(tmp_path))
    mnt = str(tmp_path / "mnt")
    unit = UnitInstance(text, mnt, {"API_URL": "", "OPTIONS": ""}, notes)
    try:
        unit.run("ExecStartPre")
        (_, argv), = unit.commands["ExecStart"]
        r = subprocess.run(argv, env=unit.env, capture_output=True, text=True, timeout=10 * SLACK)
        assert r.returncode != 0
        assert r.stderr.startswith("triggerfs: no credentials:"), r.stderr
        assert not mounted(mnt)
    finally:
        unit.cleanup()
        notes.close()


def test_systemd_analyze_verify_passes_on_the_unit(tmp_path):
    unit = tmp_path / "triggerfs@.service"
    unit.write_text(unit_text(str(BUILD / "fs")))
    man = tmp_path / "man" / "man1"
    man.mkdir(parents=True)
    shutil.copy(ROOT / "man" / "triggerfs.1", man)   # Documentation=man:triggerfs(1)
    env = dict(os.environ, MANPATH=str(tmp_path / "man"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], env=env,
                       capture_output=True, text=True, timeout=60)
    # Bad values are only warnings to systemd: any output is a failure.
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
