"""The command line mount(8) and fstab give a FUSE helper:
`triggerfs API_URL MOUNTPOINT -o OPTIONS`, options that mean nothing to a
FUSE daemon among them (mount -t fuse.triggerfs through the installed
package is in test_package.py)."""

from __future__ import annotations

import os

from mount_ctl import Mount, mount_factory, mounted, sh  # noqa: F401

# What fstab lines, mount(8) and systemd put in -o (mount.fuse3 drops some
# of them; a direct call or a unit may not).
MOUNT_WORDS = ("rw,dev,suid,exec,async,nodev,nosuid,noexec,_netdev,auto,noauto,user,nouser,"
               "users,owner,group,nofail,defaults,comment=systemd.automount,"
               "x-systemd.automount,x-systemd.mount-timeout=30,x-systemd.requires=network.target")


class SourceMount(Mount):
    """A mount started as mount(8) starts a FUSE helper: the source (the
    API URL) first, then the mount point."""

    def __init__(self, source: str, **kw):
        super().__init__(None, **kw)
        self.source = source

    def argv(self) -> list:
        argv = super().argv()
        return argv[:-1] + [self.source, argv[-1]]


def mountinfo(path: str) -> tuple:
    """(fstype, source) of the mount on `path`."""
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == want:
                fstype, source = right.split()[:2]
                return fstype, source
    raise AssertionError(f"{path} is not mounted")


def start(mounts: list, m: Mount) -> Mount:
    mounts.append(m)
    return m.start()


def stop_all(mounts: list) -> None:
    problems = []
    for m in mounts:
        problems += m.stop()
    assert not problems, "\n".join(problems)


def test_the_api_url_as_first_argument_with_mount_options(server, run):
    mounts: list = []
    try:
        m = start(mounts, SourceMount(server.url, key=server.secret_key,
                                      options=[MOUNT_WORDS]))
        # The source in mountinfo is the one fstab has: that is how
        # "mount -a" sees the line is mounted already.
        assert mountinfo(m.mnt) == ("fuse.triggerfs", server.url)
        r = sh('echo \'{"via":"fstab"}\' > "$F" && head -n1 "$F"', env={"F": m.input(run, "s")})
        assert (r.returncode, r.stdout) == (0, b'{"via":"fstab"}\n'), r.stderr
        assert [v for _, v in server.records(run, "s")] == [{"via": "fstab"}]
    finally:
        stop_all(mounts)


def test_source_triggerfs_means_the_default_url(server, run):
    mounts: list = []
    try:
        m = start(mounts, SourceMount("triggerfs", key=server.secret_key,
                                      env={"TRIGGER_API_URL": server.url}))
        assert mountinfo(m.mnt) == ("fuse.triggerfs", "triggerfs")
        assert run in os.listdir(m.path("runs"))
    finally:
        stop_all(mounts)


def test_a_source_with_a_comma_is_kept_whole(server, run):
    """fsname= is escaped: a comma in the URL does not split the options."""
    mounts: list = []
    try:
        url = server.url + "/a,b"
        m = start(mounts, SourceMount(url, key=server.secret_key))
        assert mountinfo(m.mnt)[1] == url
    finally:
        stop_all(mounts)


def assert_refused(m: Mount, words: str) -> None:
    """The daemon exits non-zero saying `words`, and nothing is mounted."""
    try:
        assert m.run_to_exit() != 0
        assert words in m.stderr()
        assert not mounted(m.mnt)
    finally:
        assert m.stop() == []


def test_the_api_url_given_twice_is_refused(server):
    m = SourceMount(server.url, key=server.secret_key, options=[f"api_url={server.url}"])
    assert_refused(m, "the API URL is given twice")


def test_a_third_argument_is_refused(server):
    m = SourceMount(server.url, key=server.secret_key)
    m.argv = lambda: SourceMount.argv(m) + ["/tmp/elsewhere"]
    assert_refused(m, "unexpected argument /tmp/elsewhere")


def test_a_relative_path_as_source_is_not_taken_for_a_url(server):
    assert_refused(SourceMount("some/dir", key=server.secret_key),
                   "API URL is not an absolute http(s):// URL")
