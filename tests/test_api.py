"""The local API server against trigger-api.md: every endpoint's answers and
error bodies, auth and scopes, SSE bytes, persistence across kill -9,
waitpoints, limits, and 2,000 concurrent subscribers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import os
import re
import resource
import subprocess
import time

import jwt
import pytest

from devserver_ctl import DEVSERVER, NOAUTH, DevServer, envelope_value, wait_for

FORBIDDEN = {"error": "Unauthorized", "code": "unauthorized", "param": "access_token",
             "type": "authorization"}
INVALID_KEY = {"error": "Invalid API key"}
MISSING_KEY = {"error": "Invalid or Missing API key"}
NO_AUTHORIZATION = {"title": "Unauthorized", "status": 401,
                    "type": "https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401",
                    "detail": "No authorization header provided",
                    "error": "No authorization header provided"}
TOKEN_INVALID = {"error": "Public Access Token is invalid"}
TOKEN_NO_ENV = {"error": "Invalid Public Access Token"}
RUN_ID = re.compile(r"run_[a-z0-9]+")
ENVELOPE = re.compile(r'\{"data":("(?:[^"\\]|\\.)*"),"id":"inp_[0-9a-f]{12}"\}')
MIB = 1024 * 1024
API_VERSION = {"x-trigger-api-version": "2025-07-16"}


def stream(run: str, name: str = "chat") -> str:
    return DevServer.stream_path(run, name)


def sse_status(server, run, name="chat", token=None, headers=None) -> tuple:
    with server.sse(run, name, token, {"Timeout-Seconds": "1", **(headers or {})}) as s:
        body = s.body()
        return s.status, (json.loads(body) if body.startswith(b"{") else body)


# ---------------------------------------------------------------- auth: 401

@pytest.mark.parametrize("method,path", [
    ("POST", "/api/v1/tasks/demo/trigger"),
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v3/runs/run_x"),
    ("POST", "/api/v2/runs/run_x/cancel"),
    ("POST", "/realtime/v1/streams/run_x/input/chat"),
    ("GET", "/realtime/v1/streams/run_x/input/chat"),
    ("POST", "/api/v1/runs/run_x/input-streams/wait"),
    ("GET", "/api/v1/waitpoints/tokens/waitpoint_x"),
])
def test_no_credential_and_wrong_key_are_401_on_every_route(server, method, path):
    """Under /api/ a missing header is answered by the rate limiter first."""
    body = {"data": 1} if method == "POST" else None
    status, headers, resp = server.api(method, path, body, token=NOAUTH)
    if path.startswith("/api/"):
        assert (status, resp) == (401, NO_AUTHORIZATION)
        assert headers["Content-Type"] == "application/problem+json; charset=utf-8"
    else:
        assert (status, resp) == (401, MISSING_KEY)
    for token in ("tr_dev_" + "x" * 24, "not-a-key"):
        status, _, resp = server.api(method, path, body, token=token)
        assert (status, resp) == (401, INVALID_KEY), token


def test_claims_needs_the_secret_key(server, run):
    status, _, body = server.api("POST", "/api/v1/auth/jwt/claims")
    assert status == 200
    assert body == {"sub": server.env_id, "pub": True}
    assert re.fullmatch(r"[a-z0-9]{25}", body["sub"])
    for token in (NOAUTH, "tr_dev_wrong", server.mint(["admin"])):
        status, _, body = server.api("POST", "/api/v1/auth/jwt/claims", token=token)
        assert (status, body) == (401, {"error": "Invalid or Missing API key"})
    assert server.api("GET", "/api/v1/auth/jwt/claims")[0] == 405


def test_malformed_jwts_are_401(server, run):
    good = server.mint([f"write:inputStreams:{run}"])
    head, payload, sig = good.split(".")
    cases = [
        ("not a token at all", "abc.def.ghi", INVALID_KEY),
        ("two parts", head + "." + payload, INVALID_KEY),
        ("payload not JSON", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig", INVALID_KEY),
        ("pub not true", server.mint([f"write:inputStreams:{run}"], pub=False), INVALID_KEY),
        ("tampered signature", f"{head}.{payload}.{sig[:-4]}AAAA", TOKEN_INVALID),
        ("no signature", f"{head}.{payload}.", TOKEN_INVALID),
    ]
    for label, token, expected in cases:
        status, _, body = server.api("POST", stream(run), {"data": 1}, token=token)
        assert (status, body) == (401, expected), label


def test_expired_jwt_is_401(server, run):
    token = server.mint([f"write:inputStreams:{run}"], exp_in=-1)
    assert server.api("POST", stream(run), {"data": 1}, token=token)[::2] == (401, TOKEN_INVALID)
    assert sse_status(server, run, token=token) == (401, TOKEN_INVALID)


def test_bad_signature_and_bad_claims_are_401(server, run):
    scopes = [f"write:inputStreams:{run}"]
    cases = [
        (server.mint(scopes, key="tr_dev_" + "o" * 24), TOKEN_INVALID),  # other key
        (server.mint(scopes, iss="https://evil.example"), TOKEN_INVALID),
        (server.mint(scopes, aud="https://other.example"), TOKEN_INVALID),
        (server.mint(scopes, iss=None), TOKEN_INVALID),
        (server.mint(scopes, nbf=int(time.time()) + 600), TOKEN_INVALID),
        (server.mint(scopes, sub="c" * 25), TOKEN_NO_ENV),
        (server.mint(scopes, sub=None), TOKEN_NO_ENV),
    ]
    for token, expected in cases:
        status, _, body = server.api("POST", stream(run), {"data": 1}, token=token)
        assert (status, body) == (401, expected), jwt.decode(
            token, options={"verify_signature": False})
    # A token without exp does not expire (jose does not require exp).
    assert server.api("POST", stream(run), {"data": 1},
                      token=server.mint(scopes, exp=None))[0] == 200


# ---------------------------------------------------------------- auth: 403 and scopes

def test_jwt_with_wrong_scope_or_for_another_run_is_403(server, run):
    other, _ = server.trigger_run()
    tokens = [server.mint([f"read:runs:{run}"]),                 # read cannot write
              server.mint([f"write:inputStreams:{other}"]),      # another run
              server.mint([f"write:runs:{run}"]),                # wrong type
              server.mint([])]
    for token in tokens:
        status, _, body = server.api("POST", stream(run), {"data": 1}, token=token)
        assert (status, body) == (403, FORBIDDEN)
    # A send (an action) checks the scopes before the run: 403, not 404.
    token = server.mint([f"write:inputStreams:{run}"])
    status, _, body = server.api("POST", stream("run_doesnotexist"), {"data": 1}, token=token)
    assert (status, body) == (403, FORBIDDEN)
    # A read (a loader) looks the run up first: 404, as the real server.
    assert sse_status(server, "run_doesnotexist", token=server.mint([f"read:runs:{run}"])) == \
        (404, {"error": "Not found"})
    assert server.records(run, "chat") == []      # nothing was stored


@pytest.mark.parametrize("scope,allowed", [
    ("write:inputStreams:{run}", True), ("write:inputStreams", True),
    ("write:all", True), ("admin", True), ("*:inputStreams:{run}", True),
    ("read:all", False), ("read:runs:{run}", False), ("write:inputStreams:{other}", False),
    ("write:inputStreams:{run}x", False), ("write:tasks:demo", False),
])
def test_send_scopes(server, run, scope, allowed):
    token = server.mint([scope.format(run=run, other="run_other")])
    status, _, body = server.api("POST", stream(run), {"data": scope}, token=token)
    assert (status, body) == ((200, {"ok": True}) if allowed else (403, FORBIDDEN))


@pytest.mark.parametrize("scope,allowed", [
    ("read:runs:{run}", True), ("read:runs", True), ("read:tasks:scoped-task", True),
    ("read:tags:file:1234", True), ("read:all", True), ("admin", True),
    ("read:tags:file", False), ("read:tasks:demo", False), ("read:runs:{other}", False),
    ("write:all", False), ("write:inputStreams:{run}", False), ("read:batch:batch_x", False),
])
def test_receive_and_retrieve_scopes(server, scope, allowed):
    run, _ = server.trigger_run("scoped-task", tags=["file:1234", "b"])
    other, _ = server.trigger_run()
    server.send(run, "chat", "hello")
    token = server.mint([scope.format(run=run, other=other)])
    if allowed:
        assert server.records(run, "chat", token=token) == [(0, "hello")]
        status, _, body = server.api("GET", f"/api/v3/runs/{run}", token=token)
        assert (status, body["id"]) == (200, run)
    else:
        assert sse_status(server, run, token=token) == (403, FORBIDDEN)
        assert server.api("GET", f"/api/v3/runs/{run}", token=token)[::2] == (403, FORBIDDEN)


def test_trigger_jwt_header_is_a_run_scoped_token(server):
    run, token = server.trigger_run()
    claims = jwt.decode(token, server.secret_key, algorithms=["HS256"],
                        audience="https://api.trigger.dev", issuer="https://id.trigger.dev")
    assert jwt.get_unverified_header(token) == {"alg": "HS256"}
    assert claims["scopes"] == [f"read:runs:{run}", f"write:inputStreams:{run}"]
    assert claims["sub"] == server.env_id and claims["pub"] is True
    assert claims["exp"] - claims["iat"] == 3600        # 1 hour
    server.send(run, "chat", {"from": "token"}, token=token)
    assert server.records(run, "chat", token=token) == [(0, {"from": "token"})]
    assert server.api("GET", f"/api/v3/runs/{run}", token=token)[0] == 200
    other, _ = server.trigger_run()
    assert server.api("POST", stream(other), {"data": 1}, token=token)[::2] == (403, FORBIDDEN)
    assert server.api("POST", f"/api/v2/runs/{run}/cancel", token=token)[::2] == \
        (403, FORBIDDEN)
    assert server.api("GET", "/api/v1/runs", token=token)[::2] == (403, FORBIDDEN)


def test_request_log_records_the_credential_kind_and_never_the_key(server, run):
    token = server.mint([f"write:inputStreams:{run}"])
    server.send(run, "logged", 1)
    server.send(run, "logged", 2, token=token)
    server.api("POST", stream(run, "logged"), {"data": 3}, token=NOAUTH)
    path = stream(run, "logged")
    # Lines are written before the answer is sent, so they are there now.
    entries = [e for e in server.request_log_entries() if e["path"] == path]
    assert [(e["status"], e["auth"]) for e in entries] == \
        [(200, "secret"), (200, "jwt"), (401, "none")]
    assert entries[1]["scopes"] == [f"write:inputStreams:{run}"]
    logs = server.request_log.read_text() + server.stderr_log.read_text()
    # Booleans first, so that a failure does not print the credentials.
    key_leaked, token_leaked = server.secret_key in logs, token in logs
    assert not key_leaked and not token_leaked, "a credential appears in the logs"
    assert f"POST {path} -> 200 [jwt]" in server.stderr_log.read_text()


# ---------------------------------------------------------------- runs

def test_trigger_answers_an_id_and_stores_the_payload(server):
    superjson = json.dumps({"json": {"when": "2024-01-01T00:00:00.000Z", "n": 1}})
    status, headers, body = server.api("POST", "/api/v1/tasks/my%2Ftask/trigger", {
        "payload": superjson, "options": {"payloadType": "application/super+json",
                                          "payloadSize": len(superjson), "tags": "solo"}})
    assert status == 200 and body == {"id": body["id"], "isCached": False}
    assert RUN_ID.fullmatch(body["id"])
    assert json.loads(headers["x-trigger-jwt-claims"])["scopes"][0] == f"read:runs:{body['id']}"
    status, _, run = server.api("GET", f"/api/v3/runs/{body['id']}")
    assert status == 200
    assert run["taskIdentifier"] == "my/task" and run["tags"] == ["solo"]
    assert run["payload"] == {"when": "2024-01-01T00:00:00.000Z", "n": 1}


def test_trigger_idempotency(server):
    headers = {"x-trigger-request-idempotency-key": f"req-{time.time()}"}
    first = server.api("POST", "/api/v1/tasks/demo/trigger", {"payload": 1}, headers=headers)
    retry = server.api("POST", "/api/v1/tasks/demo/trigger", {"payload": 1}, headers=headers)
    assert first[2] == retry[2] == {"id": first[2]["id"], "isCached": False}
    key = {"options": {"idempotencyKey": f"k-{time.time()}"}}
    a = server.api("POST", "/api/v1/tasks/demo/trigger", key)[2]
    b = server.api("POST", "/api/v1/tasks/demo/trigger", key)[2]
    assert (a["isCached"], b) == (False, {"id": a["id"], "isCached": True})


def test_trigger_errors(server):
    path = "/api/v1/tasks/demo/trigger"
    assert server.api("POST", path, b"")[::2] == (400, {"error": "Request body is empty"})
    for bad in (b"{nope", b"null", b"0"):
        assert server.api("POST", path, bad)[::2] == (400, {"error": "Invalid JSON"})
    status, _, body = server.api("POST", path, {"options": {"tags": [1]}})
    assert status == 400 and body["error"].startswith("Validation error")
    status, _, body = server.api("POST", path, {"options": {"tags": [str(i) for i in range(11)]}})
    assert status == 422
    assert server.api("POST", path, {}, token=server.mint(["write:tasks:other"]))[::2] == \
        (403, FORBIDDEN)
    for scope in ("write:tasks:demo", "trigger:tasks:demo", "write:all", "admin"):
        assert server.api("POST", path, {}, token=server.mint([scope]))[0] == 200, scope
    status, _, body = server.api("POST", path, b'{"payload":"' + b"x" * (3 * MIB) + b'"}')
    assert (status, body) == (413, {"error": "Request body too large"})


def test_retrieve_run(server):
    run, _ = server.trigger_run(payload={"a": [1, 2.5]}, tags=["t1"])
    status, _, body = server.api("GET", f"/api/v3/runs/{run}")
    assert status == 200
    assert body["id"] == run and body["status"] == "EXECUTING"
    assert body["taskIdentifier"] == "demo" and body["payload"] == {"a": [1, 2.5]}
    assert body["isExecuting"] is True and body["isCompleted"] is False
    assert "finishedAt" not in body
    for key in ("createdAt", "updatedAt"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body[key])
    for key, kind in (("tags", list), ("costInCents", int), ("baseCostInCents", int),
                      ("durationMs", int), ("depth", int), ("triggerFunction", str),
                      ("relatedRuns", dict), ("isTest", bool), ("isSuccess", bool),
                      ("isFailed", bool), ("isCancelled", bool), ("isQueued", bool),
                      ("isWaiting", bool)):
        assert isinstance(body[key], kind), key
    # The real server reads a replica: a 404 says it may be lag.
    status, headers, body = server.api("GET", "/api/v3/runs/run_nope")
    assert (status, body) == (404, {"error": "Not found"})
    assert headers["x-should-retry"] == "true"


def test_list_runs_newest_first_with_filters_and_cursor(make_server):
    srv = make_server()
    runs = [srv.trigger_run()[0] for _ in range(5)]
    srv.cancel(runs[1])
    wait_for(lambda: srv.api("GET", f"/api/v3/runs/{runs[1]}")[2]["isCompleted"],
             what="the pending cancel to end")
    status, _, body = srv.api("GET", "/api/v1/runs")
    assert status == 200
    assert [r["id"] for r in body["data"]] == runs[::-1]
    assert body["pagination"] == {}          # absent cursors are left out
    assert body["data"][0]["env"] == {"id": srv.env_id, "name": "dev"}
    status, _, body = srv.api("GET", "/api/v1/runs?filter%5Bstatus%5D=EXECUTING,WAITING"
                                     "&page%5Bsize%5D=2")
    assert [r["id"] for r in body["data"]] == [runs[4], runs[3]]
    assert body["pagination"] == {"next": runs[3]}
    status, _, body = srv.api("GET", f"/api/v1/runs?filter[status]=EXECUTING&page[size]=2"
                                     f"&page[after]={runs[3]}")
    assert [r["id"] for r in body["data"]] == [runs[2], runs[0]]
    assert "next" not in body["pagination"]
    body = srv.api("GET", "/api/v1/runs?filter[status]=CANCELED")[2]
    assert [(r["id"], r["status"]) for r in body["data"]] == [(runs[1], "CANCELED")]
    assert srv.api("GET", "/api/v1/runs?filter[status]=BOGUS")[0] == 400
    assert srv.api("GET", "/api/v1/runs?page[size]=0")[0] == 400
    # Both status namings are accepted (FROZEN is the legacy WAITING).
    assert srv.api("GET", "/api/v1/runs?filter[status]=FROZEN")[0] == 200
    assert srv.api("GET", "/api/v1/runs", token=srv.mint(["read:runs"]))[0] == 200
    assert srv.api("GET", "/api/v1/runs", token=srv.mint(["read:tasks"]))[0] == 200
    assert srv.api("GET", "/api/v1/runs", token=srv.mint(["read:tasks:demo"]))[::2] == \
        (403, FORBIDDEN)
    assert srv.api("GET", "/api/v1/runs", token=srv.mint(["read:all"]))[0] == 200
    assert srv.api("GET", "/api/v1/runs", token=srv.mint([f"read:runs:{runs[0]}"]))[::2] == \
        (403, FORBIDDEN)


def test_cancel_finishes_the_run(server, run):
    """As a run a worker executes: pending cancel (still EXECUTING) for a
    moment, then CANCELED and finished."""
    server.send(run, "chat", "before")
    assert server.api("POST", f"/api/v2/runs/{run}/cancel")[::2] == (200, {"id": run})
    body = wait_for(lambda: (lambda b: b if b["isCompleted"] else None)(
        server.api("GET", f"/api/v3/runs/{run}", headers=API_VERSION)[2]),
        what="the cancel to finish the run")
    assert (body["status"], body["isCompleted"], body["isCancelled"]) == ("CANCELED", True, True)
    assert re.fullmatch(r"\d{4}-.*Z", body["finishedAt"])
    status, _, body = server.api("POST", stream(run), {"data": "after"})
    assert (status, body) == (400, {"ok": False,
                                    "error": "Cannot send to input stream on a completed run"})
    assert server.records(run, "chat") == [(0, "before")]   # still replayed
    assert server.api("POST", "/api/v2/runs/run_nope/cancel")[::2] == \
        (404, {"error": "Resource not found"})
    token = server.mint([f"write:runs:{run}"])
    assert server.api("POST", f"/api/v2/runs/{run}/cancel", token=token)[0] == 200


# ---------------------------------------------------------------- send

def stored_bodies(server, run, name="chat") -> list:
    return [r["body"] for r in server.raw_records(run, name)]


def test_send_stores_the_envelope_exactly(server, run):
    values = [{"approved": True}, "123", 123, None, [1, "two"], "é😀\u2028"]
    for v in values:
        server.send(run, "chat", v)
    bodies = stored_bodies(server, run)
    for body, v in zip(bodies, values):
        m = ENVELOPE.fullmatch(body)
        assert m, body
        assert json.loads(m.group(1)) == json.dumps(v, separators=(",", ":"),
                                                     ensure_ascii=False)
    assert [envelope_value(b) for b in bodies] == values
    assert isinstance(envelope_value(bodies[1]), str)    # "123" stays a string
    assert len({json.loads(b)["id"] for b in bodies}) == len(values)


NODE_CASES = ['1.0', '-0', '1e21', '1e-7', '0.000001', '12345678901234567890', '1E400',
              '0.1', '5e-324', '{"b":1,"a":2,"10":3,"2":4,"02":5}', '{"a":1,"a":2}',
              '"\\ud800 lone"', '"\\u001f\\u007f"', '"\\ud83d\\ude00"', '[1.5e300,-2.25e-10]',
              '{"__proto__":{"x":1}}', '123456.789e3']


def test_send_serialises_like_javascript(server, run):
    """The stored `data` is JSON.stringify(JSON.parse(x)) as Node computes it."""
    for case in NODE_CASES:
        status, _, body = server.api("POST", stream(run, "js"), '{"data":%s}' % case)
        assert (status, body) == (200, {"ok": True}), case
    script = "const c=JSON.parse(require('fs').readFileSync(0,'utf8'));" \
             "console.log(JSON.stringify(c.map(x=>JSON.stringify(JSON.parse(x)))))"
    node = subprocess.run(["node", "-e", script], input=json.dumps(NODE_CASES),
                          capture_output=True, text=True, check=True, timeout=60)
    expected = json.loads(node.stdout)
    got = [json.loads(b)["data"] for b in stored_bodies(server, run, "js")]
    assert got == expected


def test_send_invalid_bodies(server, run):
    """As the real route: a body that is not JSON is the catch-all 500, JSON
    that is not an object 400; an object without data is stored (a record
    without data, which readers skip)."""
    invalid = {"ok": False, "error": "Invalid request body"}
    for body in (b"", b"{", b"not json", b'{"data":NaN}', b'{"data":Infinity}',
                 b'{"data":1} x', b'{"data":' + b"[" * 5000 + b"]" * 5000 + b"}",
                 b'{"data":"\x00"}'):
        status, _, resp = server.api("POST", stream(run), body)
        assert (status, resp) == (500, {"error": "Internal Server Error"}), body[:40]
    for body in (b"[1,2]", b"null", b'"data"', b"5"):
        status, _, resp = server.api("POST", stream(run), body)
        assert (status, resp) == (400, invalid), body[:40]
    assert server.records(run, "chat") == []
    for body in (b"{}", b'{"value":1}'):
        assert server.api("POST", stream(run), body)[::2] == (200, {"ok": True})
    raw = server.raw_records(run, "chat")
    assert [r["seq_num"] for r in raw] == [0, 1]
    assert all(re.fullmatch(r'\{"id":"inp_[0-9a-f]{12}"\}', r["body"]) for r in raw)
    server.send(run, "chat", "still fine")
    assert server.records(run, "chat", last_event_id=1) == [(2, "still fine")]


def test_send_to_unknown_run_is_404(server):
    assert server.api("POST", stream("run_nope"), {"data": 1})[::2] == \
        (404, {"ok": False, "error": "Run not found"})


def test_send_over_1_mib_is_413(server, run):
    too_large = {"error": "Request body too large"}
    body = b'{"data":"' + b"x" * (MIB + 1 - 11) + b'"}'
    assert len(body) == MIB + 1
    assert server.api("POST", stream(run), body)[::2] == (413, too_large)
    # A request within 1 MiB whose stored record would exceed 1 MiB is 413 too.
    quotes = b'{"data":"' + b'\\"' * ((MIB - 11) // 2) + b'"}'
    status, _, resp = server.api("POST", stream(run), quotes)
    assert status == 413 and "per-record limit" in resp["error"]
    # Large but within the limits: stored and replayed intact.
    big = "y" * (MIB - 100)
    server.send(run, "chat", big)
    assert server.records(run, "chat") == [(0, big)]


def test_send_without_content_length_is_413(server, run):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", stream(run))
    conn.putheader("Authorization", f"Bearer {server.secret_key}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"c\r\n{\"data\":123}\r\n0\r\n\r\n")
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (413, {"error": "Request body too large"})
    conn.close()


def test_cors(server, run):
    status, headers, _ = server.api("OPTIONS", stream(run), token=NOAUTH, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE"
    assert headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert headers["Access-Control-Max-Age"] == "300"
    _, headers, _ = server.api("POST", stream(run), {"data": 1},
                               headers={"Origin": "https://app.example"})
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = server.api("POST", stream(run), {"data": 1})
    assert "Access-Control-Allow-Origin" not in headers      # only for an Origin
    _, headers, _ = server.api("POST", "/api/v1/tasks/demo/trigger", {})
    assert headers["Access-Control-Expose-Headers"] == "x-trigger-jwt,x-trigger-jwt-claims"
    # Routes without a CORS strategy answer none.
    _, headers, _ = server.api("POST", f"/api/v2/runs/{run}/cancel",
                               headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in headers


# ---------------------------------------------------------------- SSE receive

def read_events(sse, n: int) -> list:
    out = []
    for ev in sse.events():
        out.append(ev)
        if len(out) == n:
            break
    return out


def test_sse_headers_ping_and_done_after_timeout(server, run):
    t0 = time.monotonic()
    with server.sse(run, "empty", headers={"Timeout-Seconds": "1"}) as s:
        assert s.status == 200
        assert s.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert s.headers["X-Stream-Version"] == "v2"
        assert s.headers["Access-Control-Expose-Headers"] == "*, x-trigger-jwt,x-trigger-jwt-claims"
        raw = s.body()
    elapsed = time.monotonic() - t0
    assert re.fullmatch(rb'event: ping\ndata: \{"timestamp":\d{13},"tail":\{"seq_num":0,'
                        rb'"timestamp":0\}\}\n\ndata: \[DONE\]\n\n', raw)
    assert 0.9 <= elapsed < 3, elapsed


def test_sse_batch_format_and_tail(server, run):
    server.send(run, "chat", {"approved": True})
    server.send(run, "chat", "two")
    with server.sse(run, "chat", headers={"Timeout-Seconds": "1"}) as s:
        raw = s.body()
    # A replayed batch has no tail; the ping that says "caught up" has it.
    m = re.fullmatch(rb'event: batch\ndata: (\{.*\})\nid: 1,2,(\d+)\n\n'
                     rb'event: ping\ndata: (\{.*\})\n\ndata: \[DONE\]\n\n', raw)
    assert m, raw
    batch = json.loads(m.group(1))
    assert list(batch) == ["records"]
    records = batch["records"]
    assert [list(r) for r in records] == [["seq_num", "timestamp", "body"]] * 2
    assert [r["seq_num"] for r in records] == [0, 1]
    assert records[0]["timestamp"] <= records[1]["timestamp"]
    ping = json.loads(m.group(3))
    assert ping["tail"] == {"seq_num": 2, "timestamp": records[1]["timestamp"]}
    # the id line counts records and S2 metered bytes (8 + body) sent so far
    assert int(m.group(2)) == sum(8 + len(r["body"].encode()) for r in records)
    assert [envelope_value(r["body"]) for r in records] == [{"approved": True}, "two"]


def test_sse_live_records_arrive_as_they_are_sent(server, run):
    with server.sse(run, "live", headers={"Timeout-Seconds": "30"}) as s:
        events = s.events()
        assert next(events)["event"] == "ping"        # caught up, nothing stored
        t0 = time.monotonic()
        server.send(run, "live", {"n": 1})
        ev = next(events)
        assert time.monotonic() - t0 < 1.0
        batch = json.loads(ev["data"])
        assert ev["event"] == "batch" and ev["id"].startswith("0,1,")
        assert [(r["seq_num"], envelope_value(r["body"])) for r in batch["records"]] == \
            [(0, {"n": 1})]
        assert batch["tail"]["seq_num"] == 1
        server.send(run, "live", {"n": 2})
        ev = next(events)
        assert ev["id"].startswith("1,2,")
        assert json.loads(ev["data"])["records"][0]["seq_num"] == 1


def test_sse_resume_with_last_event_id(server, run):
    for i in range(4):
        server.send(run, "chat", i)
    assert server.records(run, "chat", last_event_id=1) == [(2, 2), (3, 3)]
    assert server.records(run, "chat", last_event_id=3) == []
    # The real server reads Last-Event-ID as a number: the S2 `id:` value
    # (seq,count,bytes) is not one, so it replays from the start.
    assert [seq for seq, _ in server.records(run, "chat", last_event_id="1,2,134")] == \
        [0, 1, 2, 3]
    # X-Trigger-Stream-Start: latest (no Last-Event-ID) starts at the last record.
    with server.sse(run, "chat", headers={"X-Trigger-Stream-Start": "latest",
                                          "Timeout-Seconds": "1"}) as s:
        # (the first event is the batch of the one record from there)
        assert [r["seq_num"] for r in json.loads(next(s.events())["data"])["records"]] == [3]
    # Past the tail: waits at the tail (S2 clamps), the next record is seq 4.
    with server.sse(run, "chat", headers={"Last-Event-ID": "99",
                                          "Timeout-Seconds": "30"}) as s:
        events = s.events()
        assert next(events)["event"] == "ping"
        server.send(run, "chat", 4)
        assert [r["seq_num"] for r in json.loads(next(events)["data"])["records"]] == [4]


def test_sse_timeout_seconds_bounds(server, run):
    cases = {"0": "Timeout seconds must be greater than 0",
             "601": "Timeout seconds must be less than 600",
             "-5": "Timeout seconds must be greater than 0",
             "soon": "Invalid timeout seconds"}
    for value, text in cases.items():
        with server.sse(run, "chat", headers={"Timeout-Seconds": value}) as s:
            assert (s.status, s.body().decode()) == (400, text), value
    with server.sse(run, "chat", headers={"Timeout-Seconds": "600"}) as s:
        assert s.status == 200
        assert next(s.events())["event"] == "ping"


def test_sse_unknown_run_is_404(server):
    with server.sse("run_nope", "chat") as s:
        assert (s.status, json.loads(s.body())) == (404, {"error": "Not found"})


def test_sse_pings_after_5_to_15_seconds_of_silence(server, run):
    """S2: a ping at once on catching up, then after every random 5-15 s of
    silence, each with the tail; Timeout-Seconds is an idle budget that a
    live batch renews."""
    with server.sse(run, "idle", headers={"Timeout-Seconds": "40"}, timeout=20) as s:
        t0 = time.monotonic()
        stamps = []
        for ev in s.events():
            stamps.append((ev.get("event"), time.monotonic() - t0, ev["data"]))
            if len(stamps) == 3:
                break
    assert [name for name, _, _ in stamps] == ["ping"] * 3
    assert stamps[0][1] < 0.5
    for (_, before, _), (_, after, data) in zip(stamps, stamps[1:]):
        assert 4.5 < after - before < 16, stamps
        assert json.loads(data)["tail"] == {"seq_num": 0, "timestamp": 0}


def test_sse_timeout_is_an_idle_budget(server, run):
    with server.sse(run, "budget", headers={"Timeout-Seconds": "2"}) as s:
        t0 = time.monotonic()
        events = s.events()
        assert next(events)["event"] == "ping"
        time.sleep(1.2)
        server.send(run, "budget", 1)
        batch = next(events)
        assert batch["event"] == "batch" and "tail" in json.loads(batch["data"])
        assert next(events)["data"] == "[DONE]"
        # 2 s after the record, not 2 s after connecting
        assert 3.0 < time.monotonic() - t0 < 5.0


def test_sse_replay_is_split_into_batches_within_1_mib(server, run):
    big = "z" * 400_000
    for _ in range(3):
        server.send(run, "big", big)
    with server.sse(run, "big", headers={"Timeout-Seconds": "30"}) as s:
        batches = [json.loads(ev["data"]) for ev in read_events(s, 2)]
    assert [[r["seq_num"] for r in b["records"]] for b in batches] == [[0, 1], [2]]
    assert all("tail" not in b for b in batches)       # replayed, not live
    for b in batches:
        assert sum(8 + len(r["body"]) for r in b["records"]) <= MIB


# ---------------------------------------------------------------- persistence

def test_records_and_seq_numbers_survive_kill_9(make_server):
    srv = make_server()
    key, env_id = srv.secret_key, srv.env_id
    run, token = srv.trigger_run()
    for v in ("a", {"b": 2}, [3]):
        srv.send(run, "chat", v)
    before = srv.raw_records(run, "chat")
    with srv.sse(run, "chat", headers={"Timeout-Seconds": "30"}) as s:
        events = s.events()
        next(events)                                  # the replay
        assert next(events)["event"] == "ping"        # caught up
        srv.kill9()
        try:                                          # the connection just ends
            rest = list(events)
        except (http.client.IncompleteRead, ConnectionError):
            rest = []
        assert rest == []
    srv.start()                                       # same db, same port
    assert (srv.secret_key, srv.env_id) == (key, env_id)
    assert srv.raw_records(run, "chat") == before     # same seq, timestamps, bytes
    assert srv.records(run, "chat", last_event_id=1) == [(2, [3])]
    srv.send(run, "chat", "after", token=token)       # old token still valid
    assert srv.records(run, "chat", last_event_id=2) == [(3, "after")]
    assert srv.api("GET", f"/api/v3/runs/{run}")[2]["status"] == "EXECUTING"


def test_secret_key_file_and_env(make_server, tmp_path):
    srv = make_server(db_dir=str(tmp_path))
    key_file = tmp_path / "dev.db.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"tr_dev_[A-Za-z0-9]{24}", srv.secret_key)
    env_id = srv.env_id
    srv.stop()
    srv2 = make_server(db_dir=str(tmp_path), env={"TRIGGER_SECRET_KEY": "tr_dev_fromenv"})
    status, _, _ = srv2.api("POST", "/api/v1/auth/jwt/claims", token="tr_dev_fromenv")
    assert status == 200
    assert srv2.api("POST", "/api/v1/auth/jwt/claims")[0] == 401   # file key not used
    # The environment id lives in the database, whatever the key.
    assert srv2.api("POST", "/api/v1/auth/jwt/claims",
                    token="tr_dev_fromenv")[2]["sub"] == env_id


def test_one_server_per_database(make_server, tmp_path):
    make_server(db_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"dev.db is used by another devserver \(pid \d+\)"):
        DevServer(db_dir=str(tmp_path)).start()


def test_print_env(tmp_path):
    db = tmp_path / "p.db"
    argv = [str(DEVSERVER), "--print-env", "--demo", "--port", "4999", "--db", str(db)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    key_file = tmp_path / "p.db.key"
    script = out + f'\n[ "$(printenv TRIGGER_SECRET_KEY)" = "$(cat {key_file})" ] && ' \
                   'echo "$TRIGGER_API_URL $TRIGGER_DEMO_RUN same-key"'
    url, run, same = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                    env={"PATH": os.environ["PATH"]}).stdout.split()
    assert (url, same) == ("http://127.0.0.1:4999", "same-key")
    assert RUN_ID.fullmatch(run)
    key = key_file.read_text().strip()
    token = re.search(r"TRIGGER_DEMO_TOKEN=(\S+)", out).group(1)
    claims = jwt.decode(token, key, algorithms=["HS256"], audience="https://api.trigger.dev")
    assert claims["scopes"] == [f"read:runs:{run}", f"write:inputStreams:{run}"]


# ---------------------------------------------------------------- waitpoints

def create_wait(server, run, body, token=None):
    status, _, resp = server.api("POST", f"/api/v1/runs/{run}/input-streams/wait", body,
                                 token=token)
    assert status == 200, resp
    assert set(resp) == {"waitpointId", "isCached"}
    assert re.fullmatch(r"waitpoint_[a-z0-9]+", resp["waitpointId"])
    return resp["waitpointId"]


def waitpoint(server, wp, token=None):
    status, _, body = server.api("GET", f"/api/v1/waitpoints/tokens/{wp}", token=token)
    assert status == 200, body
    return body


def test_wait_completes_at_once_when_data_is_already_there(server, run):
    server.send(run, "approval", {"approved": True})
    wp = create_wait(server, run, {"streamId": "approval"})
    body = waitpoint(server, wp)
    assert body["status"] == "COMPLETED"
    assert body["output"] == '{"approved":true}'
    assert (body["outputType"], body["outputIsError"]) == ("application/json", False)
    for key in ("createdAt", "completedAt"):
        assert body[key].endswith("Z")
    assert isinstance(body["tags"], list) and isinstance(body["url"], str)


def test_wait_completes_on_the_next_send(server, run):
    server.send(run, "approval", "old")
    wp = create_wait(server, run, {"streamId": "approval", "lastSeqNum": 0, "timeout": "5m"})
    body = waitpoint(server, wp)
    assert body["status"] == "WAITING" and "output" not in body and "completedAt" not in body
    assert body["timeoutAt"].endswith("Z")
    server.send(run, "other", "not this stream")
    assert waitpoint(server, wp)["status"] == "WAITING"
    server.send(run, "approval", "123")
    body = waitpoint(server, wp)
    assert (body["status"], body["output"]) == ("COMPLETED", '"123"')


def test_wait_times_out(server, run):
    wp = create_wait(server, run, {"streamId": "approval", "timeout": "1s"})
    assert waitpoint(server, wp)["status"] == "WAITING"
    body = wait_for(lambda: (lambda b: b if b["status"] != "WAITING" else None)(
        waitpoint(server, wp)), timeout=5, interval=0.05, what="TIMED_OUT")
    assert body["status"] == "TIMED_OUT" and body["outputIsError"] is True
    assert json.loads(body["output"])["code"] == "TRIGGER_WAITPOINT_TIMEOUT"
    assert body["completedAt"] == body["timeoutAt"]
    server.send(run, "approval", "too late")
    assert waitpoint(server, wp)["status"] == "TIMED_OUT"
    # An ISO date works too; one in the past means no timeout.
    soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2)) + ".000Z"
    wp = create_wait(server, run, {"streamId": "iso", "timeout": soon})
    assert waitpoint(server, wp)["timeoutAt"] == soon
    past = create_wait(server, run, {"streamId": "past", "timeout": "2001-01-01T00:00:00Z"})
    assert "timeoutAt" not in waitpoint(server, past)
    wait_for(lambda: waitpoint(server, wp)["status"] == "TIMED_OUT", timeout=5, interval=0.05,
             what="TIMED_OUT at the ISO date")
    assert waitpoint(server, past)["status"] == "WAITING"


def test_wait_idempotency_and_errors(server, run):
    key = f"idem-{time.time()}"
    wp = create_wait(server, run, {"streamId": "s", "idempotencyKey": key})
    status, _, body = server.api("POST", f"/api/v1/runs/{run}/input-streams/wait",
                                 {"streamId": "s", "idempotencyKey": key})
    assert body == {"waitpointId": wp, "isCached": True}
    assert waitpoint(server, wp)["idempotencyKey"] == key
    path = f"/api/v1/runs/{run}/input-streams/wait"
    status, _, body = server.api("POST", path, {"timeout": "1m"})
    assert (status, body) == (400, {"error": 'Validation error: Required at "streamId"'})
    status, _, body = server.api("POST", path, {"streamId": 5})
    assert status == 400 and "Expected string" in body["error"]
    assert server.api("POST", "/api/v1/runs/run_nope/input-streams/wait",
                      {"streamId": "s"})[::2] == (404, {"error": "Run not found"})
    assert server.api("POST", path, {"streamId": "s", "pad": "x" * 11000})[0] == 413
    # The real route lets the failed lookup through as the catch-all 500.
    assert server.api("GET", "/api/v1/waitpoints/tokens/waitpoint_nope")[::2] == \
        (500, {"error": "Internal Server Error"})


def test_wait_and_waitpoint_retrieval_take_the_secret_key_only(server, run):
    wp = create_wait(server, run, {"streamId": "s"})
    for scope in (f"read:waitpoints:{wp}", f"read:runs:{run}", "read:all", "admin"):
        assert server.api("GET", f"/api/v1/waitpoints/tokens/{wp}",
                          token=server.mint([scope]))[::2] == (401, INVALID_KEY)
    for scope in (f"write:inputStreams:{run}", "admin"):
        assert server.api("POST", f"/api/v1/runs/{run}/input-streams/wait", {"streamId": "s"},
                          token=server.mint([scope]))[::2] == (401, INVALID_KEY)


# ---------------------------------------------------------------- 2,000 subscribers

SUBSCRIBERS = 2000
BATCH = re.compile(rb"event: batch\ndata: (.*)\nid: .*\n\n")


async def _fan_out(port: int, path: str, key: str, send) -> tuple:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
               f"Authorization: Bearer {key}\r\nTimeout-Seconds: 60\r\n\r\n").encode()

    async def subscribe():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        buf = b""
        while b"event: ping" not in buf:          # headers, then caught up
            chunk = await reader.read(4096)
            assert chunk, buf
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 200 OK\r\n")
        return reader, writer

    conns = []
    for i in range(0, SUBSCRIBERS, 250):
        conns += await asyncio.gather(*(subscribe() for _ in range(min(250, SUBSCRIBERS - i))))
    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, send)

    async def receive(reader):
        buf = b""
        while not BATCH.search(buf):
            chunk = await reader.read(65536)
            assert chunk
            buf += chunk
        return BATCH.search(buf).group(1)

    got = await asyncio.wait_for(asyncio.gather(*(receive(r) for r, _ in conns)), 20)
    elapsed = time.monotonic() - t0
    for _, w in conns:
        w.close()
    return got, elapsed


def test_2000_subscribers_all_receive_one_send(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SUBSCRIBERS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * SUBSCRIBERS), hard))
    srv = make_server(args=("--quiet",))
    run, _ = srv.trigger_run()
    got, elapsed = asyncio.run(asyncio.wait_for(_fan_out(
        srv.port, srv.stream_path(run, "fan"), srv.secret_key,
        lambda: srv.send(run, "fan", {"to": "all"})), 60))
    assert len(got) == SUBSCRIBERS
    for data in got:
        batch = json.loads(data)
        assert [(r["seq_num"], envelope_value(r["body"])) for r in batch["records"]] == \
            [(0, {"to": "all"})]
    assert elapsed < 5, elapsed
    assert srv.records(run, "fan") == [(0, {"to": "all"})]


# ---------------------------------------------------------------- real-server behaviours

def test_v1_run_is_read_as_redis_streams(server):
    status, _, body = server.api("POST", "/api/v1/tasks/demo/trigger", {"payload": 1},
                                 headers={"x-trigger-realtime-streams-version": "v1"})
    run = body["id"]
    server.send(run, "chat", {"v1": True})
    server.send(run, "chat", "two")
    t0 = time.monotonic()
    with server.sse(run, "chat", headers={"Timeout-Seconds": "1"}) as s:
        assert "X-Stream-Version" not in s.headers
        raw = s.body()
    # One data line per record (the value's JSON text as a JSON string), no
    # [DONE]; the end comes after a 5 s block without records.
    m = re.fullmatch(rb'id: (\d{13})-0\ndata: "\{\\"v1\\":true\}"\n\n'
                     rb'id: \d{13}-1\ndata: "\\"two\\""\n\n', raw)
    assert m, raw
    assert 4.5 < time.monotonic() - t0 < 7
    # Resume after the first record with its id.
    with server.sse(run, "chat", headers={"Timeout-Seconds": "1",
                                          "Last-Event-ID": f"{m.group(1).decode()}-0"}) as s:
        assert s.body().count(b"data:") == 1


def test_additional_key_works_but_cannot_sign(server, run):
    extra = (server.dir / "dev.db.additional-key").read_text().strip()
    assert re.fullmatch(r"tr_dev_sk_[A-Za-z0-9]{24}", extra)
    server.send(run, "chat", 1, token=extra)
    signed = server.mint([f"write:inputStreams:{run}"], key=extra)
    assert server.api("POST", stream(run), {"data": 2}, token=signed)[::2] == (401, TOKEN_INVALID)
    status, _, body = server.api("POST", "/api/v1/auth/public-tokens",
                                 {"scopes": [f"write:inputStreams:{run}"]}, token=extra)
    assert status == 200
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900 and claims["scopes"] == [
        f"write:inputStreams:{run}"]
    server.send(run, "chat", 3, token=body["token"])
    assert [v for _, v in server.records(run, "chat")] == [1, 3]
    status, _, body = server.api("POST", "/api/v1/auth/public-tokens", {"scopes": []})
    assert status == 400 and body["error"] == "Invalid request body"
    assert server.api("POST", "/api/v1/auth/public-tokens", {"scopes": ["read:runs"]},
                      token=server.mint(["admin"]))[::2] == (401, INVALID_KEY)


def test_rate_limit_headers_on_api_only(server, run):
    _, headers, _ = server.api("GET", f"/api/v3/runs/{run}")
    assert headers["x-ratelimit-limit"] == "750"
    assert int(headers["x-ratelimit-reset"]) > time.time() * 1000
    _, headers, _ = server.api("GET", f"/api/v3/runs/{run}",
                               token=server.mint([f"read:runs:{run}"]))
    assert headers["x-ratelimit-limit"] == "60" and headers["x-ratelimit-remaining"] == "59"
    _, headers, _ = server.api("POST", stream(run), {"data": 1})
    assert "x-ratelimit-limit" not in headers


# ---------------------------------------------------------------- test knobs

def test_knob_replica_lag(make_server):
    srv = make_server(args=("--replica-lag", "1.5"))
    run, _ = srv.trigger_run()
    status, headers, body = srv.api("GET", f"/api/v3/runs/{run}")
    assert (status, body, headers["x-should-retry"]) == (404, {"error": "Not found"}, "true")
    srv.send(run, "chat", 1)            # the other routes read the primary
    wait_for(lambda: srv.api("GET", f"/api/v3/runs/{run}")[0] == 200, timeout=5,
             interval=0.1, what="the lag to pass")


def test_knob_rate_limits(make_server):
    srv = make_server(args=("--ratelimit-jwt", "3,60", "--ratelimit-key", "2,2,1"))
    run, token = srv.trigger_run()          # takes one secret-key token
    seen = [srv.api("GET", f"/api/v3/runs/{run}", token=token) for _ in range(4)]
    assert [s for s, _, _ in seen] == [200, 200, 200, 429]
    assert [h["x-ratelimit-remaining"] for _, h, _ in seen] == ["2", "1", "0", "0"]
    _, headers, body = seen[3]
    assert headers["Content-Type"] == "application/problem+json; charset=utf-8"
    assert body["error"].startswith("Rate limit exceeded 0/3 requests remaining. Retry in ")
    assert body["reset"] == int(headers["x-ratelimit-reset"]) > time.time() * 1000
    srv.send(run, "chat", 1, token=token)    # /realtime/ is not limited
    # The secret-key bucket: 2, refilled 2 a second.
    statuses = [srv.api("GET", f"/api/v3/runs/{run}")[0] for _ in range(3)]
    assert statuses[-1] == 429
    wait_for(lambda: srv.api("GET", f"/api/v3/runs/{run}")[0] == 200, timeout=5,
             interval=0.3, what="the bucket to refill")


def test_knob_clock_offset(make_server):
    srv = make_server(args=("--clock-offset", "600"))
    run, _ = srv.trigger_run()
    _, headers, _ = srv.api("GET", f"/api/v3/runs/{run}")
    server_now = time.mktime(time.strptime(headers["Date"], "%a, %d %b %Y %H:%M:%S GMT")) \
        - time.timezone
    assert 590 < server_now - time.time() < 610
    local = srv.mint([f"read:runs:{run}"], exp_in=300)     # on the client's clock
    assert srv.api("GET", f"/api/v3/runs/{run}", token=local)[::2] == (401, TOKEN_INVALID)
    skewed = srv.mint([f"read:runs:{run}"], exp_in=300, iat=int(server_now),
                      exp=int(server_now) + 300)           # on the Date header's clock
    assert srv.api("GET", f"/api/v3/runs/{run}", token=skewed)[0] == 200


def test_knob_sse_error_after(make_server):
    srv = make_server(args=("--sse-error-after", "2"))
    run, _ = srv.trigger_run()
    for i in range(3):
        srv.send(run, "chat", i)
    with srv.sse(run, "chat", headers={"Timeout-Seconds": "5"}) as s:
        raw = s.body()
    assert re.fullmatch(rb'event: batch\ndata: .*\nid: 1,2,\d+\n\n'
                        rb'event: error\ndata: [^\n]+\n\n', raw), raw
    assert srv.records(run, "chat") == [(0, 0), (1, 1), (2, 2)]     # once per stream


def test_knob_sse_silence(make_server):
    srv = make_server(args=("--sse-silence", "3"))
    run, _ = srv.trigger_run()
    with srv.sse(run, "quiet", headers={"Timeout-Seconds": "30"}) as s:
        events = s.events()
        assert next(events)["event"] == "ping"
        t0 = time.monotonic()
        srv.send(run, "quiet", "held")
        ev = next(events)
        assert ev["event"] == "batch" and 2.5 < time.monotonic() - t0 < 5
    with srv.sse(run, "quiet", headers={"Timeout-Seconds": "30"}) as s:   # once per stream
        events = s.events()
        assert next(events)["event"] == "batch" and next(events)["event"] == "ping"
        t0 = time.monotonic()
        srv.send(run, "quiet", "at once")
        assert next(events)["event"] == "batch" and time.monotonic() - t0 < 1.5


# ---------------------------------------------------------------- output streams

def output(run: str, stream: str = "progress", target: str = "self") -> str:
    return f"/realtime/v1/streams/{run}/{target}/{stream}"


def test_output_stream_put_hands_out_s2_credentials(server, run):
    status, headers, body = server.api("PUT", output(run))
    assert (status, body) == (202, {"version": "v2"})
    assert headers["X-S2-Endpoint"] == f"{server.url}/s2/v1"      # this server
    assert headers["X-S2-Stream-Name"] == f"/runs/{run}/progress"
    assert headers["X-S2-Basin"] and headers["X-S2-Access-Token"]
    assert (headers["X-S2-Flush-Interval-Ms"], headers["X-S2-Max-Retries"]) == ("200", "10")
    run_body = server.api("GET", f"/api/v3/runs/{run}")[2]
    assert run_body["realtimeStreams"] == ["progress"]
    server.api("PUT", output(run))
    assert server.api("GET", f"/api/v3/runs/{run}")[2]["realtimeStreams"] == ["progress"]
    # secret key only; the real texts otherwise
    for token in (server.mint(["admin"]), server.mint([f"write:runs:{run}"])):
        assert server.api("PUT", output(run), token=token)[::2] == (401, INVALID_KEY)
    assert server.api("PUT", output("run_nope"))[::2] == (404, "Run not found")
    assert server.api("PUT", output(run, target="parent"))[::2] == (404, "Target not found")
    assert server.api("PUT", output(run, target="nope"))[0] == 400
    server.cancel(run)
    assert server.api("PUT", output(run))[::2] == \
        (400, "Cannot initialize a realtime stream on a completed run")


def test_s2_append_is_read_back_through_the_output_route(server, run):
    s2 = server.open_output(run, "progress")
    with server.sse(run, "progress", headers={"Timeout-Seconds": "30"}, output=True) as live:
        events = live.events()
        assert next(events)["event"] == "ping"
        bodies = [json.dumps({"data": {"step": i}, "id": f"abc{i:04d}"}) for i in range(3)]
        status, ack = server.s2_append(s2, bodies)
        assert (status, ack["start"]["seq_num"], ack["end"]["seq_num"],
                ack["tail"]["seq_num"]) == (200, 0, 3, 3)
        assert ack["start"]["timestamp"] > 1e12
        batch = json.loads(next(events)["data"])
        assert [r["body"] for r in batch["records"]] == bodies
        assert batch["tail"]["seq_num"] == 3                  # a live batch
    # replay, with a read token: the values are objects (data is the value)
    token = server.mint([f"read:runs:{run}"])
    got = [json.loads(r["body"])["data"]
           for r in server.raw_records(run, "progress", token=token, output=True)]
    assert got == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert server.records(run, "progress", last_event_id=1, output=True) == [(2, {"step": 2})]
    # the input stream of the same name is another stream
    assert server.records(run, "progress") == []


def test_s2_append_errors(server, run):
    s2 = server.open_output(run, "e")
    assert server.s2_append(s2, ["x"], token="nope")[0] == 401
    assert server.s2_append(s2, ["x"], token=s2["X-S2-Access-Token"] + "0")[0] == 401
    status, body = server.s2_append({**s2, "X-S2-Stream-Name": "/runs/run_nope/e"}, ["x"])
    assert (status, body["code"]) == (404, "stream_not_found")
    assert server.s2_append(s2, [])[0] == 422
    assert server.s2_append(s2, ["x"] * 1001)[0] == 422
    status, body = server.s2_append(s2, ["y" * (1024 * 1024)])
    assert (status, body["code"]) == (422, "invalid")
    assert server.s2_append(s2, ["z" * 600_000, "z" * 600_000])[0] == 422
    assert server.s2_append({**s2, "X-S2-Basin": "other"}, ["x"])[0] == 404
    assert server.raw_records(run, "e", output=True) == []    # nothing stored
    # S2 does not know runs: a finished run's stream still takes appends
    server.cancel(run)
    assert server.s2_append(s2, ["late"])[0] == 200


def test_append_route_stores_the_raw_body_as_a_string(server, run):
    path = output(run, "raw") + "/append"
    status, _, body = server.api("POST", path, b'{"not":"parsed"}',
                                 headers={"X-Part-Id": "part-1"})
    assert (status, body) == (200, {"ok": True})
    [rec] = server.raw_records(run, "raw", output=True)
    assert json.loads(rec["body"]) == {"data": '{"not":"parsed"}', "id": "part-1"}
    assert server.api("GET", f"/api/v3/runs/{run}")[2]["realtimeStreams"] == ["raw"]
    assert server.api("POST", path, b"x" * (512 * 1024 + 1))[::2] == \
        (413, {"error": "Request body too large"})
    assert server.api("POST", output("run_nope", "raw") + "/append", b"x")[::2] == \
        (404, "Run not found")


# ---------------------------------------------------------------- waitpoint tokens

def test_waitpoint_token_create_complete_retrieve(server):
    status, headers, body = server.api("POST", "/api/v1/waitpoints/tokens",
                                       {"timeout": "1h", "tags": ["approval"]})
    assert status == 200 and body["isCached"] is False
    wp = body["id"]
    assert body["url"] == (f"{server.url}/api/v1/waitpoints/tokens/{wp}/callback/"
                           + hmac.new(server.secret_key.encode(), wp.encode(),
                                      hashlib.sha256).hexdigest())
    claims = jwt.decode(headers["x-trigger-jwt"], server.secret_key, algorithms=["HS256"],
                        audience="https://api.trigger.dev")
    assert claims["scopes"] == [f"write:waitpoints:{wp}"]
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert json.loads(headers["x-trigger-jwt-claims"]) == {"sub": server.env_id, "pub": True}
    got = waitpoint(server, wp)
    assert (got["status"], got["tags"], "output" not in got) == ("WAITING", ["approval"], True)
    # the token's own JWT completes it; another waitpoint's does not
    other = server.api("POST", "/api/v1/waitpoints/tokens", {})[2]["id"]
    token = headers["x-trigger-jwt"]
    assert server.api("POST", f"/api/v1/waitpoints/tokens/{other}/complete", {"data": 1},
                      token=token)[::2] == (403, FORBIDDEN)
    assert server.api("POST", f"/api/v1/waitpoints/tokens/{wp}/complete",
                      {"data": {"approved": True}}, token=token)[::2] == (200, {"success": True})
    assert server.api("POST", f"/api/v1/waitpoints/tokens/{wp}/complete",
                      {"data": "again"})[::2] == (200, {"success": True})
    got = waitpoint(server, wp)
    assert (got["status"], got["output"], got["outputIsError"]) == \
        ("COMPLETED", '{"approved":true}', False)
    assert server.api("POST", "/api/v1/waitpoints/tokens/waitpoint_nope/complete",
                      {"data": 1})[::2] == (404, {"error": "Waitpoint not found"})
    # create, list and retrieve take the secret key only
    assert server.api("POST", "/api/v1/waitpoints/tokens", {},
                      token=server.mint(["write:waitpoints"]))[::2] == (401, INVALID_KEY)
    status, _, listed = server.api("GET", "/api/v1/waitpoints/tokens?filter%5Bstatus%5D=WAITING")
    assert status == 200 and other in [t["id"] for t in listed["data"]]
    assert wp not in [t["id"] for t in listed["data"]]


def test_waitpoint_token_callback_and_timeout(server):
    body = server.api("POST", "/api/v1/waitpoints/tokens", {"timeout": "1s"})[2]
    late = body["id"]
    body = server.api("POST", "/api/v1/waitpoints/tokens", {})[2]
    wp, url = body["id"], body["url"]
    path = url[len(server.url):]
    assert server.api("POST", path[:-4] + "0000", {"hook": 1}, token=NOAUTH)[0] == 401
    assert server.api("POST", path, {"hook": 1}, token=NOAUTH)[::2] == (200, {"success": True})
    assert waitpoint(server, wp)["output"] == '{"hook":1}'
    got = wait_for(lambda: (lambda b: b if b["status"] != "WAITING" else None)(
        waitpoint(server, late)), timeout=5, interval=0.1, what="the token to time out")
    assert (got["status"], got["outputIsError"]) == ("TIMED_OUT", True)
    assert json.loads(got["output"])["code"] == "TRIGGER_WAITPOINT_TIMEOUT"
