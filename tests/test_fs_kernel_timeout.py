"""Kernels from 6.14 may carry a FUSE request timeout: a request left
unanswered past it aborts the whole mount. triggerfs reads the timeout at
start and answers parked reads with EINTR before it expires; coreutils and
Python retry such a read, so a blocked `head` simply goes on waiting."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mount_ctl import Lines, SLACK, kill_group, mount_factory, mounted, spawn_sh  # noqa: F401

SYSCTL = Path("/proc/sys/fs/fuse/default_request_timeout")
KERNEL_TIMEOUT = 2  # seconds; the daemon answers parked reads after 1.5 s
# The kernel looks for expired requests every 15 s (FUSE_TIMEOUT_TIMER_FREQ):
# a mount that would be aborted is aborted by then.
KERNEL_CHECK_PERIOD = 15


@pytest.fixture
def kernel_request_timeout():
    if not SYSCTL.exists() or not os.access(SYSCTL, os.W_OK):
        pytest.fail(f"{SYSCTL} is needed (Linux >= 6.14, root) for this test")
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text(str(KERNEL_TIMEOUT))
    try:
        yield KERNEL_TIMEOUT
    finally:
        SYSCTL.write_text(old)


def test_blocked_read_outlives_the_kernel_request_timeout(kernel_request_timeout,
                                                          mount_factory, server, run):
    m = mount_factory()
    S = m.input(run, "approval")
    head = spawn_sh('exec head -n1 "$S"', env={"S": S})
    try:
        m.wait_parked(1)
        lines = Lines(head.stdout.fileno())
        # Past the kernel's timeout the mount would be aborted (ENOTCONN for
        # everything) had the parked read not been answered in time.
        until = time.monotonic() + kernel_request_timeout + KERNEL_CHECK_PERIOD + 1
        while time.monotonic() < until:
            assert head.poll() is None, head.stderr.read().decode()
            assert lines.quiet(0.2)
        assert mounted(m.mnt)
        assert os.stat(S).st_size == 0
        # The read was answered with EINTR and retried: it parks again...
        m.wait_parked(1)
        # ... and still gets the value.
        server.send(run, "approval", {"ok": True})
        line, _ = lines.next(timeout=5 * SLACK)
        assert line == '{"ok":true}'
        assert head.wait(5 * SLACK) == 0
    finally:
        kill_group(head)
