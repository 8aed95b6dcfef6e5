"""waitpoints/<id>: a read returns a completed token's output as one JSON
line, blocks (parked) on a waiting token until it is completed through the
mount, the API or its callback URL, fails ETIMEDOUT on a timed-out token;
a write of one JSON value completes it; waitpoints/ lists the waiting
tokens."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import time

from devserver_ctl import NOAUTH, wait_for
from mount_ctl import (blocked_cats, kill_group, mount, mount_factory,  # noqa: F401
                       os_error, sh)
from test_sdk import procs, sdk, sdk_installed  # noqa: F401

TOKENS = "/api/v1/waitpoints/tokens"


def create(server, timeout: str = "1h") -> tuple:
    """-> (token id, its public token scoped write:waitpoints:<id>, callback url)."""
    status, headers, body = server.api("POST", TOKENS, {"timeout": timeout})
    assert status == 200, body
    return body["id"], headers["x-trigger-jwt"], body["url"]


def complete(server, wp: str, data, token=None) -> None:
    status, _, body = server.api("POST", f"{TOKENS}/{wp}/complete", {"data": data}, token=token)
    assert (status, body) == (200, {"success": True}), (status, body)


def retrieve(server, wp: str) -> dict:
    status, _, body = server.api("GET", f"{TOKENS}/{wp}")
    assert status == 200, body
    return body


def retrieves(server, wp: str) -> int:
    return sum(1 for e in server.request_log_entries()
               if e["method"] == "GET" and e["path"] == f"{TOKENS}/{wp}")


def test_completed_token_reads_at_once(mount, server):
    wp, _, _ = create(server)
    complete(server, wp, {"approved": True, "by": "ops"})
    r = sh('cat "$W"', env={"W": mount.path("waitpoints", wp)}, timeout=10)
    assert (r.returncode, r.stdout) == (0, b'{"approved":true,"by":"ops"}\n'), r.stderr
    # One line of JSON: what jq and read -r take.
    r = sh('read -r v < "$W" && jq -r .by <<<"$v"', env={"W": mount.path("waitpoints", wp)})
    assert r.stdout == b"ops\n", r.stderr


def test_blocked_cat_is_released_by_the_api(mount, server):
    wp, _, _ = create(server)
    [cat] = blocked_cats(mount, [mount.path("waitpoints", wp)])
    try:
        time.sleep(0.3)
        assert cat.poll() is None                    # parked: still waiting
        complete(server, wp, {"ok": 1})
        out, err = cat.communicate(timeout=15)
        assert (cat.returncode, out) == (0, b'{"ok":1}\n'), err
    finally:
        kill_group(cat)


def test_sdk_complete_token_releases_cat(mount, server, sdk):
    wp, _, _ = create(server)
    [cat] = blocked_cats(mount, [mount.path("waitpoints", wp)])
    try:
        sdk.run("waitpoint_token", ACTION="complete", WAITPOINT_ID=wp, DATA='{"from":"sdk"}')
        out, err = cat.communicate(timeout=15)
        assert (cat.returncode, out) == (0, b'{"from":"sdk"}\n'), err
    finally:
        kill_group(cat)


def test_callback_url_releases_many_readers_with_one_poll_loop(mount, server):
    wp, _, url = create(server)
    path = mount.path("waitpoints", wp)
    cats = blocked_cats(mount, [path] * 5)
    try:
        before = retrieves(server, wp)
        time.sleep(3)
        polls = retrieves(server, wp) - before
        # Five readers, one loop: about one retrieve a second, not five.
        assert 1 <= polls <= 5, polls
        callback = url.split("://", 1)[1].split("/", 1)[1]
        status, _, body = server.api("POST", "/" + callback, {"via": "callback"}, token=NOAUTH)
        assert status == 200, body
        for cat in cats:
            out, err = cat.communicate(timeout=15)
            assert (cat.returncode, out) == (0, b'{"via":"callback"}\n'), err
    finally:
        for cat in cats:
            kill_group(cat)


def test_echo_completes_the_token(mount, server):
    wp, _, _ = create(server)
    path = mount.path("waitpoints", wp)
    r = sh('echo \'{"approved":true}\' > "$W"', env={"W": path})
    assert (r.returncode, r.stderr) == (0, b"")
    # Accepted before echo returned.
    token = retrieve(server, wp)
    assert token["status"] == "COMPLETED" and json.loads(token["output"]) == {"approved": True}
    assert sh('cat "$W"', env={"W": path}).stdout == b'{"approved":true}\n'


def test_reader_on_the_mount_sees_its_own_write(mount, server):
    wp, _, _ = create(server)
    path = mount.path("waitpoints", wp)
    [cat] = blocked_cats(mount, [path])
    try:
        assert sh("jq -n '{n: 7}' > \"$W\"", env={"W": path}).returncode == 0
        out, err = cat.communicate(timeout=15)
        assert (cat.returncode, out) == (0, b'{"n":7}\n'), err
    finally:
        kill_group(cat)


def test_timed_out_token_gives_its_error_then_etimedout(mount, server):
    wp, _, _ = create(server, timeout="1s")
    path = mount.path("waitpoints", wp)
    fd = os.open(path, os.O_RDONLY)
    try:
        # Blocks until the timeout passes and a poll sees it.
        line = os.read(fd, 4096)
        assert json.loads(line)["code"] == "TRIGGER_WAITPOINT_TIMEOUT"
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert os_error(lambda: os.read(fd, 4096)) == errno.ETIMEDOUT
    finally:
        os.close(fd)
    r = sh('cat "$W"', env={"W": path})
    assert r.returncode == 1 and b"timed out" in r.stderr.lower(), r.stderr


def test_nonblocking_and_poll(mount, server):
    wp, _, _ = create(server)
    fd = os.open(mount.path("waitpoints", wp), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os_error(lambda: os.read(fd, 100)) == errno.EAGAIN
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(200) == []
        complete(server, wp, "yes")
        assert p.poll(15000) == [(fd, select.POLLIN)]
        fcntl.fcntl(fd, fcntl.F_SETFL, 0)
        assert os.read(fd, 100) == b'"yes"\n'
        assert os.read(fd, 100) == b""
    finally:
        os.close(fd)


def test_unknown_token_is_enoent(mount):
    assert os_error(lambda: open(mount.path("waitpoints", "waitpoint_nosuchtoken00000"))) \
        == errno.ENOENT


def test_listing_shows_waiting_tokens(mount, server):
    waiting, _, _ = create(server)
    done, _, _ = create(server)
    complete(server, done, 1)
    names = os.listdir(mount.path("waitpoints"))
    assert waiting in names and done not in names


def test_bad_value_is_refused_and_nothing_completes(mount, server):
    wp, _, _ = create(server)
    r = sh('echo "{not json" > "$W"', env={"W": mount.path("waitpoints", wp)})
    assert r.returncode != 0
    assert retrieve(server, wp)["status"] == "WAITING"


def test_token_scoped_to_the_waitpoint_completes_but_cannot_read(mount_factory, server):
    wp, wp_jwt, _ = create(server)
    m = mount_factory(token=wp_jwt)
    path = m.path("waitpoints", wp)
    assert os.listdir(m.path("waitpoints")) == [wp]
    assert os_error(lambda: open(path).read()) == errno.EACCES
    r = sh('echo \'"by token"\' > "$W"', env={"W": path})
    assert (r.returncode, r.stderr) == (0, b"")
    assert json.loads(retrieve(server, wp)["output"]) == "by token"
    # Another token's file: refused before any request.
    other, _, _ = create(server)
    assert os_error(lambda: open(m.path("waitpoints", other), "w")) == errno.EACCES


def test_run_token_cannot_complete(mount_factory, server):
    wp, _, _ = create(server)
    _, run_jwt = server.trigger_run()
    m = mount_factory(token=run_jwt)
    assert os_error(lambda: open(m.path("waitpoints", wp), "w")) == errno.EACCES
    assert retrieve(server, wp)["status"] == "WAITING"


def test_sdk_created_token(mount, server, sdk):
    [out] = sdk.run("waitpoint_token", ACTION="create", TIMEOUT="10m")
    wp = out["id"]
    wait_for(lambda: wp in os.listdir(mount.path("waitpoints")), 10, what="token listed")
    assert sh("echo 42 > \"$W\"", env={"W": mount.path("waitpoints", wp)}).returncode == 0
    assert json.loads(retrieve(server, wp)["output"]) == 42
