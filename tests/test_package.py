"""The Debian package: scripts/package builds it from this tree with the
ordinary tools, lintian finds no error, and once installed triggerfs is a
filesystem like any other (mount -t fuse.triggerfs, an fstab line, `man
triggerfs`, the systemd unit); then the package is removed.

It installs on this machine: one such test at a time (a lock), and
whatever happens the mount is undone and the package removed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from devserver_ctl import wait_for
from mount_ctl import CRED_VARS, ROOT, SLACK, lazy_unmount, mounted, sh, write_secret

LOCK = "/run/lock/triggerfs-package-test.lock"
BIN = "/usr/bin/triggerfs"
UNIT = "/lib/systemd/system/triggerfs@.service"
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


@contextmanager
def machine_lock() -> Iterator[None]:
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def cmd(argv: list, timeout: float = 120, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=env)


def clean_env() -> dict:
    """mount(8) as an administrator or boot would run it: no credentials
    in the environment, the daemon found on the system's PATH."""
    env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def mounts_on(path: str) -> list:
    """[(fstype, source)] of every mount on `path`."""
    want = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == want:
                out.append(tuple(right.split()[:2]))
    return out


def daemons_for(mnt: str) -> list:
    """Pids of installed triggerfs processes serving `mnt`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if exe == BIN and mnt.encode() in argv:
            pids.append(int(pid))
    return pids


def build_package(out: str) -> str:
    r = cmd([ROOT / "scripts" / "package", out], timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    deb = r.stdout.strip().splitlines()[-1]
    assert deb.endswith(".deb") and os.path.isfile(deb), r.stdout
    return deb


def check_package_metadata(deb: str) -> None:
    depends = cmd(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    names = [d.strip().split()[0] for d in depends.split(",")]
    assert names[0] == "fuse3", depends
    # The libraries come from dpkg-shlibdeps (${shlibs:Depends}), not by hand.
    assert {"libc6", "libfuse3-3", "libcurl4", "libjansson4", "libjwt0",
            "libsystemd0"} <= set(names), depends
    r = cmd(["lintian", "--fail-on", "error", deb], timeout=300)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert r.returncode == 0 and not errors, r.stdout + r.stderr


def check_installed_files() -> None:
    assert os.access(BIN, os.X_OK)
    assert cmd(["man", "-w", "triggerfs"]).stdout.strip() == "/usr/share/man/man1/triggerfs.1.gz"
    page = cmd(["man", "triggerfs"], env=dict(os.environ, MANWIDTH="80")).stdout
    assert "FSTAB" in page and "SYSTEMD" in page
    assert os.path.isfile("/usr/share/doc/triggerfs/README.md.gz")
    assert os.path.isfile(UNIT)
    r = cmd(["systemd-analyze", "verify", UNIT], timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def unmount_and_wait(mnt: str) -> None:
    pids = daemons_for(mnt)
    assert len(pids) == 1, pids
    r = cmd(["umount", mnt])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{pids[0]}"), 10 * SLACK,
             what="the daemon to exit after umount")
    assert not mounted(mnt)


def use(mnt: str, server, run_id: str, stream: str) -> None:
    """A send through the mount, read back through it and from the server."""
    value = f'{{"via":"{stream}"}}'
    r = sh('echo "$V" > "$F" && head -n1 "$F"',
           env={"F": os.path.join(mnt, "runs", run_id, "input", stream), "V": value})
    assert (r.returncode, r.stdout.decode()) == (0, value + "\n"), r.stderr
    assert [v for _, v in server.records(run_id, stream)] == [{"via": stream}]


def test_the_package_builds_installs_mounts_and_is_removed(server, run, tmp_path):
    key = write_secret(str(tmp_path), "key", server.secret_key)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    with machine_lock():
        deb = build_package(str(tmp_path / "deb"))
        check_package_metadata(deb)
        r = cmd(APT + ["install", "--reinstall", "--no-install-recommends", deb], timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            check_installed_files()

            # mount(8), as an administrator types it.
            r = cmd(["mount", "-t", "fuse.triggerfs", server.url, mnt,
                     "-o", f"secret_key_file={key},_netdev"], env=clean_env())
            assert r.returncode == 0, r.stderr
            assert mounts_on(mnt) == [("fuse.triggerfs", server.url)]
            use(mnt, server, run, "mount")
            unmount_and_wait(mnt)

            # The same as an fstab line (mount -T reads another fstab).
            fstab = tmp_path / "fstab"
            fstab.write_text(f"{server.url} {mnt} fuse.triggerfs "
                             f"secret_key_file={key},_netdev,nofail,noauto 0 0\n")
            r = cmd(["mount", "-T", fstab, mnt], env=clean_env())
            assert r.returncode == 0, r.stderr
            use(mnt, server, run, "fstab")
            # "mount -a" sees the line is mounted (same source): no second mount.
            fstab.write_text(fstab.read_text().replace(",noauto", ""))
            r = cmd(["mount", "-a", "-T", fstab], env=clean_env())
            assert r.returncode == 0, r.stderr
            assert mounts_on(mnt) == [("fuse.triggerfs", server.url)]
            unmount_and_wait(mnt)
        finally:
            if mounted(mnt):
                lazy_unmount(mnt)
            for pid in daemons_for(mnt):
                os.kill(pid, 9)
            r = cmd(APT + ["remove", "triggerfs"], timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(BIN) and not os.path.exists(UNIT)
