"""Running where there is no CAP_SYS_ADMIN on the host, as the README's
"In containers and inside tasks" says: in an unprivileged user namespace
(unshare -Urm, what rootless containers do) triggerfs mounts, serves
sends and reads, and unmounts, and the host never sees the mount."""

from __future__ import annotations

import os
import subprocess

from mount_ctl import (CRED_VARS, DAEMON, SLACK, kill_group, mounted, sanitizer_report,
                       write_secret)

# Inside the namespace: mount in the foreground, wait for the mount (with a
# deadline), send and read back, unmount, and pass on the daemon's status.
SCRIPT = r'''
set -u
"$TFS" -f "$URL" "$MNT" -o "secret_key_file=$KEY" 2>"$LOG" &
pid=$!
deadline=$((SECONDS + 20))
until grep -q " $MNT .* - fuse.triggerfs " /proc/self/mountinfo; do
  kill -0 $pid 2>/dev/null || { echo "daemon exited"; exit 1; }
  ((SECONDS < deadline)) || { echo "not mounted"; kill $pid; exit 1; }
  sleep 0.01
done
echo "mounted"
echo '{"in":"namespace"}' > "$MNT/runs/$RUN/input/ns" || echo "send failed"
head -n1 "$MNT/runs/$RUN/input/ns"
umount "$MNT"
wait $pid
echo "daemon exit $?"
'''


def test_an_unprivileged_user_namespace_mounts_it(server, run, tmp_path):
    key = write_secret(str(tmp_path), "key", server.secret_key)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
    env.update(TFS=str(DAEMON), URL=server.url, MNT=str(mnt), KEY=key, RUN=run,
               LOG=str(tmp_path / "triggerfs.log"))
    # The namespace's root has every capability there and none on the host.
    proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount",
                             "--propagation", "private", "bash", "-c", SCRIPT],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60 * SLACK)
    finally:
        kill_group(proc)     # the daemon too, were the script to hang
    log = (tmp_path / "triggerfs.log").read_text()
    assert sanitizer_report(log) is None, log
    assert (proc.returncode, out.splitlines()) == \
        (0, ["mounted", '{"in":"namespace"}', "daemon exit 0"]), out + log
    assert [v for _, v in server.records(run, "ns")] == [{"in": "namespace"}]
    assert not mounted(str(mnt))
