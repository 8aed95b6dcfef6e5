"""Shared fixtures: a local API server for the whole session, a fresh run
per test, and a factory for tests that need their own server (kill -9,
restarts, another key)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# A suite started in the background by a non-interactive shell (`.ci/run &`)
# inherits SIGINT ignored, and so would every process a test starts: a
# `cat` interrupted with SIGINT would never end, nor would run-local's
# Ctrl-C.  A handler here is reset to the default in every child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from devserver_ctl import DevServer  # noqa: E402


@pytest.fixture(scope="session")
def server():
    srv = DevServer().start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def run(server):
    """A run triggered for this test (EXECUTING)."""
    run_id, _ = server.trigger_run()
    return run_id


@pytest.fixture
def make_server():
    """make_server(**DevServer kwargs) -> a started server closed after the test."""
    servers = []

    def make(**kwargs) -> DevServer:
        srv = DevServer(**kwargs)
        servers.append(srv)
        return srv.start()

    try:
        yield make
    finally:
        for srv in servers:
            srv.close()
