"""A real mount over TLS and HTTP/2: the local server behind nginx with a
certificate from a test CA made here (scripts/bench_lib/wan.py).  -o cafile
trusts it; without it, or with another CA, the mount refuses with one line
naming the host and the reason.  Through the same proxy: connections stay
few and none is opened for nothing when many readers come and go, and a
reader that leaves ends its request at the server at once."""

from __future__ import annotations

import re
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from devserver_ctl import wait_for
from mount_ctl import SLACK, Mount, kill_group, mount_factory, sh, spawn_sh  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_lib.wan import Link, nginx_available  # noqa: E402

pytestmark = pytest.mark.skipif(nginx_available() is not None,
                                reason=str(nginx_available()))


@pytest.fixture
def link(server, tmp_path):
    """nginx with TLS 1.3 and HTTP/2 in front of the session server (no
    added delay: these tests are about what crosses the link, not time)."""
    port = int(server.url.rsplit(":", 1)[1])
    with Link(tmp_path / "link", port, delay_ms=0) as lk:
        yield lk


def parked_heads(m: Mount, paths: list) -> list:
    """One `head -n1` per path, each waiting at the end of its stream: its
    file open and followed.  (Counted by subscriptions, not parked reads: a
    kernel FUSE request timeout, when set, answers parked reads EINTR for
    head to read again, so their count wavers.)"""
    procs = [spawn_sh('exec head -n1 "$S"', env={"S": p}) for p in paths]
    try:
        m.wait_stats(20 * SLACK, subscriptions=len(paths))
    except BaseException:
        for p in procs:
            kill_group(p)
        raise
    return procs


def refusal(m: Mount) -> str:
    assert m.run_to_exit() != 0
    lines = [ln for ln in m.stderr().splitlines() if ln.strip()]
    assert len(lines) == 1, m.stderr()
    assert "unreachable" not in lines[0], lines[0]
    return lines[0]


def test_cafile_trusts_a_private_ca(server, run, link, mount_factory):
    m = mount_factory(api_url=link.url, options=[f"cafile={link.ca_file}"])
    sh('echo \'{"via":"tls"}\' > "$F"', env={"F": m.input(run, "approve")})
    assert server.records(run, "approve") == [(0, {"via": "tls"})]
    r = sh('timeout 10 head -n1 "$F"', env={"F": m.input(run, "approve")})
    assert r.returncode == 0 and r.stdout == b'{"via":"tls"}\n', r
    # It went through nginx over HTTP/2 (the access log has the send).
    log = (link.dir / "nginx-access.log").read_text()
    assert re.search(rf"POST /realtime/v1/streams/{run}/input/approve 200", log), log


def test_without_cafile_the_mount_refuses_naming_host_and_reason(server, link):
    m = Mount(link.url, key=server.secret_key)
    line = refusal(m)
    assert f"localhost:{link.relay_port}" in line, line
    assert "certificate" in line and "cafile" in line, line


def test_another_ca_is_refused_too(server, link):
    m = Mount(link.url, key=server.secret_key, options=[f"cafile={link.wrong_ca_file}"])
    line = refusal(m)
    assert f"localhost:{link.relay_port}" in line and "certificate" in line, line


def test_unreadable_cafile_is_named(server, link, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    m = Mount(link.url, key=server.secret_key, options=[f"cafile={missing}"])
    line = refusal(m)
    assert str(missing) in line and "No such file" in line, line


def test_departed_reader_ends_its_request_at_the_server(server, run, link, mount_factory):
    """Two readers share one HTTP/2 connection; when one leaves, nginx
    drops its request to the server (its upstream connection) within a
    second, while the other stays."""
    m = mount_factory(api_url=link.url, options=[f"cafile={link.ca_file}"])
    wait_for(lambda: link.upstream_connections() == 0, 5 * SLACK, what="the startup check to end")
    base = 0
    cats = parked_heads(m, [m.input(run, "a"), m.input(run, "b")])
    try:
        wait_for(lambda: link.upstream_connections() == base + 2, 10 * SLACK,
                 what="both subscriptions at the server")
        assert link.client_connections() == 1
        kill_group(cats[0])
        t0 = time.monotonic()
        wait_for(lambda: link.upstream_connections() == base + 1, 5 * SLACK,
                 what="the departed reader's request to end")
        took = time.monotonic() - t0
        assert took < 1.5 * SLACK, f"took {took:.2f}s"
        server.send(run, "b", "still here")
        out, _ = cats[1].communicate(timeout=10 * SLACK)
        assert out == b'"still here"\n'
    finally:
        for c in cats:
            kill_group(c)


def test_many_readers_share_few_connections(server, link, mount_factory):
    """More subscriptions than one connection's streams (nginx allows 128)
    share a few connections (at most 16: the cap once HTTP/2 is seen);
    releasing every reader opens none that carries no request."""
    n = 160
    m = mount_factory(api_url=link.url, options=[f"cafile={link.ca_file}"])
    run, _ = server.trigger_run()
    paths = [m.input(run, f"s{i}") for i in range(n)]
    cats = parked_heads(m, paths)
    try:
        wait_for(lambda: link.upstream_connections() >= n, 20 * SLACK,
                 what=f"{n} subscriptions at the server")
        held = link.client_connections()
        assert 2 <= held <= 16, f"{n} subscriptions on {held} connections"
        before, mark = link.status(), link.access_log_mark()
        for i in range(n):
            server.send(run, f"s{i}", i)
        for i, c in enumerate(cats):
            out, _ = c.communicate(timeout=20 * SLACK)
            assert out == f"{i}\n".encode()
        # Every connection opened meanwhile carried a request.
        sh(f'echo 1 > "{m.input(run, "after")}"')
        opened = link.status()["accepts"] - before["accepts"] - 1  # our status query
        carried = link.connections_with_requests(mark)
        assert opened <= len(carried), (opened, carried)
        assert link.client_connections() <= 16
    finally:
        for c in cats:
            kill_group(c)


def requests_since(server, mark: int) -> list:
    return [(e["method"], e["path"]) for e in server.request_log_entries()[mark:]]


def test_a_first_send_to_a_stream_reads_no_tail(server, run, mount_factory):
    """The daemon follows a stream while someone reads it: its first send
    there needs no tail read (the subscription says where the stream
    stands), and neither does a stream nobody follows (its sends are
    placed by the records' timestamps, client/api.c): one request each."""
    m = mount_factory()
    stream = f"/realtime/v1/streams/{run}/input"
    reader = spawn_sh('exec head -n1 "$S"', env={"S": m.input(run, "f")})
    try:
        m.wait_parked(1)
        mark = len(server.request_log_entries())
        assert sh('echo 7 > "$F"', env={"F": m.input(run, "f")}).returncode == 0
        assert reader.communicate(timeout=10 * SLACK)[0] == b"7\n"
    finally:
        kill_group(reader)
    assert requests_since(server, mark) == [("POST", f"{stream}/f")]
    mark = len(server.request_log_entries())
    assert sh('echo 8 > "$F"', env={"F": m.input(run, "g")}).returncode == 0
    assert requests_since(server, mark) == [("POST", f"{stream}/g")]


def test_the_first_send_after_mounting_uses_the_connection_that_checked(
        server, run, tmp_path, mount_factory):
    """The daemon checks the URL and the credential before mounting; in the
    foreground the same client then serves the mount, so the first echo
    finds a connection up and the claims fetched: two requests (the run,
    the send), on the connection of the checks, with no second claims."""
    port = int(server.url.rsplit(":", 1)[1])
    with Link(tmp_path / "link", port, delay_ms=0) as lk:
        m = mount_factory(api_url=lk.url, options=[f"cafile={lk.ca_file}"])
        assert sh('echo 1 > "$F"', env={"F": m.input(run, "first")}).returncode == 0
        wait_for(lambda: any("/input/first" in line for line in
                             (lk.dir / "nginx-access.log").read_text().splitlines()),
                 10 * SLACK, what="the send in nginx's log")
        log = [line.split() for line in (lk.dir / "nginx-access.log").read_text().splitlines()]
    conns = {f[0] for f in log}
    paths = [f[3] for f in log]
    assert len(conns) == 1, log
    assert sum(p.endswith("/jwt/claims") for p in paths) == 1, paths
    assert paths[-2:] == [f"/api/v3/runs/{run}", f"/realtime/v1/streams/{run}/input/first"], paths


def test_an_idle_mount_keeps_its_connection(server, run, tmp_path, mount_factory):
    """nginx here closes a connection idle for 2 s (its default is 75 s;
    load balancers often 60 s).  The mount keeps its connection in use
    while idle (every 45 s; every second here), so a send after idling
    longer than the server's limit opens no new connection."""
    port = int(server.url.rsplit(":", 1)[1])
    with Link(tmp_path / "link", port, delay_ms=0, nginx_extra="keepalive_timeout 2s;") as lk:
        m = mount_factory(api_url=lk.url, options=[f"cafile={lk.ca_file}"],
                          env={"TRIGGER_KEEP_WARM_SECONDS": "1"})
        path = m.input(run, "idle")
        assert sh('echo 1 > "$F"', env={"F": path}).returncode == 0
        # A connection of our own, left idle, to show that the server does
        # close idle ones.
        ctx = ssl.create_default_context(cafile=str(lk.ca_file))
        with socket.create_connection(("127.0.0.1", lk.port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as idle:
            idle.settimeout(5)
            idle.sendall(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += idle.recv(4096)
            accepts = lk.status()["accepts"]
            time.sleep(5)           # idle, on purpose: what is measured
            assert idle.recv(1) == b"", "nginx kept an idle connection"
        assert sh('echo 2 > "$F"', env={"F": path}).returncode == 0
        assert lk.status()["accepts"] - accepts == 1, "a new connection (1 is our status query)"
        assert server.records(run, "idle") == [(0, 1), (1, 2)]
