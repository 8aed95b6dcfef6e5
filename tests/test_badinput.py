"""Bad input: writes one byte at a time, 100 MiB without a newline, NUL
bytes, invalid UTF-8, deep nesting, 50 writers on one stream, hostile run
and stream names, and malformed requests to the local server."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import random
import subprocess
import textwrap
import urllib.parse

import pytest

from devserver_ctl import DevServer
from mount_ctl import (SANITIZE, SLACK, mount, mount_factory, os_error,  # noqa: F401
                       sh)

MIB = 1 << 20


def values(srv: DevServer, run: str, stream: str) -> list:
    return [v for _, v in srv.records(run, stream)]


def write_all(fd: int, data: bytes) -> None:
    """write(2) until all is taken (FUSE may split and answer short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sends_since(srv: DevServer, mark: int) -> list:
    """The sends to input streams logged by the server after entry `mark`."""
    return [e for e in srv.request_log_entries()[mark:]
            if e["method"] == "POST" and e["path"].startswith("/realtime/")]


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# ------------------------------------------------ the shape of writes

def test_one_byte_at_a_time(mount, server, run):
    lines = [b'{"a":[1,2,"x y"],"b":{"c":null}}', b'-12.5e3', b'"\xc3\xa9\xe2\x82\xac"',
             b'  [true , false]  ', b'1234567']
    fd = os.open(mount.input(run, "bytes"), os.O_WRONLY)
    try:
        for byte in b"\n".join(lines) + b"\n":
            assert os.write(fd, bytes([byte])) == 1
    finally:
        os.close(fd)
    assert values(server, run, "bytes") == [{"a": [1, 2, "x y"], "b": {"c": None}}, -12500.0,
                                            "é€", [True, False], 1234567]
    r = sh('cat "$L"', env={"L": mount.log(run, "bytes")})
    assert r.stdout.splitlines()[-1] == b"1234567"


def test_100_mib_without_a_newline_is_efbig_in_bounded_memory(mount_factory, server, run):
    env = {}
    if SANITIZE:    # freed memory must not sit in ASan's quarantine
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8"
    m = mount_factory(env=env)
    path = m.input(run, "big")
    fd = os.open(path, os.O_WRONLY)
    try:
        write_all(fd, b"1\n")
        base = vm_kib(m.proc.pid, "VmRSS")
        chunk = b"a" * MIB
        errors = []
        write_all(fd, b'"')     # a string: every prefix could still be JSON
        for _ in range(100):
            try:
                write_all(fd, chunk)
            except OSError as e:
                errors.append(e.errno)
        assert errors and set(errors) == {errno.EFBIG}, [errno.errorcode[e] for e in errors]
        peak = vm_kib(m.proc.pid, "VmHWM")
        # Bounded: a line is refused past 1 MiB, not buffered.
        assert peak - base < 48 * 1024, (base, peak)
        # Nothing from the refused value on is sent, not even what follows.
        assert os_error(lambda: write_all(fd, b'"\n2\n')) == errno.EFBIG
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EFBIG
    assert values(server, run, "big") == [1]
    assert m.alive()


def test_100_mib_of_garbage_is_einval_at_once(mount, server, run):
    fd = os.open(mount.input(run, "junk"), os.O_WRONLY)
    try:
        assert os_error(lambda: os.write(fd, b"x" * MIB)) == errno.EINVAL
        failures = 1
        for _ in range(99):
            try:
                os.write(fd, b"x" * MIB)
            except OSError as e:
                assert e.errno == errno.EINVAL
                failures += 1
        assert failures == 100
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert values(server, run, "junk") == []


@pytest.mark.parametrize("line", [
    b'{"a":"\x00"}', b"\x00", b"1\x00", b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"', b'"\xe2\x82"', b"\xef\xbb\xbf1",
], ids=["nul-in-string", "nul", "nul-after", "ff", "overlong", "surrogate", "over-max",
        "truncated", "bom"])
def test_nul_and_invalid_utf8_are_einval_and_nothing_is_sent(mount, server, run, line):
    mark = len(server.request_log_entries())
    fd = os.open(mount.input(run, "bad"), os.O_WRONLY)
    try:
        # A good value first in the same write: it is sent, the write is
        # short, and nothing from the bad value on is sent.
        assert os.write(fd, b"1\n" + line + b"\n2\n") == 2
        assert os_error(lambda: os.write(fd, line + b"\n2\n")) == errno.EINVAL
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert len(sends_since(server, mark)) == 1
    assert values(server, run, "bad") == [1]
    assert mount.log_matching(r"stream bad: the value at line 2 \(counted from the open\) is not JSON")


def test_escaped_nul_and_unicode_are_sent_as_written(mount, server, run):
    line = b'{"nul":"\\u0000","e":"\\u00e9","pair":"\\ud83d\\ude00"}'
    assert sh('printf "%s\\n" "$V" > "$S"', env={"S": mount.input(run, "esc"),
                                                  "V": line.decode()}).returncode == 0
    assert values(server, run, "esc") == [{"nul": "\x00", "e": "é", "pair": "😀"}]


@pytest.mark.parametrize("depth", [100, 512, 513, 5000, 400000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_nesting_is_a_clear_error_or_accepted(mount, server, run, depth, kind):
    if kind == "array":
        text = "[" * depth + "]" * depth
    else:
        text = '{"a":' * depth + "1" + "}" * depth
    stream = f"deep{kind}{depth}"
    path = mount.input(run, stream)
    fd = os.open(path, os.O_WRONLY)
    try:
        write_all(fd, text.encode() + b"\n")
        accepted = True
    except OSError as e:
        accepted = False
        assert e.errno in (errno.EINVAL, errno.EFBIG), os.strerror(e.errno)
    finally:
        try:
            os.close(fd)    # fails the same way when the write was refused
        except OSError as e:
            assert not accepted and e.errno in (errno.EINVAL, errno.EFBIG)
    assert mount.alive()
    if accepted:
        # Stored as sent and read back as one line.
        rec = server.raw_records(run, stream)
        assert len(rec) == 1 and json.loads(rec[0]["body"])["data"] == text
        assert sh('cat "$L"', env={"L": mount.log(run, stream)}).stdout == text.encode() + b"\n"
    else:
        assert depth > 512
        assert mount.log_matching(rf"stream {stream}: the value at line 1 .*deep")
        assert server.records(run, stream) == []
    # The daemon goes on.
    assert sh('echo 1 > "$S"', env={"S": path}).returncode == 0


WRITER = textwrap.dedent("""
    import json, os, sys
    path, p = sys.argv[1], int(sys.argv[2])
    fd = os.open(path, os.O_WRONLY)
    for k in range(10):
        pad = "x" * (150000 if k in (3, 7) else p)
        view = memoryview((json.dumps({"p": p, "k": k, "pad": pad}) + "\\n").encode())
        while view:
            view = view[os.write(fd, view):]
    os.close(fd)
""")


def test_50_processes_writing_to_one_stream(mount, server, run):
    path = mount.input(run, "many")
    procs = [subprocess.Popen(["/usr/bin/python3", "-c", WRITER, path, str(p)],
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for p in range(50)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=60 * SLACK)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    got = values(server, run, "many")
    assert len(got) == 500
    for p in range(50):
        mine = [v for v in got if v["p"] == p]
        # Whole, once, and in the order that process wrote them.
        assert [v["k"] for v in mine] == list(range(10)), (p, [v["k"] for v in mine])
        assert all(v["pad"] == "x" * (150000 if v["k"] in (3, 7) else p) for v in mine)


# ------------------------------------------------ names

TRICKY = ["ü", "日本語", "😀", "%41", "%", "%zz", "a%2Fb", "a?b", "?", "#", "a#b", "a b",
          " lead", "trail ", "+", "a+b", "a;b", "a&b=c", "\\", "'\"", "<>", "~", "\t",
          "a\nb", "*", "[x]", "{}", ":", "a:b", "@", "..a", ".hidden", "x" * 255,
          "é" * 127, "日" * 85]


def random_names(n: int, seed: int) -> list:
    rng = random.Random(seed)
    alphabet = "aZ09 %?#&=+;:/@!$'()*,[]{}|\\^`~\"<>\t-._é日😀\u200b\u00a0"
    names = []
    while len(names) < n:
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))).replace("/", "")
        if name not in ("", ".", "..") and len(name.encode()) <= 255:
            names.append(name)
    return names


def last_segment(path: str) -> str:
    return urllib.parse.unquote(path.rsplit("/", 1)[1], errors="strict")


def test_stream_names_reach_the_server_exactly(mount, server, run):
    names = TRICKY + random_names(30, 20240601)
    for i, name in enumerate(names):
        mark = len(server.request_log_entries())
        path = mount.input(run, name)
        fd = os.open(path, os.O_WRONLY)
        try:
            write_all(fd, b'{"n":%d}\n' % i)
        finally:
            os.close(fd)
        posts = sends_since(server, mark)
        assert len(posts) == 1 and posts[0]["status"] == 200, (name, posts)
        raw = posts[0]["path"].rsplit("/", 1)[1]
        # Percent-encoded: nothing that would end or split the path.
        assert not set(raw) & set("?#/ \t\n") and raw.isascii(), (name, raw)
        assert last_segment(posts[0]["path"]) == name
        assert values(server, run, name) == [{"n": i}], name
        # And back through the mount.
        with open(mount.log(run, name), "rb") as f:
            assert f.read() == b'{"n":%d}\n' % i, name
    listed = set(os.listdir(mount.path("runs", run, "input")))
    assert set(names) <= listed


def test_run_names_reach_the_server_exactly(mount, server):
    names = ["run_" + n for n in TRICKY[:-3] + random_names(10, 7)]
    mark = len(server.request_log_entries())
    # Looked up together (each unknown run is asked again for seconds).
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        errnos = list(pool.map(lambda n: os_error(lambda: os.stat(mount.path("runs", n))),
                               names))
    assert errnos == [errno.ENOENT] * len(names), list(zip(names, errnos))
    asked = {last_segment(e["path"]) for e in server.request_log_entries()[mark:]
             if e["method"] == "GET" and e["path"].startswith("/api/v3/runs/")}
    assert [n for n in names if n not in asked] == [], asked
    assert mount.alive()


def api_requests_naming(srv: DevServer, mark: int, needle: str) -> list:
    return [e for e in srv.request_log_entries()[mark:] if needle in e["path"].upper()]


def test_names_over_255_bytes_are_enametoolong_before_the_api(mount, server, run):
    mark = len(server.request_log_entries())
    assert os_error(lambda: os.open(mount.input(run, "s" * 256), os.O_WRONLY)) \
        == errno.ENAMETOOLONG
    assert os_error(lambda: os.stat(mount.path("runs", "r" * 256))) == errno.ENAMETOOLONG
    assert api_requests_naming(server, mark, "S" * 256) == []
    assert api_requests_naming(server, mark, "R" * 256) == []


def test_names_that_are_not_utf8_are_refused_before_the_api(mount, server, run):
    mark = len(server.request_log_entries())
    runs = mount.path("runs").encode()
    # No API name can be made of these bytes (the server would read U+FFFD).
    bad = os.path.join(runs, run.encode(), b"input", b"s\xff\xfe")
    assert os_error(lambda: os.open(bad, os.O_WRONLY)) in (errno.EINVAL, errno.ENOENT)
    assert os_error(lambda: os.stat(os.path.join(runs, b"run_\xff"))) in \
        (errno.EINVAL, errno.ENOENT)
    assert api_requests_naming(server, mark, "%FF") == []
    assert mount.alive()


# ------------------------------------------------ the local server's own checks

def test_server_refuses_malformed_requests_as_the_real_one(server, run):
    send = DevServer.stream_path(run, "mal")
    invalid = {"ok": False, "error": "Invalid request body"}
    # The body is JSON text whatever the Content-Type says (the route reads
    # request.json()): text that is not JSON throws there, and the real
    # server answers its catch-all 500; JSON that is not an object is 400;
    # an object without "data" is stored as a record without data.
    for ctype in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        for body in (b"{", b"data=1"):
            status, _, resp = server.api("POST", send, body, headers={"Content-Type": ctype})
            assert (status, resp) == (500, {"error": "Internal Server Error"}), (ctype, body)
        for body in (b"[]", b"null", b"7"):
            status, _, resp = server.api("POST", send, body, headers={"Content-Type": ctype})
            assert (status, resp) == (400, invalid), (ctype, body)
        status, _, resp = server.api("POST", send, b'{"data":[1]}',
                                     headers={"Content-Type": ctype})
        assert (status, resp) == (200, {"ok": True}), ctype
    # Bytes that are not UTF-8 are decoded as fetch's text() does.
    assert server.api("POST", send, b'{"data":"\xff"}')[::2] == (200, {"ok": True})
    assert values(server, run, "mal") == [[1], [1], [1], "\ufffd"]
    mark = len(server.request_log_entries())
    # Other routes: a JSON error, never a crash.
    for method, path, body in [
            ("POST", f"/api/v1/runs/{run}/input-streams/wait", b"{"),
            ("POST", f"/api/v1/runs/{run}/input-streams/wait", b'{"timeout":"5m"}'),
            ("POST", f"/api/v1/runs/{run}/input-streams/wait", b'{"streamId":5}'),
            ("POST", "/api/v1/tasks/demo/trigger", b"{"),
            ("POST", "/api/v1/tasks/demo/trigger", b"[]"),
            ("GET", "/api/v3/runs/%zz", None),
            ("GET", "/api/v3/runs/run_%FF", None),
            ("GET", "/api/v1/runs?page[size]=abc", None),
            ("POST", "/realtime/v1/streams/run_%zz/input/x", b'{"data":1}')]:
        status, _, resp = server.api(method, path, body)
        assert 400 <= status < 500 and isinstance(resp, dict) and resp.get("error"), \
            (method, path, body, status, resp)
    assert all(e["status"] < 500 for e in server.request_log_entries()[mark:])
