"""The mount and the client against what the real Trigger.dev server
expects beyond the first description of its API: the headers every request
carries, a separate stream URL, v2 streams asked for at trigger."""

from __future__ import annotations

import subprocess

import pytest

from devserver_ctl import DevServer
from faultproxy import FaultProxy
from mount_ctl import mount_factory, sh  # noqa: F401

@pytest.fixture
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()


def test_every_request_names_the_api_version_and_the_branch(server, mount_factory, proxy):
    run, _ = server.trigger_run()
    m = mount_factory(api_url=proxy.url, env={"TRIGGER_PREVIEW_BRANCH": "feature-x"})
    assert sh('echo 1 > "$S"; head -n1 "$L"', env={
        "S": m.input(run, "s"), "L": m.log(run, "s")}).stdout == b"1\n"
    seen = proxy.requests_list()
    assert seen
    for method, path, headers in seen:
        assert headers.get("x-trigger-api-version") == "2025-07-16", (method, path)
        assert headers.get("x-trigger-branch") == "feature-x", (method, path)


def test_streams_go_to_the_stream_url(server, mount_factory, proxy):
    run, _ = server.trigger_run()
    m = mount_factory(api_url=server.url, env={"TRIGGER_STREAM_URL": proxy.url})
    assert sh('echo 1 > "$S"; head -n1 "$L"', env={
        "S": m.input(run, "s"), "L": m.log(run, "s")}).stdout == b"1\n"
    paths = {p.split("?")[0] for _, p, _ in proxy.requests_list()}
    assert paths == {DevServer.stream_path(run, "s")}, paths


def test_trigger_asks_for_v2_streams(server, proxy):
    from test_client import CLI, cli_env
    env = cli_env(server, None, {"TRIGGER_API_URL": proxy.url})
    proc = subprocess.run([str(CLI), "trigger", "demo", "{}"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    triggers = [h for m, p, h in proxy.requests_list() if p == "/api/v1/tasks/demo/trigger"]
    assert [h.get("x-trigger-realtime-streams-version") for h in triggers] == ["v2"]
    run = proc.stdout.strip()
    assert server.api("GET", f"/api/v3/runs/{run}")[0] == 200
