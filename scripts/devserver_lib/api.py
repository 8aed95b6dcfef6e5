"""The HTTP routes of trigger-api.md on aiohttp.

Checks run in the real route builder's order: 401 (credential), 413
(Content-Length), 400 (body schema, on routes that declare one), 403
(scopes), 404 (resource), then the route's own 400s."""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
import traceback
import urllib.parse
from typing import Any, Optional

from aiohttp import web

from . import auth, jsjson, store as storemod, streams
from .auth import AuthError, Credential

log = logging.getLogger("devserver")

SEND_MAX_BYTES = 1024 * 1024           # the input-stream send route
TRIGGER_MAX_BYTES = 3 * 1024 * 1024    # TASK_PAYLOAD_MAXIMUM_SIZE default
WAIT_MAX_BYTES = 10 * 1024
RECORD_MAX_METERED = 1024 * 1024       # S2's per-record limit
RUN_TOKEN_TTL = 15 * 60                # x-trigger-jwt lifetime
DRAIN_MAX_BYTES = 64 * 1024 * 1024     # read this much of a refused body
RUN_STATUSES = ("PENDING_VERSION", "QUEUED", "DEQUEUED", "EXECUTING", "WAITING",
                "COMPLETED", "CANCELED", "FAILED", "CRASHED", "SYSTEM_FAILURE",
                "DELAYED", "EXPIRED", "TIMED_OUT")
_DURATION = re.compile(r"(\d+(?:w|d|hr|h|m|s))+")
_DURATION_UNITS = ((r"(\d+)w", 604800), (r"(\d+)d", 86400), (r"(\d+)(?:hr|h)", 3600),
                   (r"(\d+)m", 60), (r"(\d+)s", 1))


class HTTPError(Exception):
    """An error answer. `body` is JSON unless it is a str (sent as text)."""

    def __init__(self, status: int, body: Any, note: str = "", headers: Optional[dict] = None):
        super().__init__(note or str(body))
        self.status, self.body, self.note, self.headers = status, body, note, headers or {}


def json_response(body: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=jsjson.stringify(body).encode(), status=status,
                        headers=headers, content_type="application/json")


OK_BODY = jsjson.stringify({"ok": True}).encode()     # a send's answer


def parse_duration_ms(text: str) -> Optional[int]:
    """parseNaturalLanguageDurationInMs: "30s", "5m", "1h", "2d", "1w", "1h30m"."""
    if len(text) > 100 or not _DURATION.fullmatch(text):
        return None
    total = 0
    for pattern, unit in _DURATION_UNITS:
        m = re.search(pattern, text)
        if m:
            total += int(m.group(1)) * unit * 1000
    return total


def parse_date_ms(text: str) -> Optional[int]:
    """Enough of `new Date(text)` for ISO 8601 dates and date-times."""
    from datetime import datetime, timezone
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:   # JS: date-only is UTC, date-time without zone is local
        d = d.replace(tzinfo=timezone.utc) if len(text) <= 10 else d.astimezone()
    return int(d.timestamp() * 1000)


def parse_delay_ms(value: Optional[str]) -> Optional[int]:
    """parseDelay: an absolute time in ms, or None for no timeout."""
    if not value:
        return None
    at = parse_date_ms(value)
    if at is not None:
        return at if at > storemod.now_ms() else None
    ms = parse_duration_ms(value)
    return storemod.now_ms() + ms if ms is not None else None


def js_parse_int(text: str) -> Optional[int]:
    """parseInt(text, 10); None for NaN."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else None


def js_number(text: str) -> Optional[float]:
    """Number(text); None for NaN."""
    t = text.strip()
    if t == "":
        return 0.0
    try:
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t):
            return float(t)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+", t):
            return float(int(t, 0))
        if re.fullmatch(r"[+-]?Infinity", t):
            return float(t.replace("Infinity", "inf"))
    except (ValueError, OverflowError):
        pass
    return None


def _validation_error(message: str, path: str) -> HTTPError:
    return HTTPError(400, {"error": f'Validation error: {message} at "{path}"'})


def _expect(obj: dict, key: str, kind: type, kind_name: str, required: bool = False) -> Any:
    if key not in obj:
        if required:
            raise _validation_error("Required", key)
        return None
    value = obj[key]
    ok = isinstance(value, kind) and not (kind is float and isinstance(value, bool))
    if not ok:
        raise _validation_error(f"Expected {kind_name}, received {_js_type(value)}", key)
    return value


def _js_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _string_list(obj: dict, key: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise _validation_error("Expected string or array of strings", key)


class Api:
    def __init__(self, store: storemod.Store, key: str, request_log: Optional[str]):
        self.store, self.key = store, key
        self.authenticator = auth.Authenticator(key, store.env_id)
        self.hub = streams.Hub(store)
        self.request_log = open(request_log, "a", buffering=1) if request_log else None
        self.routes = [
            ("POST", ("api", "v1", "tasks", None, "trigger"), self.trigger),
            ("GET", ("api", "v3", "runs", None), self.retrieve_run),
            ("GET", ("api", "v1", "runs"), self.list_runs),
            ("POST", ("api", "v2", "runs", None, "cancel"), self.cancel_run),
            ("POST", ("realtime", "v1", "streams", None, "input", None), self.send),
            ("GET", ("realtime", "v1", "streams", None, "input", None), self.receive),
            ("POST", ("api", "v1", "runs", None, "input-streams", "wait"), self.create_wait),
            ("GET", ("api", "v1", "waitpoints", "tokens", None), self.retrieve_waitpoint),
            ("POST", ("api", "v1", "auth", "jwt", "claims"), self.claims),
        ]
        self.routes_by_length: dict = {}
        for route in self.routes:
            self.routes_by_length.setdefault(len(route[1]), []).append(route)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * TRIGGER_MAX_BYTES)
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        app.on_response_prepare.append(self._on_prepare)
        return app

    async def close(self) -> None:
        await self.hub.close()
        if self.request_log:
            self.request_log.close()
            self.request_log = None

    # ---- routing, errors, logging

    def _match(self, request: web.Request) -> tuple:
        raw = request.raw_path.split("?", 1)[0]
        segments = raw.strip("/").split("/") if raw.strip("/") else []
        methods, found = set(), None
        for method, template, handler in self.routes_by_length.get(len(segments), ()):
            params = []
            for want, got in zip(template, segments):
                if want is None:
                    params.append(urllib.parse.unquote(got, errors="replace"))
                elif want != got:
                    break
            else:
                methods.add(method)
                if method == request.method:
                    found = (handler, params)
        return found, methods

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        request["auth"] = "none"
        found, methods = self._match(request)
        try:
            if request.method == "OPTIONS" and methods:
                return self._preflight(request, methods)
            if found is None:
                if methods:
                    raise HTTPError(405, {"error": "Method not allowed"},
                                    headers={"Allow": ", ".join(sorted(methods))})
                raise HTTPError(404, {"error": "Not found"})
            handler, params = found
            return await handler(request, *params)
        except AuthError as e:
            request["note"] = e.message
            return json_response({"error": e.message}, e.status)
        except HTTPError as e:
            if e.note:
                request["note"] = e.note
            if isinstance(e.body, str):
                return web.Response(text=e.body, status=e.status, headers=e.headers)
            return json_response(e.body, e.status, e.headers)
        except (ConnectionError, web.HTTPException):
            raise
        except Exception:
            log.error("internal error on %s %s:\n%s", request.method, request.path,
                      traceback.format_exc().rstrip())
            return json_response({"error": "Internal Server Error"}, 500)

    def _preflight(self, request: web.Request, methods: set) -> web.Response:
        return json_response({}, 200, {
            "Access-Control-Allow-Methods": ", ".join(sorted(methods | {"OPTIONS"})),
            "Access-Control-Allow-Headers":
                request.headers.get("Access-Control-Request-Headers", "*"),
            "Access-Control-Max-Age": "86400",
        })

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # CORS on every answer: browsers send to input streams directly.
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Access-Control-Expose-Headers",
                                    "x-trigger-jwt, x-trigger-jwt-claims")
        if not (self.request_log or log.isEnabledFor(logging.INFO)):
            return
        kind = request.get("auth", "none")
        path = request.raw_path.split("?", 1)[0]
        note = request.get("note")
        log.info("%s %s -> %d [%s]%s", request.method, path, response.status, kind,
                 f" ({note})" if note else "")
        if self.request_log:
            entry = {"ts": round(time.time(), 3), "method": request.method, "path": path,
                     "status": response.status, "auth": kind}
            if kind == "jwt":
                entry["scopes"] = request.get("scopes", [])
            self.request_log.write(json.dumps(entry) + "\n")

    # ---- checks shared by routes

    def authenticate(self, request: web.Request, allow_jwt: bool = True) -> Credential:
        cred = self.authenticator(request.headers.get("Authorization"), allow_jwt)
        request["auth"] = cred.kind
        request["scopes"] = cred.scopes
        return cred

    def require(self, request: web.Request, cred: Credential, actions: tuple,
                resources: list) -> None:
        if not auth.allowed(cred, actions, resources):
            wanted = " or ".join(f"{a}:{t}" + (f":{i}" if i else "")
                                 for a in actions for t, i in resources[:1])
            raise HTTPError(403, auth.FORBIDDEN_BODY, note=f"token lacks {wanted}")

    async def read_body(self, request: web.Request, limit: int, error_body: dict) -> bytes:
        """The route builder's maxContentLength: a missing Content-Length is
        refused like an oversized one. A refused body is read and dropped
        so that the client sees the 413 rather than a reset."""
        length = request.content_length
        if length is None or length > limit:
            dropped = 0
            while dropped < DRAIN_MAX_BYTES:
                chunk = await request.content.readany()
                if not chunk:
                    break
                dropped += len(chunk)
            raise HTTPError(413, error_body,
                            note=f"body of {length if length is not None else 'unknown'}"
                                 f" bytes over {limit}")
        return await request.read()

    def parse_json_body(self, raw: bytes) -> Any:
        """The route builder's body parsing: empty, unparsable or falsy
        (null, false, 0, "") bodies are refused."""
        if not raw:
            raise HTTPError(400, {"error": "Request body is empty"})
        try:
            body = jsjson.parse(jsjson.decode_body(raw))
        except jsjson.JSONError:
            raise HTTPError(400, {"error": "Invalid JSON"}) from None
        if body in (None, False, 0, ""):
            raise HTTPError(400, {"error": "Invalid JSON"})
        if not isinstance(body, dict):
            raise HTTPError(400, {"error": f"Validation error: Expected object, "
                                           f"received {_js_type(body)}"})
        return body

    @staticmethod
    def run_resources(run_id: str, run: Optional[storemod.Run]) -> list:
        """Everything a read token may be scoped to for this run."""
        if run is None:
            return [("runs", run_id)]
        return ([("runs", run.id), ("tasks", run.task)] +
                [("tags", t) for t in run.tags])

    # ---- run JSON

    def run_json(self, run: storemod.Run, detail: bool) -> dict:
        status = run.status
        end = run.finished_at if run.finished_at is not None else storemod.now_ms()
        out: dict = {
            "id": run.id, "status": status, "taskIdentifier": run.task,
            "isQueued": status in ("QUEUED", "PENDING_VERSION", "DELAYED"),
            "isExecuting": status in ("EXECUTING", "DEQUEUED"),
            "isWaiting": status == "WAITING",
            "isCompleted": run.finished,
            "isSuccess": status == "COMPLETED",
            "isFailed": status in ("FAILED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT",
                                   "EXPIRED"),
            "isCancelled": status == "CANCELED",
            "isTest": run.is_test,
            "createdAt": storemod.iso(run.created_at),
            "updatedAt": storemod.iso(run.updated_at),
            "startedAt": storemod.iso(run.created_at),
        }
        if run.finished_at is not None:
            out["finishedAt"] = storemod.iso(run.finished_at)
        out.update(tags=run.tags, costInCents=0, baseCostInCents=0,
                   durationMs=max(0, end - run.created_at))
        metadata = self._json_or_none(run.metadata)
        if isinstance(metadata, dict):
            out["metadata"] = metadata
        if detail:
            out.update(depth=0, triggerFunction="trigger", relatedRuns={}, attemptCount=1)
            payload = self._payload_value(run)
            if payload is not None:
                out["payload"] = payload
            if run.payload_type:
                out["payloadType"] = run.payload_type
        else:
            out["env"] = {"id": self.store.env_id, "name": "dev"}
        return out

    @staticmethod
    def _json_or_none(text: Optional[str]) -> Any:
        if text is None:
            return None
        try:
            return jsjson.parse(text)
        except jsjson.JSONError:
            return None

    def _payload_value(self, run: storemod.Run) -> Any:
        """The payload as the API presents it: JSON and superjson packets
        (what tasks.trigger sends) are decoded."""
        value = self._json_or_none(run.payload)
        if isinstance(value, str) and run.payload_type in ("application/json",
                                                            "application/super+json"):
            decoded = self._json_or_none(value)
            if run.payload_type == "application/super+json" and isinstance(decoded, dict):
                return decoded.get("json")
            return decoded if decoded is not None else value
        return value

    # ---- routes

    async def claims(self, request: web.Request) -> web.Response:
        try:
            self.authenticate(request, allow_jwt=False)
        except AuthError as e:
            raise AuthError(401, "Invalid or Missing API key") from e
        return json_response({"sub": self.store.env_id, "pub": True})

    async def trigger(self, request: web.Request, task: str) -> web.Response:
        cred = self.authenticate(request)
        body = self.parse_json_body(await self.read_body(
            request, TRIGGER_MAX_BYTES, {"error": "Request body too large"}))
        options = body.get("options")
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            raise _validation_error(f"Expected object, received {_js_type(options)}",
                                    "options")
        tags = _string_list(options, "tags")
        if any(len(t) > 128 for t in tags):
            raise _validation_error("Tags must be at most 128 characters", "options.tags")
        payload_type = _expect(options, "payloadType", str, "string")
        idem_key = _expect(options, "idempotencyKey", str, "string")
        idem_ttl = _expect(options, "idempotencyKeyTTL", str, "string")
        is_test = _expect(options, "test", bool, "boolean") or False
        metadata = options.get("metadata")
        self.require(request, cred, ("trigger", "write"), [("tasks", task)])
        if len(tags) > 10:
            raise HTTPError(422, {"error": f"Runs can only have 10 tags, you're trying "
                                           f"to set {len(tags)}."})

        request_key = request.headers.get("x-trigger-request-idempotency-key")
        run, cached = None, False
        if request_key:
            run = self.store.run_by_request_key(request_key)
        if run is None and idem_key:
            run = self.store.run_by_idempotency_key(task, idem_key)
            cached = run is not None
        if run is None:
            ttl = parse_duration_ms(idem_ttl) if idem_ttl else None
            run = self.store.create_run(
                task, jsjson.stringify(body["payload"]) if "payload" in body else None,
                payload_type, tags,
                jsjson.stringify(metadata) if metadata is not None else None, is_test,
                idem_key, storemod.now_ms() + ttl if ttl else None, request_key)
        claims = {"sub": self.store.env_id, "pub": True,
                  "scopes": [f"read:runs:{run.id}", f"write:inputStreams:{run.id}"]}
        return json_response({"id": run.id, "isCached": cached}, 200, {
            "x-trigger-jwt-claims": jsjson.stringify(claims),
            "x-trigger-jwt": auth.mint(self.key, claims, RUN_TOKEN_TTL),
        })

    async def retrieve_run(self, request: web.Request, run_id: str) -> web.Response:
        cred = self.authenticate(request)
        run = self.store.get_run(run_id)
        self.require(request, cred, ("read",), self.run_resources(run_id, run))
        if run is None:
            raise HTTPError(404, {"error": "Run not found"})
        return json_response(self.run_json(run, detail=True))

    async def list_runs(self, request: web.Request) -> web.Response:
        cred = self.authenticate(request)
        self.require(request, cred, ("read",), [("runs", None)])
        q = request.query

        def csv(name: str) -> list:
            return [v for v in q.get(name, "").split(",") if v]

        statuses = csv("filter[status]")
        bad = [s for s in statuses if s not in RUN_STATUSES]
        if bad:
            raise HTTPError(400, {"error": f"Query Error: invalid filter[status] {bad[0]!r};"
                                           f" expected one of {', '.join(RUN_STATUSES)}"})
        size_text = q.get("page[size]", "25")
        size = js_parse_int(size_text)
        if size is None or not 1 <= size <= 100:
            raise HTTPError(400, {"error": "Query Error: page[size] must be a number"
                                           " from 1 to 100"})
        runs, newer, older = self.store.list_runs(
            statuses, csv("filter[taskIdentifier]"), csv("filter[tag]"), size,
            q.get("page[after]") or None, q.get("page[before]") or None)
        # The SDK's schema wants absent cursors left out, not null.
        pagination = {}
        if older and runs:
            pagination["next"] = runs[-1].id
        if newer and runs:
            pagination["previous"] = runs[0].id
        return json_response({"data": [self.run_json(r, detail=False) for r in runs],
                              "pagination": pagination})

    async def cancel_run(self, request: web.Request, run_id: str) -> web.Response:
        cred = self.authenticate(request)
        self.require(request, cred, ("write",), [("runs", run_id)])
        if self.store.get_run(run_id) is None:
            raise HTTPError(404, {"error": "Run not found"})
        self.store.finish_run(run_id, "CANCELED")
        return json_response({"id": run_id})

    async def send(self, request: web.Request, run_id: str, stream: str) -> web.Response:
        cred = self.authenticate(request)
        raw = await self.read_body(request, SEND_MAX_BYTES,
                                   {"ok": False, "error": "Request body too large"})
        self.require(request, cred, ("write",), [("inputStreams", run_id)])
        run = self.store.get_run(run_id)
        if run is None:
            raise HTTPError(404, {"ok": False, "error": "Run not found"})
        if run.finished:
            raise HTTPError(400, {"ok": False,
                                  "error": "Cannot send to input stream on a completed run"})
        invalid = HTTPError(400, {"ok": False, "error": "Invalid request body"})
        try:
            body = jsjson.parse(jsjson.decode_body(raw))
            if not isinstance(body, dict) or "data" not in body:
                raise invalid
            data_text = jsjson.stringify(body["data"])
        except jsjson.JSONError:
            raise invalid from None
        record_body = '{"data":%s,"id":"inp_%s"}' % (jsjson.string(data_text),
                                                     secrets.token_hex(6))
        metered = streams.RECORD_OVERHEAD + len(record_body.encode())
        if metered > RECORD_MAX_METERED:
            raise HTTPError(413, {"ok": False, "error":
                                  f"Record metered size {metered} bytes exceeds the"
                                  f" per-record limit of {RECORD_MAX_METERED} bytes"})
        self.append(run_id, stream, record_body, data_text)
        return web.Response(body=OK_BODY, content_type="application/json")

    def append(self, run_id: str, stream: str, record_body: str, data_text: str) -> None:
        """Store one record (and complete a linked .wait()), then wake readers."""
        s = self.hub.get(run_id, stream)
        ts = max(storemod.now_ms(), s.last_ts)
        with self.store.transaction() as db:
            self.store.insert_record(db, run_id, stream, s.tail, ts, record_body)
            self.store.complete_linked_wait(db, run_id, stream, data_text)
        self.hub.appended(s, streams.Record(s.tail, ts, record_body))

    async def receive(self, request: web.Request, run_id: str, stream: str) -> web.StreamResponse:
        cred = self.authenticate(request)
        run = self.store.get_run(run_id)
        self.require(request, cred, ("read",), self.run_resources(run_id, run))
        if run is None:
            raise HTTPError(404, {"error": "Not found"}, headers={"x-should-retry": "false"})
        timeout = 60
        raw = request.headers.get("Timeout-Seconds")
        if raw is not None:
            timeout = js_parse_int(raw)
            if timeout is None:
                raise HTTPError(400, "Invalid timeout seconds")
            if timeout < 1:
                raise HTTPError(400, "Timeout seconds must be greater than 0")
            if timeout > 600:
                raise HTTPError(400, "Timeout seconds must be less than 600")
        s = self.hub.get(run_id, stream)
        start = 0
        last_id = request.headers.get("Last-Event-ID")
        if last_id:
            n = js_number(last_id.split("-")[0])
            start = int(n) + 1 if n is not None and 0 <= n < float("inf") else 0
        elif request.headers.get("X-Trigger-Stream-Start") == "latest":
            start = max(0, s.tail - 1)     # S2 tail_offset=1
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Stream-Version": "v2",
            "Access-Control-Expose-Headers": "*",
        })
        await resp.prepare(request)
        reader = streams.Reader(self.hub, s, resp, request.transport, start, timeout)
        try:
            await reader.run()
        except ConnectionError:
            pass
        return resp

    async def create_wait(self, request: web.Request, run_id: str) -> web.Response:
        cred = self.authenticate(request)
        body = self.parse_json_body(await self.read_body(
            request, WAIT_MAX_BYTES, {"error": "Request body too large"}))
        stream = _expect(body, "streamId", str, "string", required=True)
        timeout = _expect(body, "timeout", str, "string")
        idem_key = _expect(body, "idempotencyKey", str, "string")
        if idem_key is not None and len(idem_key) > 2048:
            raise _validation_error("idempotencyKey must be 2048 characters or less",
                                    "idempotencyKey")
        idem_ttl = _expect(body, "idempotencyKeyTTL", str, "string")
        tags = _string_list(body, "tags")
        last_seq = _expect(body, "lastSeqNum", float, "number")
        self.require(request, cred, ("write",), [("inputStreams", run_id)])
        if self.store.get_run(run_id) is None:
            raise HTTPError(404, {"error": "Run not found"})
        if len(tags) > 10:
            raise HTTPError(422, {"error": f"Waitpoints can only have 10 tags, you're "
                                           f"trying to set {len(tags)}."})
        cached = self.store.waitpoint_by_idempotency_key(idem_key) if idem_key else None
        with self.store.transaction() as db:
            if cached:
                wp = cached
            else:
                ttl = parse_duration_ms(idem_ttl) if idem_ttl else None
                wp = self.store.create_waitpoint(
                    db, run_id, stream, parse_delay_ms(timeout), idem_key,
                    storemod.now_ms() + ttl if ttl else None, tags)
            self.store.link_input_wait(db, run_id, stream, wp)
            if not cached:
                # Data sent before the .wait(): complete at once with the
                # first record after lastSeqNum.
                first = 0 if last_seq is None else int(last_seq) + 1
                rows = self.store.read_records(run_id, stream, max(first, 0), 1)
                if rows:
                    data = json.loads(rows[0][2])["data"]
                    self.store.complete_waitpoint(db, wp.id, data)
                    self.store.unlink_input_wait(db, run_id, stream)
        return json_response({"waitpointId": wp.id, "isCached": cached is not None})

    async def retrieve_waitpoint(self, request: web.Request, wp_id: str) -> web.Response:
        cred = self.authenticate(request)
        wp = self.store.get_waitpoint(wp_id)
        resources = [("waitpoints", wp_id)] + ([("runs", wp.run)] if wp else [])
        self.require(request, cred, ("read",), resources)
        if wp is None:
            raise HTTPError(404, {"error": "Waitpoint not found"})
        status = ("WAITING" if wp.status == "PENDING" else
                  "TIMED_OUT" if wp.output_is_error else "COMPLETED")
        base = f"{request.scheme}://{request.host}"
        out: dict = {
            "id": wp.id, "type": "MANUAL",
            "url": f"{base}/api/v1/waitpoints/tokens/{wp.id}/callback/"
                   f"{hmac.new(self.key.encode(), wp.id.encode(), 'sha1').hexdigest()}",
            "status": status,
            "idempotencyKey": wp.idempotency_key,
            "userProvidedIdempotencyKey": wp.user_key,
        }
        if wp.idempotency_expires is not None:
            out["idempotencyKeyExpiresAt"] = storemod.iso(wp.idempotency_expires)
        if wp.output is not None:
            out["output"] = wp.output
        out.update(outputType="application/json", outputIsError=wp.output_is_error)
        if wp.timeout_at is not None:
            out["timeoutAt"] = storemod.iso(wp.timeout_at)
            out["completedAfter"] = storemod.iso(wp.timeout_at)
        if wp.completed_at is not None:
            out["completedAt"] = storemod.iso(wp.completed_at)
        out.update(createdAt=storemod.iso(wp.created_at), tags=wp.tags)
        return json_response(out)
