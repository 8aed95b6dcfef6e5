"""The mount against what the real Trigger.dev server does beyond the
first description of its API: v1 (Redis-backed) runs, additional API keys,
a server clock off by ten minutes, the headers every request carries, a
separate stream URL."""

from __future__ import annotations

import re
import subprocess

import pytest

from devserver_ctl import DevServer
from faultproxy import FaultProxy
from mount_ctl import SLACK, Lines, kill_group, mount_factory, sh, spawn_sh  # noqa: F401

V1 = {"x-trigger-realtime-streams-version": "v1"}


def trigger_v1(srv: DevServer) -> str:
    """A run stamped for v1 streams, as a self-hosted server does by default."""
    status, _, body = srv.api("POST", "/api/v1/tasks/demo/trigger", {"payload": None},
                              headers=V1)
    assert status == 200, (status, body)
    return body["id"]


def stream_gets(proxy: FaultProxy, run: str, stream: str) -> list:
    path = DevServer.stream_path(run, stream)
    return [h for m, p, h in proxy.requests_list() if m == "GET" and p == path]


@pytest.fixture
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()


def test_a_v1_run_reads_like_a_v2_one(server, mount_factory, proxy):
    run = trigger_v1(server)
    m = mount_factory(api_url=proxy.url)
    reader = spawn_sh('exec cat "$S"', env={"S": m.input(run, "s")})
    try:
        lines = Lines(reader.stdout.fileno())
        m.wait_parked(1)
        got = []
        values = [{"i": 0}, "text", 0.5, [1, 2], None]
        for cut in range(4):
            for v in values:
                server.send(run, "s", v)
            got += [lines.next()[0] for _ in values]
            if cut < 3:     # the connection dies under the reader
                assert proxy.cut_all() >= 1
                proxy.wait(lambda: len(stream_gets(proxy, run, "s")) == cut + 2,
                           10 * SLACK, "the reader to reconnect")
        want = ['{"i":0}', '"text"', "0.5", "[1,2]", "null"] * 4
        assert got == want
        assert lines.quiet(0.5) and reader.poll() is None
        # Written through the mount too, and the whole log, in order.
        assert sh('echo \'{"w":1}\' > "$S"', env={"S": m.input(run, "s")}).returncode == 0
        assert lines.next()[0] == '{"w":1}'
        log = sh('cat "$L"', env={"L": m.log(run, "s")}).stdout
        assert log.decode().splitlines() == want + ['{"w":1}']
        server.cancel(run)
        assert reader.wait(timeout=15 * SLACK) == 0
    finally:
        kill_group(reader)
    # v1 framing: each reconnect resumed after the Redis id of the last
    # record delivered (4, 9, 14: the fifth of each round).
    ids = [h.get("last-event-id") for h in stream_gets(proxy, run, "s")[1:4]]
    assert [re.fullmatch(r"\d+-(\d+)", i or "")[1] for i in ids] == ["4", "9", "14"], ids


def test_an_additional_key_gets_its_tokens_from_the_api(make_server, mount_factory):
    srv = make_server()
    extra = (srv.dir / "dev.db.additional-key").read_text().strip()
    assert re.fullmatch(r"tr_dev_sk_[A-Za-z0-9]{24}", extra)
    run, _ = srv.trigger_run()
    mark = len(srv.request_log_entries())
    m = mount_factory(api_url=srv.url, key=extra)
    reader = spawn_sh('head -n2 "$S"', env={"S": m.input(run, "s")})
    try:
        m.wait_parked(1)
        assert sh('printf \'1\\n2\\n\' > "$S"', env={"S": m.input(run, "s")}).returncode == 0
        out, _ = reader.communicate(timeout=10 * SLACK)
        assert out == b"1\n2\n"
    finally:
        kill_group(reader)
    log = srv.request_log_entries()[mark:]
    keyed = sorted({e["path"] for e in log if e["auth"] != "jwt"})
    assert keyed == ["/api/v1/auth/public-tokens"], keyed
    assert all(e["status"] == 200 for e in log), [e for e in log if e["status"] != 200]


@pytest.mark.parametrize("offset", ["600", "-600"])
def test_a_server_clock_ten_minutes_off(make_server, mount_factory, offset):
    srv = make_server(args=("--clock-offset", offset))
    run, _ = srv.trigger_run()
    m = mount_factory(api_url=srv.url, key=srv.secret_key)
    reader = spawn_sh('exec cat "$S"', env={"S": m.input(run, "s")})
    try:
        lines = Lines(reader.stdout.fileno())
        m.wait_parked(1)
        for i in range(3):
            assert sh(f'echo {i} > "$S"', env={"S": m.input(run, "s")}).returncode == 0
        assert [lines.next()[0] for _ in range(3)] == ["0", "1", "2"]
        assert reader.poll() is None
    finally:
        kill_group(reader)
    # Tokens minted on the server's clock: none refused.
    assert [e for e in srv.request_log_entries() if e["status"] == 401] == []


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
