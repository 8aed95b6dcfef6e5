"""scripts/run-local as a new user meets it: it mounts a demo run, prints
the export lines that point trigger-cli at the same server (without
printing the key), needs no npm, and the README tour works in one
terminal (nothing left blocked)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time

from mount_ctl import ROOT, SLACK, mounted, sh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_local_prints_exports_and_the_tour_works_in_one_terminal():
    tmp = tempfile.mkdtemp(prefix="triggerfs-runlocal-")
    mnt, state = os.path.join(tmp, "mnt"), os.path.join(tmp, "state")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRIGGER_SECRET_KEY", "TRIGGER_ACCESS_TOKEN", "TRIGGER_API_URL")}
    # A plain PATH; run-local skips the SDK install (npm), which it does not use.
    env.update(PORT=str(free_port()), TRIGGERFS_STATE=state,
               PATH="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin")
    proc = subprocess.Popen([str(ROOT / "scripts" / "run-local"), mnt], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 120 * SLACK
        while b"Ctrl-C here" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, \
                (out, proc.stderr.read() if proc.poll() is not None else b"")
            out += os.read(proc.stdout.fileno(), 4096)
        text = out.decode()
        run = re.search(r"demo run: (run_\w+)", text).group(1)
        exports = re.findall(r"^  (export .*)$", text, re.M)
        assert [e.split("=")[0] for e in exports] == \
            ["export TRIGGER_API_URL", "export TRIGGER_SECRET_KEY"], text
        with open(os.path.join(state, "dev.db.key")) as f:
            assert f.read().strip() not in text           # the key is not printed
        assert mounted(mnt)
        # trigger-cli, pointed by those lines, sees the demo run.
        r = sh("\n".join(exports) + f'\n"$CLI" get-run {run}',
               env={"CLI": str(ROOT / "build" / "client" / "trigger-cli")})
        assert r.returncode == 0 and run.encode() in r.stdout, r.stderr
        # The README tour, in one shell: nothing stays blocked.
        tour = r'''
            R=$MNT/runs/$RUN
            echo '{"text":"hello"}' > $R/input/chat
            jq -n '{approved: true}' > $R/input/approval
            [ -s $R/input/approval ] && echo waiting
            head -n1 $R/input/approval
            timeout 3 head -n1 $R/input/approval || echo none
            cat $R/log/chat
            echo 'nope' > $R/input/chat || echo refused
        '''
        r = sh(tour, env={"MNT": mnt, "RUN": run}, timeout=30 * SLACK)
        assert r.stdout.decode() == ('waiting\n{"approved":true}\nnone\n'
                                     '{"text":"hello"}\nrefused\n'), r.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if mounted(mnt):    # never leave a mount behind, even failing
                subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
                raise AssertionError("run-local left its mount; triggerfs.log:\n" +
                                     open(os.path.join(state, "triggerfs.log")).read())
    assert not mounted(mnt)
