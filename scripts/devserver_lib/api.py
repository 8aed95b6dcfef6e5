"""The HTTP routes of trigger-api.md on aiohttp: dispatch, the answers every
route shares (CORS, rate limits, errors), runs, input streams and auth.
Waitpoint tokens are in waitpoints.py, output streams and the S2 endpoint
in outputs.py.

Checks run in the real server's order: the rate limiter on /api/ (401 with
no Authorization header, 429), then the route builder's 401 (credential),
413 (Content-Length), 400 (body schema, on routes that declare one), 403
(scopes), 404 (resource), then the route's own 400s."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from aiohttp import web

from . import auth, clock, jsjson, ratelimit, store as storemod, streams
from .auth import AuthError, Credential

log = logging.getLogger("devserver")

SEND_MAX_BYTES = 1024 * 1024           # the input-stream send route
TRIGGER_MAX_BYTES = 3 * 1024 * 1024    # TASK_PAYLOAD_MAXIMUM_SIZE default
WAIT_MAX_BYTES = 10 * 1024
RECORD_MAX_METERED = 1024 * 1024       # S2's per-record limit
S2_NAME_MAX = 512                      # S2 caps stream names at 512 bytes; the real
S2_NAME_PREFIX = 81                    # server's names start with ~81 bytes of org/env
RUN_TOKEN_TTL = 60 * 60                # x-trigger-jwt lifetime
API_VERSION = "2025-07-16"             # x-trigger-api-version: current status names
# The legacy (no x-trigger-api-version) names of the statuses that differ.
LEGACY_STATUS = {"WAITING": "FROZEN", "DEQUEUED": "EXECUTING"}
STATUS_FROM_LEGACY = {"FROZEN": "WAITING", "REATTEMPTING": "EXECUTING",
                      "WAITING_FOR_DEPLOY": "PENDING_VERSION", "INTERRUPTED": "FAILED"}
CORS_EXPOSE = "x-trigger-jwt,x-trigger-jwt-claims"
CORS_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"
TEXT_TYPE = "text/plain;charset=UTF-8"     # a Fetch Response with a string body
DRAIN_MAX_BYTES = 64 * 1024 * 1024     # read this much of a refused body
RUN_STATUSES = ("PENDING_VERSION", "QUEUED", "DEQUEUED", "EXECUTING", "WAITING",
                "COMPLETED", "CANCELED", "FAILED", "CRASHED", "SYSTEM_FAILURE",
                "DELAYED", "EXPIRED", "TIMED_OUT")
_DURATION = re.compile(r"(\d+(?:w|d|hr|h|m|s))+")
_DURATION_UNITS = ((r"(\d+)w", 604800), (r"(\d+)d", 86400), (r"(\d+)(?:hr|h)", 3600),
                   (r"(\d+)m", 60), (r"(\d+)s", 1))


@dataclass
class Options:
    """What devserver's command line sets beyond the database."""
    default_streams_version: str = "v2"
    limits: ratelimit.Limits = field(default_factory=ratelimit.Limits)
    replica_lag: float = 0.0          # GET run 404s (x-should-retry) this long after trigger
    faults: streams.Faults = field(default_factory=streams.Faults)
    additional_keys: tuple = ()


class HTTPError(Exception):
    """An error answer. `body` is JSON unless it is a str (sent as text)."""

    def __init__(self, status: int, body: Any, note: str = "", headers: Optional[dict] = None):
        super().__init__(note or str(body))
        self.status, self.body, self.note, self.headers = status, body, note, headers or {}


def json_response(body: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=jsjson.stringify(body).encode(), status=status,
                        headers=headers, content_type="application/json", charset="utf-8")


def text_response(text: str, status: int, headers: Optional[dict] = None) -> web.Response:
    hdrs = {"Content-Type": TEXT_TYPE}
    hdrs.update(headers or {})
    return web.Response(body=text.encode(), status=status, headers=hdrs)


def problem_response(body: bytes, status: int, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers,
                        content_type="application/problem+json", charset="utf-8")


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


@dataclass
class Route:
    method: str
    template: tuple          # path segments; None matches any one segment
    handler: Callable
    cors: bool = False       # corsStrategy "all": CORS headers for browsers


class Api:
    def __init__(self, store: storemod.Store, key: str, request_log: Optional[str],
                 options: Optional[Options] = None):
        from . import outputs, waitpoints     # they build on this module
        self.store, self.key = store, key
        self.options = options or Options()
        keys = {key: True}
        keys.update({k: False for k in self.options.additional_keys})
        self.authenticator = auth.Authenticator(keys, store.env_id)
        self.limiter = ratelimit.RateLimiter(self.options.limits)
        self.hub = streams.Hub(store, self.options.faults)
        self.request_log = open(request_log, "a", buffering=1) if request_log else None
        self.waitpoints = waitpoints.WaitpointRoutes(self)
        self.outputs = outputs.OutputRoutes(self)
        self.routes = [
            Route("POST", ("api", "v1", "tasks", None, "trigger"), self.trigger, cors=True),
            Route("GET", ("api", "v3", "runs", None), self.retrieve_run, cors=True),
            Route("GET", ("api", "v1", "runs"), self.list_runs, cors=True),
            Route("POST", ("api", "v2", "runs", None, "cancel"), self.cancel_run),
            Route("POST", ("realtime", "v1", "streams", None, "input", None), self.send,
                  cors=True),
            # The send route answers any method that is not a GET.
            Route("PUT", ("realtime", "v1", "streams", None, "input", None), self.send,
                  cors=True),
            Route("GET", ("realtime", "v1", "streams", None, "input", None), self.receive,
                  cors=True),
            Route("POST", ("api", "v1", "runs", None, "input-streams", "wait"),
                  self.create_wait),
            Route("POST", ("api", "v1", "auth", "jwt", "claims"), self.jwt_claims),
            Route("POST", ("api", "v1", "auth", "jwt"), self.server_signed_token),
            Route("POST", ("api", "v1", "auth", "public-tokens"), self.public_token),
        ] + self.waitpoints.routes() + self.outputs.routes()
        self.routes_by_length: dict = {}
        for route in self.routes:
            self.routes_by_length.setdefault(len(route.template), []).append(route)

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
        """(route, params) for the request's method or (None, None), and
        the routes of the path whatever the method."""
        raw = request.raw_path.split("?", 1)[0]
        segments = raw.strip("/").split("/") if raw.strip("/") else []
        matches, found = [], (None, None)
        for route in self.routes_by_length.get(len(segments), ()):
            params = []
            for want, got in zip(route.template, segments):
                if want is None:
                    params.append(urllib.parse.unquote(got, errors="replace"))
                elif want != got:
                    break
            else:
                matches.append(route)
                if route.method == request.method and found[0] is None:
                    found = (route, params)
        return found, matches

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        request["auth"] = "none"
        path = request.raw_path.split("?", 1)[0]
        if len(path) > 1 and path.endswith("/"):
            return self._redirect_trailing_slash(request, path)
        (route, params), matches = self._match(request)
        try:
            if request.method == "OPTIONS" and matches:
                return self._preflight(request)
            refusal = self._rate_limit(request, path)
            if refusal is not None:
                return refusal
            if route is None:
                if matches:
                    raise HTTPError(405, {"error": "Method not allowed"},
                                    headers={"Allow": ", ".join(sorted({m.method
                                                                        for m in matches}))})
                raise HTTPError(404, {"error": "Not found"})
            request["cors"] = route.cors
            return await route.handler(request, *params)
        except AuthError as e:
            request["note"] = e.message
            return json_response({"error": e.message}, e.status)
        except HTTPError as e:
            if e.note:
                request["note"] = e.note
            if isinstance(e.body, str):
                return text_response(e.body, e.status, e.headers)
            return json_response(e.body, e.status, e.headers)
        except (ConnectionError, web.HTTPException):
            raise
        except Exception:
            log.error("internal error on %s %s:\n%s", request.method, request.path,
                      traceback.format_exc().rstrip())
            return json_response({"error": "Internal Server Error"}, 500)

    @staticmethod
    def _redirect_trailing_slash(request: web.Request, path: str) -> web.Response:
        """Express's answer to a path with a trailing slash."""
        target = path.rstrip("/") or "/"
        if request.query_string:
            target += "?" + request.query_string
        return web.Response(text=f"Moved Permanently. Redirecting to {target}", status=301,
                            headers={"Location": target}, content_type="text/plain",
                            charset="utf-8")

    def _preflight(self, request: web.Request) -> web.Response:
        headers = {"Access-Control-Allow-Methods": CORS_METHODS,
                   "Access-Control-Max-Age": "300"}
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        origin = request.headers.get("Origin")
        if origin:
            headers["Access-Control-Allow-Origin"] = origin
        return json_response({}, 200, headers)

    def _rate_limit(self, request: web.Request, path: str) -> Optional[web.Response]:
        """The real API's limiter, in front of every /api/ route."""
        if not ratelimit.limited_path(path):
            return None
        header = request.headers.get("Authorization")
        if not header:
            return problem_response(ratelimit.no_authorization_body(), 401)
        try:
            kind = self.authenticator(header, True).kind
        except AuthError:
            kind = None
        verdict = self.limiter.check(header, kind)
        request["ratelimit"] = verdict.headers()
        if verdict.ok:
            return None
        request["note"] = "rate limited"
        return problem_response(verdict.refusal(), 429, verdict.headers())

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = clock.http_date()
        for name, value in request.get("ratelimit", {}).items():
            response.headers.setdefault(name, value)
        if request.get("cors"):
            response.headers.setdefault("Access-Control-Expose-Headers", CORS_EXPOSE)
            origin = request.headers.get("Origin")
            if origin:
                response.headers["Access-Control-Allow-Origin"] = origin
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

    def claims(self, scopes: Optional[list] = None) -> dict:
        """The claims of a server-issued token, before iss/aud/iat/exp."""
        claims: dict = {"sub": self.store.env_id, "pub": True}
        if scopes is not None:
            claims["scopes"] = scopes
        return claims

    def mint(self, scopes: list, ttl: int) -> tuple:
        """(token, the x-trigger-jwt-claims text) for a server-issued token."""
        claims = self.claims(scopes)
        return auth.mint(self.key, claims, ttl), jsjson.stringify(claims)

    # ---- run JSON

    @staticmethod
    def api_status(run: storemod.Run, request: web.Request) -> str:
        if request.headers.get("x-trigger-api-version") == API_VERSION:
            return run.status
        return LEGACY_STATUS.get(run.status, run.status)

    def run_json(self, run: storemod.Run, detail: bool, request: web.Request) -> dict:
        status = self.api_status(run, request)
        end = run.finished_at if run.finished_at is not None else storemod.now_ms()
        completed = status in ("COMPLETED", "CANCELED", "FAILED", "CRASHED", "INTERRUPTED",
                               "SYSTEM_FAILURE")
        out: dict = {"id": run.id, "taskIdentifier": run.task, "status": status,
                     "createdAt": storemod.iso(run.created_at),
                     "updatedAt": storemod.iso(run.updated_at)}
        if run.finished_at is not None:
            out["finishedAt"] = storemod.iso(run.finished_at)
        if run.ttl:
            out["ttl"] = run.ttl
        out.update(costInCents=0, baseCostInCents=0, durationMs=max(0, end - run.created_at),
                   isTest=run.is_test)
        if detail:
            out["depth"] = 0
        out.update(
            tags=run.tags,
            isQueued=status in ("QUEUED", "WAITING_FOR_DEPLOY", "DELAYED", "PENDING_VERSION"),
            isExecuting=status in ("EXECUTING", "REATTEMPTING", "FROZEN", "DEQUEUED"),
            isCompleted=completed,
            isFailed=completed and status != "COMPLETED",
            isSuccess=status == "COMPLETED",
            isCancelled=status == "CANCELED",
            isWaiting=status == "WAITING")
        metadata = self._json_or_none(run.metadata)
        if isinstance(metadata, dict):
            out["metadata"] = metadata
        if run.output_streams:
            out["realtimeStreams"] = run.output_streams
        if detail:
            out.update(triggerFunction="trigger", region=self.store.env_id)
            payload = self._payload_value(run)
            if payload is not None:
                out["payload"] = payload
            out.update(attemptCount=0, attempts=[], relatedRuns={"children": []})
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

    # ---- auth routes

    async def jwt_claims(self, request: web.Request) -> web.Response:
        try:
            self.authenticate(request, allow_jwt=False)
        except AuthError as e:
            raise AuthError(401, auth.MISSING) from e
        return json_response({"sub": self.store.env_id, "pub": True})

    async def public_token(self, request: web.Request) -> web.Response:
        """Tokens signed by the server: what additional API keys (which
        cannot sign) use instead of minting."""
        self.authenticate(request, allow_jwt=False)
        try:
            body = jsjson.parse(jsjson.decode_body(await request.read()))
        except jsjson.JSONError:
            raise HTTPError(400, {"error": "Invalid request body"}) from None
        scopes = body.get("scopes") if isinstance(body, dict) else None
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes) \
                or not scopes:
            issue = {"code": "too_small", "minimum": 1, "type": "array", "inclusive": True,
                     "exact": False, "message": "Array must contain at least 1 element(s)",
                     "path": ["scopes"]} if isinstance(scopes, list) else \
                {"code": "invalid_type", "expected": "array",
                 "received": _js_type(scopes) if "scopes" in body else "undefined",
                 "path": ["scopes"], "message": "Required" if "scopes" not in body
                 else f"Expected array, received {_js_type(scopes)}"}
            raise HTTPError(400, {"error": "Invalid request body", "issues": [issue]})
        now = int(clock.now())
        expires = expiration_time(body.get("expirationTime", "15m"), now)
        if expires is None:
            raise HTTPError(400, {"error": "Invalid expiration time"})
        if expires <= now:
            raise HTTPError(400, {"error": "Expiration time must be in the future"})
        if expires - now > 30 * 86400:
            raise HTTPError(400, {"error": "Expiration time cannot exceed 30 days"})
        return json_response({"token": self.mint(scopes, expires - now)[0]})

    async def server_signed_token(self, request: web.Request) -> web.Response:
        """POST /api/v1/auth/jwt: {claims: {scopes}} -> a 1 hour token."""
        try:
            self.authenticate(request, allow_jwt=False)
        except AuthError as e:
            raise AuthError(401, auth.MISSING) from e
        try:
            body = jsjson.parse(jsjson.decode_body(await request.read()))
        except jsjson.JSONError:
            raise HTTPError(500, {"error": "Internal Server Error"}) from None
        claims = body.get("claims") if isinstance(body, dict) else None
        scopes = claims.get("scopes", []) if isinstance(claims, dict) else []
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            raise HTTPError(400, {"error": "Invalid request body"})
        now = int(clock.now())
        expires = expiration_time(body.get("expirationTime", "1h"), now)
        if expires is None or expires <= now:
            raise HTTPError(400, {"error": "Invalid expiration time"})
        return json_response({"token": self.mint(scopes, expires - now)[0]})

    # ---- runs

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
        ttl = options.get("ttl")
        ttl = str(ttl) if isinstance(ttl, (str, int, float)) and not isinstance(ttl, bool) \
            else None
        metadata = options.get("metadata")
        self.require(request, cred, ("trigger",), [("tasks", task)])
        if len(tags) > 10:
            raise HTTPError(422, {"error": f"Runs can only have 10 tags, you're trying "
                                           f"to set {len(tags)}."})
        version = request.headers.get("x-trigger-realtime-streams-version")
        if version not in ("v1", "v2"):
            version = self.options.default_streams_version

        request_key = request.headers.get("x-trigger-request-idempotency-key")
        run, cached = None, False
        if request_key:
            run = self.store.run_by_request_key(request_key)
        if run is None and idem_key:
            run = self.store.run_by_idempotency_key(task, idem_key)
            cached = run is not None
        if run is None:
            idem_ttl_ms = parse_duration_ms(idem_ttl) if idem_ttl else None
            run = self.store.create_run(
                task, jsjson.stringify(body["payload"]) if "payload" in body else None,
                payload_type, tags,
                jsjson.stringify(metadata) if metadata is not None else None, is_test,
                idem_key, storemod.now_ms() + idem_ttl_ms if idem_ttl_ms else None,
                request_key, ttl, version)
        token, claims = self.mint([f"read:runs:{run.id}", f"write:inputStreams:{run.id}"],
                                  RUN_TOKEN_TTL)
        return json_response({"id": run.id, "isCached": cached}, 200, {
            "x-trigger-jwt-claims": claims, "x-trigger-jwt": token})

    async def retrieve_run(self, request: web.Request, run_id: str) -> web.Response:
        cred = self.authenticate(request)
        run = self.store.get_run(run_id)
        if run is not None:     # a GET route looks the run up before the scopes
            self.require(request, cred, ("read",), self.run_resources(run_id, run))
        lagging = run is not None and \
            storemod.now_ms() - run.created_at < self.options.replica_lag * 1000
        if run is None or lagging:
            # The real server reads a replica: a 404 may be lag, so it says retry.
            raise HTTPError(404, {"error": "Not found"}, headers={"x-should-retry": "true"},
                            note="replica lag (--replica-lag)" if lagging else "")
        return json_response(self.run_json(run, True, request))

    async def list_runs(self, request: web.Request) -> web.Response:
        cred = self.authenticate(request)
        self.require(request, cred, ("read",), [("runs", None), ("tasks", None)])
        q = request.query

        def csv(name: str) -> list:
            return [v for v in q.get(name, "").split(",") if v]

        statuses = [STATUS_FROM_LEGACY.get(v, v) for v in csv("filter[status]")]
        bad = [s for s in statuses if s not in RUN_STATUSES]
        if bad:
            raise HTTPError(400, {"error": "Query Error", "details": [{
                "code": "invalid_enum_value", "options": list(RUN_STATUSES),
                "path": ["filter[status]"],
                "message": f"Invalid enum value. Expected {' | '.join(RUN_STATUSES)},"
                           f" received '{bad[0]}'"}]})
        size_text = q.get("page[size]", "25")
        size = js_parse_int(size_text)
        if size is None or not 1 <= size <= 100:
            raise HTTPError(400, {"error": "Query Error", "details": [{
                "code": "invalid_type", "path": ["page[size]"],
                "message": "page[size] must be a number from 1 to 100"}]})
        runs, newer, older = self.store.list_runs(
            statuses, csv("filter[taskIdentifier]"), csv("filter[tag]"), size,
            q.get("page[after]") or None, q.get("page[before]") or None)
        # The SDK's schema wants absent cursors left out, not null.
        pagination = {}
        if older and runs:
            pagination["next"] = runs[-1].id
        if newer and runs:
            pagination["previous"] = runs[0].id
        return json_response({"data": [self.run_json(r, False, request) for r in runs],
                              "pagination": pagination})

    async def cancel_run(self, request: web.Request, run_id: str) -> web.Response:
        cred = self.authenticate(request)
        run = self.store.get_run(run_id)
        resources = [("runs", run_id)] + ([("tasks", run.task)] if run else [])
        self.require(request, cred, ("write",), resources)
        if run is None:
            raise HTTPError(404, {"error": "Resource not found"})
        self.store.cancel_run(run_id)
        return json_response({"id": run_id})

    # ---- input streams

    @staticmethod
    def input_name(stream: str) -> str:
        """The storage name of an input stream (as the real server names
        its S2 stream): output streams share the namespace."""
        return "$trigger.input:" + stream

    @staticmethod
    def check_record_size(record_body: str) -> None:
        """The real server refuses a record S2 would refuse (over 1 MiB
        metered) before sending it, with its own 413."""
        metered = streams.RECORD_OVERHEAD + len(record_body.encode())
        if metered > RECORD_MAX_METERED:
            raise HTTPError(413, {"ok": False, "error":
                                  f"Record metered size {metered} bytes exceeds the S2"
                                  f" per-record limit of {RECORD_MAX_METERED} bytes. Reduce"
                                  f" tool-output size or split into smaller parts."})

    @staticmethod
    def check_s2_name(run_id: str, name: str) -> None:
        """A stream whose S2 name would be too long fails in S2, which the
        real server answers with its catch-all 500."""
        if S2_NAME_PREFIX + len(f"/runs/{run_id}/{name}".encode()) > S2_NAME_MAX:
            raise HTTPError(500, {"error": "Internal Server Error"},
                            note=f"S2 stream name over {S2_NAME_MAX} bytes")

    async def send(self, request: web.Request, run_id: str, stream: str) -> web.Response:
        cred = self.authenticate(request)
        raw = await self.read_body(request, SEND_MAX_BYTES,
                                   {"error": "Request body too large"})
        self.require(request, cred, ("write",), [("inputStreams", run_id)])
        run = self.store.get_run(run_id)
        if run is None:
            raise HTTPError(404, {"ok": False, "error": "Run not found"})
        if run.finished:
            raise HTTPError(400, {"ok": False,
                                  "error": "Cannot send to input stream on a completed run"})
        try:
            body = jsjson.parse(jsjson.decode_body(raw))
        except jsjson.JSONError:
            # request.json() throws: the route builder's catch-all answers.
            raise HTTPError(500, {"error": "Internal Server Error"},
                            note="body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(400, {"ok": False, "error": "Invalid request body"})
        record_id = "inp_" + secrets.token_hex(6)
        if "data" in body:
            data_text: Optional[str] = jsjson.stringify(body["data"])
            record_body = '{"data":%s,"id":"%s"}' % (jsjson.string(data_text), record_id)
        else:       # {} is accepted: a record without data, which readers skip
            data_text = None
            record_body = '{"id":"%s"}' % record_id
        self.check_record_size(record_body)
        self.check_s2_name(run_id, self.input_name(stream))
        self.append(run_id, self.input_name(stream), [record_body], data_text, stream)
        return web.Response(body=OK_BODY, content_type="application/json", charset="utf-8")

    def append(self, run_id: str, name: str, bodies: list, data_text: Optional[str] = None,
               input_stream: Optional[str] = None) -> list:
        """Store records in one transaction (and complete the .wait()
        linked to an input stream with `data_text`), then wake readers."""
        s = self.hub.get(run_id, name)
        ts = max(storemod.now_ms(), s.last_ts)
        records = [streams.Record(s.tail + i, ts, body) for i, body in enumerate(bodies)]
        with self.store.transaction() as db:
            for rec in records:
                self.store.insert_record(db, run_id, name, rec.seq, ts, rec.body)
            if input_stream is not None:
                self.store.complete_linked_wait(db, run_id, input_stream, data_text)
        for rec in records:
            self.hub.appended(s, rec)
        return records

    @staticmethod
    def timeout_seconds(request: web.Request) -> int:
        raw = request.headers.get("Timeout-Seconds")
        if raw is None:
            return 60
        timeout = js_parse_int(raw)
        if timeout is None:
            raise HTTPError(400, "Invalid timeout seconds")
        if timeout < 1:
            raise HTTPError(400, "Timeout seconds must be greater than 0")
        if timeout > 600:
            raise HTTPError(400, "Timeout seconds must be less than 600")
        return timeout

    async def receive(self, request: web.Request, run_id: str, stream: str) -> web.StreamResponse:
        return await self.read_stream(request, run_id, self.input_name(stream))

    async def read_stream(self, request: web.Request, run_id: str,
                          name: str) -> web.StreamResponse:
        """The SSE read of a stream by its storage name (input and output
        streams alike), framed by the run's streams version."""
        cred = self.authenticate(request)
        run = self.store.get_run(run_id)
        if run is None:         # a GET route looks the run up before the scopes
            raise HTTPError(404, {"error": "Not found"}, headers={"x-should-retry": "false"})
        self.require(request, cred, ("read",), self.run_resources(run_id, run))
        timeout = self.timeout_seconds(request)
        if run.streams_version == "v2":
            self.check_s2_name(run_id, name)
        s = self.hub.get(run_id, name)
        last_id = request.headers.get("Last-Event-ID")
        headers = {"Content-Type": "text/event-stream; charset=utf-8",
                   "Cache-Control": "no-cache"}
        if run.streams_version == "v1":
            reader_class: type = streams.V1Reader
            start = streams.parse_v1_event_id(last_id) if last_id else 0
        else:
            reader_class = streams.Reader
            start = 0
            if last_id:
                n = js_number(last_id.split("-")[0])
                start = int(n) + 1 if n is not None and 0 <= n < float("inf") else 0
            elif request.headers.get("X-Trigger-Stream-Start") == "latest":
                start = max(0, s.tail - 1)     # S2 tail_offset=1
            headers.update({"X-Stream-Version": "v2",
                            "Access-Control-Expose-Headers": "*, " + CORS_EXPOSE})
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        reader = reader_class(self.hub, s, resp, request.transport, start, timeout)
        try:
            await reader.run()
        except ConnectionError:
            pass
        return resp

    async def create_wait(self, request: web.Request, run_id: str) -> web.Response:
        self.authenticate(request, allow_jwt=False)
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
                rows = self.store.read_records(run_id, self.input_name(stream),
                                               max(first, 0), 1)
                if rows:
                    data = json.loads(rows[0][2]).get("data")
                    self.store.complete_waitpoint(db, wp.id, data)
                    self.store.unlink_input_wait(db, run_id, stream)
        return json_response({"waitpointId": wp.id, "isCached": cached is not None})


_RELATIVE_TIME = re.compile(
    r"^(\+|-)? ?(\d+|\d+\.\d+) ?(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|"
    r"weeks?|w|years?|yrs?|y)(?: (ago|from now))?$", re.IGNORECASE)


def expiration_time(value: Any, now: int) -> Optional[int]:
    """A token's exp from an expirationTime: a Unix time, or "15m", "1 hour",
    "2 days", ... relative to now (jose's grammar)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str):
        return None
    m = _RELATIVE_TIME.match(value)
    if not m or (m.group(4) and m.group(1)):
        return None
    unit = m.group(3).lower()
    seconds = (1 if unit.startswith("s") else 60 if unit.startswith("m") else
               3600 if unit.startswith("h") else 86400 if unit.startswith("d") else
               604800 if unit.startswith("w") else 31557600)
    delta = round(float(m.group(2)) * seconds)
    past = m.group(1) == "-" or (m.group(4) or "").lower() == "ago"
    return now - delta if past else now + delta
