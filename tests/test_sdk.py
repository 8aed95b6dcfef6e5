"""The published client, @trigger.dev/sdk and @trigger.dev/core 4.8.3
(tests/sdk/), against the local API server: what the SDK sends is stored as
the real server stores it, what the server answers is what the SDK parses,
and values cross between the SDK, plain HTTP and the C client unchanged.

The SDK runs outside a task; tests/sdk/*.mjs say how each part is driven
(the task side is the real StandardInputStreamManager behind the SDK's own
streams.input().once()/.on())."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from devserver_ctl import ROOT, DevServer, wait_for

SDK_DIR = ROOT / "tests" / "sdk"
NODE_TIMEOUT = 60.0
RUN_ID_RE = re.compile(r"run_[a-z0-9]+")
INPUT_ID_RE = re.compile(r"inp_[0-9a-f]{12}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# Values that a careless server changes on the way: JSON texts as a caller
# would write them, one per line.
TRICKY = [
    '"123"',                     # a string that looks like a number stays a string
    '123',
    '1.5',
    '1e21',                      # JS prints 1e+21
    '-0',                        # JS prints 0
    '12345678901234567890',      # beyond double precision: what JS keeps
    '0.1',
    'null',
    'true',
    'false',
    '""',
    '"null"',
    '"ü 😀 中文 \\u2028 \\u0000"',    # non-ASCII, a JS line separator (raw in JSON), NUL
    '"\\ud800 lone"',                # a lone surrogate: JSON.stringify escapes it
    '{"b":1,"a":{"c":[1,2,{"d":null}]},"10":"x","2":"y"}',  # integer keys move first in JS
    '[[],{},[{}]]',
    '{"data":"{\\"id\\":\\"inp_000000000000\\"}"}',        # looks like an envelope
]
# The C client (jansson) refuses lone surrogates, so it gets the rest.
TRICKY_C = [t for t in TRICKY if "\\ud800" not in t]


def text_lines(text: str) -> list:
    """Lines split at \\n only: str.splitlines() would also split at the
    U+2028 that JSON.stringify leaves raw."""
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def js_map(lines: list, fn: str) -> list:
    """Node's answer for each line: `fn` is a JavaScript function of the
    line's text returning a string."""
    code = ("const f=" + fn + ";const l=require('fs').readFileSync(0,'utf8')"
            ".split('\\n').filter(Boolean);for(const x of l)console.log(f(x));")
    out = subprocess.run(["node", "-e", code], input="\n".join(lines) + "\n", text=True,
                         capture_output=True, timeout=NODE_TIMEOUT, check=True).stdout
    return text_lines(out)


def js_stringify(lines: list) -> list:
    """JSON.stringify(JSON.parse(line)): the text the real (Node) server
    stores for each value, so the value a receiver gets back."""
    return js_map(lines, "x => JSON.stringify(JSON.parse(x))")


def js_envelopes(lines: list) -> list:
    """The record body the real server stores for each value sent, with the
    record id left as ID."""
    return js_map(lines, 'x => JSON.stringify({data: JSON.stringify(JSON.parse(x)), id: "ID"})')


# ---- running the SDK scripts and the C client


class Procs:
    """Child processes of one test, each in its own process group, killed
    at teardown whatever happened."""

    def __init__(self) -> None:
        self.procs: list = []

    def start(self, argv: list, env: dict, stdin: Optional[str] = None) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=env, text=True, start_new_session=True,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        if stdin is not None:
            p.stdin.write(stdin)
            p.stdin.close()
            p.stdin = None      # all of it given: communicate() has none to send
        return p

    def finish(self, p: subprocess.Popen, timeout: float = NODE_TIMEOUT) -> tuple:
        """Wait for p -> (exit status, stdout, stderr); kill it at the deadline."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p)
            out, err = p.communicate()
            raise AssertionError(f"{p.args[:2]} still running after {timeout}s; "
                                 f"stdout={out!r} stderr={err[-2000:]!r}") from None
        return p.returncode, out, err

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None and not f.closed:
                    f.close()


def client_env(srv: DevServer, token: Optional[str] = None, **extra: Any) -> dict:
    """The environment a client of `srv` runs with: its URL and the secret
    key, or `token` instead; nothing of ours that the SDK would also read
    (TRIGGER_*, and VERCEL_* which sets a preview branch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIGGER_", "VERCEL_"))}
    env["TRIGGER_API_URL"] = srv.url
    if token is None:
        env["TRIGGER_SECRET_KEY"] = srv.secret_key
    else:
        env["TRIGGER_ACCESS_TOKEN"] = token
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Sdk:
    """Runs tests/sdk/<name>.mjs against one server. Credentials travel in
    the environment: the secret key unless `token` is given."""

    def __init__(self, srv: DevServer, procs: Procs, tmp: Path):
        self.srv, self.procs, self.tmp = srv, procs, tmp
        self._n = 0

    def path(self, stem: str) -> Path:
        self._n += 1
        return self.tmp / f"{stem}-{self._n}"

    def start(self, script: str, stdin_lines: Optional[list] = None,
              token: Optional[str] = None, **env: Any) -> subprocess.Popen:
        stdin = None if stdin_lines is None else "".join(line + "\n" for line in stdin_lines)
        return self.procs.start(["node", str(SDK_DIR / f"{script}.mjs")],
                                client_env(self.srv, token, **env), stdin)

    def run(self, script: str, stdin_lines: Optional[list] = None,
            token: Optional[str] = None, expect_rc: int = 0, **env: Any) -> list:
        """Run to completion -> its JSON output lines."""
        p = self.start(script, stdin_lines if stdin_lines is not None else [], token, **env)
        return self.lines(p, expect_rc)

    def lines(self, p: subprocess.Popen, expect_rc: int = 0,
              timeout: float = NODE_TIMEOUT) -> list:
        rc, out, err = self.procs.finish(p, timeout)
        assert rc == expect_rc, f"{p.args[1]} exited {rc}: stdout={out!r} stderr={err[-2000:]!r}"
        return [json.loads(line) for line in text_lines(out)]

    def send(self, run: str, stream: str, lines: list, token: Optional[str] = None) -> None:
        out = self.run("send", lines, token, RUN_ID=run, STREAM_ID=stream)
        assert out == [{"sent": i} for i in range(len(lines))], out

    def receive(self, run: str, stream: str, count: int, mode: str = "once",
                token: Optional[str] = None) -> list:
        out = self.run("receive", None, token, RUN_ID=run, STREAM_ID=stream, COUNT=count,
                       MODE=mode)
        assert all("value" in o for o in out), out
        return [o["value"] for o in out]

    def start_receiver(self, run: str, stream: str, count: int, mode: str,
                       token: Optional[str] = None) -> subprocess.Popen:
        """A receiver that has connected its tail (the SSE answer's headers
        have arrived) when this returns."""
        trace = self.path("trace")
        p = self.start("receive", None, token, RUN_ID=run, STREAM_ID=stream, COUNT=count,
                       MODE=mode, SDK_TRACE=trace)
        wait_connected(p, trace)
        assert p.poll() is None, self.procs.finish(p)
        return p


def wait_connected(p: subprocess.Popen, trace: Path) -> None:
    wait_for(lambda: p.poll() is not None or any(
        e.get("response", {}).get("status") == 200 for e in read_trace(trace)),
        timeout=20, what="the SDK's input-stream tail to connect")


def read_trace(path: Path) -> list:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def cli_path() -> Path:
    return Path(os.environ.get("TRIGGERFS_BUILD", ROOT / "build")) / "client" / "trigger-cli"


@pytest.fixture(scope="session")
def sdk_installed() -> None:
    """The pinned client in tests/sdk/node_modules (a no-op once installed)."""
    subprocess.run([str(SDK_DIR / "install.sh")], check=True, timeout=600)


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def sdk(server, sdk_installed, procs, tmp_path) -> Sdk:
    return Sdk(server, procs, tmp_path)


@pytest.fixture
def cli(server, procs):
    """Run build/client/trigger-cli (the lead's C client) with the server's
    credentials in the environment."""
    path = cli_path()
    assert os.access(path, os.X_OK), f"{path} missing: build the C client (meson compile -C build)"

    def start(*args: str, stdin_lines: Optional[list] = None,
              token: Optional[str] = None) -> subprocess.Popen:
        env = client_env(server, token)
        stdin = None if stdin_lines is None else "".join(x + "\n" for x in stdin_lines)
        return procs.start([str(path), "--timeout", "20000", *args], env, stdin)
    return start


def value(text: str) -> Any:
    return json.loads(text)


# ---- (a) SDK send: stored as the real server stores it, received unchanged


def test_sdk_send_is_stored_as_the_real_server_stores_it(sdk, server, run):
    sdk.send(run, "chat", TRICKY)
    records = server.raw_records(run, "chat")
    assert [r["seq_num"] for r in records] == list(range(len(TRICKY)))
    ids = set()
    for rec, want in zip(records, js_envelopes(TRICKY)):
        record_id = json.loads(rec["body"])["id"]
        assert INPUT_ID_RE.fullmatch(record_id)
        ids.add(record_id)
        assert rec["body"] == want.replace('"ID"', json.dumps(record_id))
        assert isinstance(rec["timestamp"], int) and rec["timestamp"] > 1.7e12
    assert len(ids) == len(TRICKY)


def test_sdk_send_then_sdk_once_gets_every_value_unchanged(sdk, run):
    sdk.send(run, "chat", TRICKY)
    got = sdk.receive(run, "chat", len(TRICKY), "once")
    assert got == [value(t) for t in js_stringify(TRICKY)]
    assert got[0] == "123" and isinstance(got[0], str)
    assert got[1] == 123 and got[2] == 1.5 and got[3] == 1e21
    assert got[7] is None and got[8] is True and got[9] is False
    assert got[12] == "ü 😀 中文 \u2028 \u0000" and got[13] == "\ud800 lone"
    assert got[14] == {"b": 1, "a": {"c": [1, 2, {"d": None}]}, "10": "x", "2": "y"}


def test_sdk_send_then_sdk_on_gets_every_value_unchanged(sdk, run):
    sdk.send(run, "chat", TRICKY)
    got = sdk.receive(run, "chat", len(TRICKY), "on")
    assert got == [value(t) for t in js_stringify(TRICKY)]


def test_what_the_sdk_sends_and_what_it_gets_back(sdk, server, run):
    """The request headers and bodies the SDK relies on the server taking,
    and the answer headers it relies on getting."""
    trace = sdk.path("trace")
    out = sdk.run("send", ['"123"'], RUN_ID=run, STREAM_ID="s", SDK_TRACE=trace)
    assert out == [{"sent": 0}]
    p = sdk.start("receive", RUN_ID=run, STREAM_ID="s", COUNT=1, MODE="once", SDK_TRACE=trace)
    assert sdk.lines(p) == [{"value": "123"}]
    events = read_trace(trace)
    send_req, send_resp, tail_req, tail_resp = events[:4]

    url = server.url + server.stream_path(run, "s")
    req = send_req["request"]
    assert (req["method"], req["url"], req["body"]) == ("POST", url, '{"data":"123"}')
    h = req["headers"]
    assert h["authorization"] == "Bearer <secret key>"
    assert h["content-type"] == "application/json"
    assert h["trigger-version"] == "4.8.3"
    assert h["x-trigger-api-version"] == "2025-07-16"
    assert h["x-trigger-realtime-streams-version"] == "v2"
    assert h["x-trigger-source"] == "sdk"
    assert UUID_RE.fullmatch(h["x-trigger-request-idempotency-key"])
    assert send_resp["response"]["status"] == 200

    req = tail_req["request"]
    assert (req["method"], req["url"]) == ("GET", url)
    h = req["headers"]
    assert h["accept"] == "text/event-stream"
    assert h["timeout-seconds"] == "600"
    assert "last-event-id" not in h          # so the server must replay from 0
    resp = tail_resp["response"]
    assert resp["status"] == 200
    assert resp["headers"]["content-type"].startswith("text/event-stream")
    assert resp["headers"]["x-stream-version"] == "v2"


# ---- (b) SDK receivers and plain HTTP / the C client


@pytest.mark.parametrize("mode", ["once", "on"])
def test_sdk_receives_values_sent_by_plain_http_before_it_listens(sdk, server, run, mode):
    values = [value(t) for t in js_stringify(TRICKY)]
    for v in values:
        server.send(run, "inbox", v)
    assert sdk.receive(run, "inbox", len(values), mode) == values


@pytest.mark.parametrize("mode", ["once", "on"])
def test_sdk_receives_values_sent_by_plain_http_while_it_listens(sdk, server, run, mode):
    p = sdk.start_receiver(run, "live", 3, mode)
    for v in ("first", {"n": 2}, 3):
        server.send(run, "live", v)
    assert sdk.lines(p, timeout=20) == [{"value": "first"}, {"value": {"n": 2}}, {"value": 3}]


def test_sdk_on_resumes_after_server_restart_without_replays(sdk, make_server, tmp_path):
    """The server closes the tail (restart); the task-side manager reconnects
    with Last-Event-ID and gets only what is new, exactly once."""
    srv = make_server()
    run, _ = srv.trigger_run()
    own = Sdk(srv, sdk.procs, tmp_path)
    srv.send(run, "s", "before")
    trace = own.path("trace")
    p = own.start("receive", RUN_ID=run, STREAM_ID="s", COUNT=3, MODE="on", SDK_TRACE=trace)
    wait_connected(p, trace)
    srv.restart()
    srv.send(run, "s", "after-1")
    srv.send(run, "s", "after-2")
    assert own.lines(p, timeout=30) == [{"value": v} for v in ("before", "after-1", "after-2")]
    tails = [e["request"]["headers"] for e in read_trace(trace)
             if "request" in e and e["request"]["method"] == "GET"]
    assert "last-event-id" not in tails[0]
    assert any(h.get("last-event-id") == "0" for h in tails[1:]), tails


@pytest.mark.parametrize("mode", ["once", "on"])
def test_c_client_sends_sdk_receives(sdk, cli, procs, run, mode):
    p = cli("send", run, "c2sdk", stdin_lines=TRICKY_C)
    rc, out, err = procs.finish(p)
    assert rc == 0, (out, err)
    want = [value(t) for t in js_stringify(TRICKY_C)]
    assert sdk.receive(run, "c2sdk", len(TRICKY_C), mode) == want


def test_c_client_sends_while_sdk_listens(sdk, cli, procs, run):
    p = sdk.start_receiver(run, "c2sdk-live", 2, "on")
    rc, out, err = procs.finish(cli("send", run, "c2sdk-live", stdin_lines=['"123"', '{"x":[1]}']))
    assert rc == 0, (out, err)
    assert sdk.lines(p, timeout=20) == [{"value": "123"}, {"value": {"x": [1]}}]


def test_sdk_sends_c_client_receives(sdk, cli, procs, run):
    sdk.send(run, "sdk2c", TRICKY_C)
    p = cli("subscribe", run, "sdk2c", "--count", str(len(TRICKY_C)))
    rc, out, err = procs.finish(p)
    assert rc == 0, (out, err)
    got = [line.split("\t", 1) for line in text_lines(out)]
    assert [int(seq) for seq, _ in got] == list(range(len(TRICKY_C)))
    assert [value(text) for _, text in got] == [value(t) for t in js_stringify(TRICKY_C)]


def test_sdk_sends_while_c_client_listens(sdk, cli, procs, server, run):
    p = cli("subscribe", run, "sdk2c-live", "--count", "2")
    # The C client has subscribed once the server logged its SSE request.
    path = server.stream_path(run, "sdk2c-live")
    wait_for(lambda: p.poll() is not None or any(
        e["method"] == "GET" and e["path"] == path for e in server.request_log_entries()),
        timeout=20, what="the C client's subscription")
    sdk.send(run, "sdk2c-live", ['"123"', '[1.5]'])
    rc, out, err = procs.finish(p, timeout=20)
    assert rc == 0, (out, err)
    assert text_lines(out) == ['0\t"123"', '1\t[1.5]']


# ---- (c) auth.createPublicToken


def mint_with_sdk(sdk: Sdk, scopes: dict, run: Optional[str] = None, lines: tuple = (),
                  stream: str = "s", **env: Any) -> tuple:
    """-> (token, its claims, the send results acting with it)."""
    token_file = sdk.path("token")
    extra = {"RUN_ID": run, "STREAM_ID": stream} if run else {}
    out = sdk.run("token", list(lines), SCOPES=json.dumps(scopes), TOKEN_OUT=token_file,
                  **extra, **env)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    return token_file.read_text(), out[0]["claims"], out[1:]


def test_create_public_token_mints_what_the_server_accepts(sdk, server, run):
    before = int(time.time())
    token, claims, sends = mint_with_sdk(sdk, {"write": {"inputStreams": [run]}}, run,
                                         ('"by sdk"',), stream="tok")
    assert sends == [{"sent": 0}]
    assert claims["sub"] == server.env_id and claims["pub"] is True
    assert claims["scopes"] == [f"write:inputStreams:{run}"]
    assert (claims["iss"], claims["aud"]) == ("https://id.trigger.dev", "https://api.trigger.dev")
    assert claims["exp"] - claims["iat"] == 900 and claims["iat"] >= before - 1
    # The same token from plain HTTP, and from the SDK in another process.
    server.send(run, "tok", "by http", token=token)
    sdk.send(run, "tok", ['"by sdk again"'], token=token)
    assert server.records(run, "tok") == [(0, "by sdk"), (1, "by http"), (2, "by sdk again")]
    # The server logged these as JWT requests carrying exactly that scope.
    path = server.stream_path(run, "tok")
    sends = [e for e in server.request_log_entries() if e["path"] == path and e["method"] == "POST"]
    assert [e["auth"] for e in sends] == ["jwt", "jwt", "jwt"]
    assert all(e["scopes"] == [f"write:inputStreams:{run}"] for e in sends)


def test_create_public_token_read_scope_lets_the_sdk_receive(sdk, server, run):
    server.send(run, "r", {"hello": "reader"})
    token, claims, _ = mint_with_sdk(sdk, {"read": {"runs": [run]}})
    assert claims["scopes"] == [f"read:runs:{run}"]
    assert sdk.receive(run, "r", 1, "once", token=token) == [{"hello": "reader"}]
    out = sdk.run("retrieve", token=token, RUN_ID=run)
    assert out[0]["run"]["id"] == run


def test_scope_refusal_is_an_error_in_the_sdk(sdk, server, run):
    other, _ = server.trigger_run()
    # Write scope for another run, then a read-only scope for this one.
    for scopes in ({"write": {"inputStreams": [other]}}, {"read": {"runs": [run]}}):
        token, _, sends = mint_with_sdk(sdk, scopes, run, ('"nope"',), stream="guarded")
        assert len(sends) == 1
        s = sends[0]
        assert (s["failed"], s["status"], s["name"]) == (0, 403, "PermissionDeniedError"), s
        assert s["error"] == "Unauthorized"
        out = sdk.run("send", ['"nope"'], token=token, expect_rc=2, RUN_ID=run,
                      STREAM_ID="guarded")
        assert out[0]["status"] == 403
    assert server.records(run, "guarded") == []


def test_expired_and_foreign_tokens_are_401_in_the_sdk(sdk, server, run):
    expired = server.mint([f"write:inputStreams:{run}"], exp_in=-5)
    out = sdk.run("send", ["1"], token=expired, expect_rc=2, RUN_ID=run, STREAM_ID="x")
    assert (out[0]["status"], out[0]["name"]) == (401, "AuthenticationError")
    assert out[0]["error"] == "Public Access Token is invalid"
    forged = server.mint([f"write:inputStreams:{run}"], key="tr_dev_" + "x" * 24)
    out = sdk.run("send", ["1"], token=forged, expect_rc=2, RUN_ID=run, STREAM_ID="x")
    assert (out[0]["status"], out[0]["name"]) == (401, "AuthenticationError")
    assert server.records(run, "x") == []


def test_create_public_token_needs_the_secret_key(sdk, server, run):
    """createPublicToken asks the claims endpoint first; a public token is
    not allowed there."""
    token = server.mint([f"write:inputStreams:{run}"])
    out = sdk.run("token", token=token, expect_rc=2, TOKEN_OUT=sdk.path("t"),
                  SCOPES=json.dumps({"write": {"inputStreams": [run]}}))
    assert out[0]["mint"] == "failed" and out[0]["status"] == 401


# ---- (d) tasks.trigger and its public token; runs.retrieve / runs.list


def test_trigger_returns_a_run_and_a_token_that_sends(sdk, server):
    token_file = sdk.path("token")
    out = sdk.run("trigger", ['"via trigger token"', '{"n":1}'], TASK_ID="sdk-task",
                  PAYLOAD='{"n":"1","when":"now"}', TOKEN_OUT=token_file, STREAM_ID="t")
    run = out[0]["id"]
    assert RUN_ID_RE.fullmatch(run)
    assert out[0]["claims"]["scopes"] == [f"read:runs:{run}", f"write:inputStreams:{run}"]
    assert out[0]["claims"]["sub"] == server.env_id
    assert out[1:] == [{"sent": 0}, {"sent": 1}]
    token = token_file.read_text()
    server.send(run, "t", "via http", token=token)
    assert server.records(run, "t") == [(0, "via trigger token"), (1, {"n": 1}),
                                        (2, "via http")]
    # The run's token reads the run and receives, but sends nowhere else.
    assert sdk.receive(run, "t", 3, "on", token=token) == ["via trigger token", {"n": 1},
                                                           "via http"]
    other, _ = server.trigger_run()
    out = sdk.run("send", ["1"], token=token, expect_rc=2, RUN_ID=other, STREAM_ID="t")
    assert out[0]["status"] == 403
    # The superjson payload the SDK sent comes back as the value.
    got = sdk.run("retrieve", token=token, RUN_ID=run)[0]["run"]
    assert got["payload"] == {"n": "1", "when": "now"}
    assert got["taskIdentifier"] == "sdk-task"


def test_trigger_sends_a_superjson_payload(sdk, server):
    trace = sdk.path("trace")
    out = sdk.run("trigger", TASK_ID="sdk/task one", PAYLOAD='{"a":[1,"2"]}',
                  TOKEN_OUT=sdk.path("token"), SDK_TRACE=trace)
    req, resp = read_trace(trace)[:2]
    assert req["request"]["url"] == server.url + "/api/v1/tasks/sdk%2Ftask%20one/trigger"
    body = json.loads(req["request"]["body"])
    assert body["payload"] == '{"json":{"a":[1,"2"]}}'
    assert body["options"]["payloadType"] == "application/super+json"
    assert body["options"]["payloadSize"] == len(body["payload"])
    assert resp["response"]["headers"]["x-trigger-jwt"] == "<jwt>"
    run = out[0]["id"]
    got = sdk.run("retrieve", RUN_ID=run)[0]["run"]
    assert (got["taskIdentifier"], got["payload"]) == ("sdk/task one", {"a": [1, "2"]})


def test_runs_retrieve_and_cancel(sdk, server, run):
    out = sdk.run("retrieve", RUN_ID=run)[0]
    got = out["run"]
    assert got["id"] == run and got["status"] == "EXECUTING"
    assert got["isExecuting"] is True and got["isCompleted"] is False
    assert "finishedAt" not in got
    assert {"createdAt", "updatedAt"} <= set(out["dates"])
    assert sdk.run("cancel", RUN_ID=run) == [{"id": run}]
    wait_for(lambda: server.api("GET", f"/api/v3/runs/{run}")[2].get("isCompleted"),
             what="the pending cancel to end")
    out = sdk.run("retrieve", RUN_ID=run)[0]
    got = out["run"]
    assert got["status"] == "CANCELED"
    assert (got["isCompleted"], got["isCancelled"], got["isSuccess"]) == (True, True, False)
    assert "finishedAt" in out["dates"]
    missing = sdk.run("retrieve", expect_rc=2, RUN_ID="run_doesnotexist0000")[0]
    # (x-should-retry: true: the SDK retries before it gives up)
    assert (missing["status"], missing["error"]) == (404, "Not found")
    # A canceled run takes no more input.
    out = sdk.run("send", ["1"], expect_rc=2, RUN_ID=run, STREAM_ID="s")
    assert (out[0]["status"], out[0]["name"]) == (400, "BadRequestError")


def test_runs_list_parses_pages(sdk, server):
    a, _ = server.trigger_run("list-a")
    b, _ = server.trigger_run("list-b")
    out = sdk.run("list", STATUS="EXECUTING", LIMIT=1)[0]
    assert out["ids"] == [b] and out["hasNext"] is True
    assert out["first"]["env"]["id"] == server.env_id
    server.cancel(a)
    out = sdk.run("list", STATUS="CANCELED", LIMIT=100)[0]
    assert a in out["ids"] and b not in out["ids"]


# ---- send errors the SDK surfaces


def test_send_errors_surface_in_the_sdk_without_retries(sdk, server, run):
    big = json.dumps("x" * (1024 * 1024))
    trace = sdk.path("trace")
    out = sdk.run("send", [big], expect_rc=2, RUN_ID=run, STREAM_ID="e", SDK_TRACE=trace)
    assert (out[0]["status"], out[0]["error"]) == (413, "Request body too large")
    out = sdk.run("send", ["1"], expect_rc=2, RUN_ID="run_doesnotexist0000", STREAM_ID="e",
                  SDK_TRACE=trace)
    assert (out[0]["status"], out[0]["name"], out[0]["error"]) == (404, "NotFoundError",
                                                                   "Run not found")
    server.cancel(run)
    out = sdk.run("send", ["1"], expect_rc=2, RUN_ID=run, STREAM_ID="e", SDK_TRACE=trace)
    assert (out[0]["status"], out[0]["name"]) == (400, "BadRequestError")
    assert out[0]["error"] == "Cannot send to input stream on a completed run"
    # Each failed at once: one request apiece, no retry.
    assert len([e for e in read_trace(trace) if "request" in e]) == 3


# ---- the server side of .wait()


def sdk_wait(sdk: Sdk, run: str, stream: str, **env: Any) -> str:
    out = sdk.run("wait", ACTION="create", RUN_ID=run, STREAM_ID=stream, **env)
    assert out[0]["isCached"] is False and out[0]["waitpointId"].startswith("waitpoint_")
    return out[0]["waitpointId"]


def test_wait_waitpoint_completes_with_the_sent_value(sdk, server, run):
    wp = sdk_wait(sdk, run, "approval", TIMEOUT="5m")
    got = sdk.run("wait", ACTION="retrieve", WAITPOINT_ID=wp, POLL_MS=0)[0]
    assert got["status"] == "WAITING" and "output" not in got
    sdk.send(run, "approval", ['"123"'])
    got = sdk.run("wait", ACTION="retrieve", WAITPOINT_ID=wp)[0]
    assert (got["status"], got["output"], got["error"]) == ("COMPLETED", "123", None)
    assert {"createdAt", "completedAt", "timeoutAt"} <= set(got["dates"])


def test_wait_after_data_was_sent_completes_at_once(sdk, server, run):
    """What .wait() finds already sent (after lastSeqNum) completes it."""
    server.send(run, "s", {"first": True})
    server.send(run, "s", {"second": [1.5, None]})
    wp = sdk_wait(sdk, run, "s")
    got = sdk.run("wait", ACTION="retrieve", WAITPOINT_ID=wp, POLL_MS=0)[0]
    assert (got["status"], got["output"]) == ("COMPLETED", {"first": True})
    wp = sdk_wait(sdk, run, "s", LAST_SEQ=0)
    got = sdk.run("wait", ACTION="retrieve", WAITPOINT_ID=wp, POLL_MS=0)[0]
    assert (got["status"], got["output"]) == ("COMPLETED", {"second": [1.5, None]})


def test_wait_timeout_is_an_error_in_the_sdk(sdk, run):
    wp = sdk_wait(sdk, run, "late", TIMEOUT="1s")
    got = sdk.run("wait", ACTION="retrieve", WAITPOINT_ID=wp, POLL_MS=10000)[0]
    assert got["status"] == "TIMED_OUT"
    assert got["error"]["name"] == "WaitpointTimeoutError" and "output" not in got


def test_trigger_with_an_idempotency_key_returns_the_same_run(sdk, server):
    key = f"idem-{time.monotonic_ns()}"
    first = sdk.run("trigger", TASK_ID="idem-task", IDEMPOTENCY_KEY=key, TAGS="a,b:c",
                    TOKEN_OUT=sdk.path("token"))[0]
    again = sdk.run("trigger", TASK_ID="idem-task", IDEMPOTENCY_KEY=key,
                    TOKEN_OUT=sdk.path("token"))[0]
    other = sdk.run("trigger", TASK_ID="idem-task", IDEMPOTENCY_KEY=key + "x",
                    TOKEN_OUT=sdk.path("token"))[0]
    assert first["id"] == again["id"] != other["id"]
    # The cached answer still carries a token for that run.
    assert again["claims"]["scopes"] == [f"read:runs:{first['id']}",
                                         f"write:inputStreams:{first['id']}"]
    got = sdk.run("retrieve", RUN_ID=first["id"])[0]["run"]
    assert got["tags"] == ["a", "b:c"]


def test_sdk_replays_a_finished_runs_stream(sdk, server, run):
    server.send(run, "done", "kept-1")
    sdk.send(run, "done", ['"kept-2"'])
    server.cancel(run)
    assert sdk.receive(run, "done", 2, "once") == ["kept-1", "kept-2"]


def test_sdk_round_trips_large_values_and_many_records(sdk, server, run):
    big = {"blob": "é" * (256 * 1024), "n": 1}          # 512 KiB of UTF-8
    lines = [json.dumps(big, ensure_ascii=False)] + [str(i) for i in range(300)]
    sdk.send(run, "bulk", lines)
    got = sdk.receive(run, "bulk", len(lines), "on")
    assert got[0] == big and got[1:] == list(range(300))


def test_sdk_tail_without_read_scope_is_refused(sdk, server, procs, run):
    """A token that may send but not read: the SSE request is a 403, which
    the SDK's subscription treats as final (its manager logs it and backs
    off); nothing is delivered."""
    server.send(run, "secret", "not for you")
    token = server.mint([f"write:inputStreams:{run}"])
    p = sdk.start("receive", token=token, RUN_ID=run, STREAM_ID="secret", COUNT=1,
                  MODE="once", TIMEOUT_MS=2500, SDK_DEBUG=1)
    rc, out, err = procs.finish(p)
    assert rc == 3 and json.loads(out)["timeout"] is True, (out, err)
    assert "PermissionDeniedError" in err and "403 Could not subscribe" in err, err
    path = server.stream_path(run, "secret")
    tails = [e for e in server.request_log_entries() if e["path"] == path and e["method"] == "GET"]
    assert tails and all(e["status"] == 403 for e in tails)


# ---- output streams and waitpoint tokens


def test_sdk_streams_read_gets_what_was_written_through_s2(sdk, server):
    """What a writer appends to the S2 endpoint (each value one record whose
    envelope's data is the value itself, as streams.writer writes it), the
    SDK's streams.read yields as the same values: objects stay objects."""
    run, run_token = server.trigger_run()
    values = [{"step": 1, "of": 3}, "two", [3, {"x": None}]]
    server.write_output(run, "progress", values)
    out = sdk.run("read_output", RUN_ID=run, STREAM_ID="progress", COUNT=3)
    assert [o["value"] for o in out[:3]] == values
    assert [o["type"] for o in out[:3]] == ["object", "string", "object"]
    assert out[3] == {"done": 3}
    # with the run's public token, as a frontend reads it
    out = sdk.run("read_output", token=run_token, RUN_ID=run, STREAM_ID="progress", COUNT=3)
    assert [o["value"] for o in out[:3]] == values


@pytest.mark.parametrize("complete_with", ["key", "jwt"])
def test_sdk_waitpoint_tokens(sdk, server, complete_with):
    """wait.createToken, completeToken (with the secret key, or the token's
    own public access token as a frontend), retrieveToken and listTokens."""
    out = sdk.run("tokens", COMPLETE_WITH=complete_with)
    steps = {k: v for o in out for k, v in o.items()}
    assert steps["created"]["id"].startswith("waitpoint_")
    assert steps["created"]["hasPublicAccessToken"] is True
    assert steps["created"]["url"].startswith(server.url + "/api/v1/waitpoints/tokens/")
    assert steps["before"] == {"status": "WAITING", "output": None}
    assert steps["completed"] == {"success": True}
    assert steps["after"] == {"status": "COMPLETED",
                              "output": {"approved": True, "by": complete_with},
                              "completedAt": True}
    assert steps["listed"] is True


def test_sdk_on_a_v1_run(sdk, server):
    """A run stamped v1 (the self-hosted default): what the SDK sends is
    stored and read back Redis-style, and streams.read parses the v1 SSE of
    its output streams (a part appended raw comes back as that text)."""
    status, _, body = server.api("POST", "/api/v1/tasks/demo/trigger", {"payload": 1},
                                 headers={"x-trigger-realtime-streams-version": "v1"})
    assert status == 200
    run = body["id"]
    sdk.send(run, "chat", ['{"v1":true}', '"two"'])
    with server.sse(run, "chat", headers={"Timeout-Seconds": "1"}) as s:
        assert "X-Stream-Version" not in s.headers
        lines = [line for line in s.body().decode().splitlines() if line.startswith("data: ")]
    assert [json.loads(json.loads(line[6:])) for line in lines] == [{"v1": True}, "two"]
    for part in ("hello v1", '{"a":1}'):
        assert server.api("PUT", f"/realtime/v1/streams/{run}/self/log")[::2] == \
            (202, {"version": "v1"})
        assert server.api("POST", f"/realtime/v1/streams/{run}/self/log/append",
                          part.encode())[::2] == (200, {"ok": True})
    out = sdk.run("read_output", RUN_ID=run, STREAM_ID="log", COUNT=2)
    assert [(o["value"], o["type"]) for o in out[:2]] == [("hello v1", "string"),
                                                          ('{"a":1}', "string")]
