"""Output streams (streams v2): the PUT a task's streams.writer starts with,
the raw /append route, the read route, and the S2-compatible append
endpoint that the X-S2-Endpoint handed out points at (this server itself,
under /s2/v1, following S2's open-source server: api/src/v1/stream).

A run's output stream S is stored under the name S, next to its input
streams ($trigger.input:S), as the real server names its S2 streams; the
S2 name handed out is /runs/<runId>/<S>."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import jsjson, store as storemod
from .api import HTTPError, Route, json_response

if TYPE_CHECKING:
    from .api import Api

APPEND_MAX_BYTES = 512 * 1024          # the raw /append route
S2_BASIN = "devserver"
S2_PATH = "/s2/v1"                     # X-S2-Endpoint = http://host:port + this
S2_TOKEN_TTL_MS = 24 * 3600 * 1000     # the real server's S2 tokens live a day
S2_FLUSH_INTERVAL_MS = 200
S2_MAX_RETRIES = 10
S2_MAX_BATCH_RECORDS = 1000
S2_MAX_METERED = 1024 * 1024           # per record and per batch
S2_BODY_MAX = 16 * 1024 * 1024         # read at most this much of an append body
_NANOID = string.ascii_letters + string.digits + "_-"


class S2Error(HTTPError):
    """An S2 error answer: {"code", "message"}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, {"code": code, "message": message}, note=message)


def metered_size(body: bytes, headers: list) -> int:
    """S2's metered size of a record: 8 + 2 per header + names, values, body."""
    return 8 + 2 * len(headers) + sum(len(n) + len(v) for n, v in headers) + len(body)


class OutputRoutes:
    def __init__(self, api: "Api"):
        self.api, self.store = api, api.store

    def routes(self) -> list:
        rs = ("realtime", "v1", "streams")
        return [
            Route("PUT", rs + (None, None, None), self.create),
            Route("POST", rs + (None, None, None, "append"), self.append_part),
            Route("GET", rs + (None, None), self.read, cors=True),
            Route("POST", ("s2", "v1", "streams", None, "records"), self.s2_append),
        ]

    # ---- S2 access tokens: signed with the secret key, scoped to this basin

    def s2_token(self) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(
            {"basin": S2_BASIN, "exp": storemod.now_ms() + S2_TOKEN_TTL_MS}).encode()).decode()
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return hmac.new(self.api.key.encode(), b"s2:" + payload.encode(),
                        hashlib.sha256).hexdigest()

    def _check_s2_token(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        payload, _, sig = token.partition(".")
        if not payload or not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            raise S2Error(401, "authn", "invalid access token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload))
        except ValueError:
            raise S2Error(401, "authn", "invalid access token") from None
        if claims.get("exp", 0) <= storemod.now_ms():
            raise S2Error(401, "authn", "access token expired")
        basin = request.headers.get("S2-Basin")
        if basin is not None and basin != S2_BASIN:
            raise S2Error(404, "basin_not_found", f"basin {basin!r} not found")

    # ---- the Trigger.dev routes

    def _target(self, run_id: str, target: str) -> storemod.Run:
        """The run a (runId, target) names; the real server's 404 texts."""
        if target not in ("self", "parent", "root"):
            raise HTTPError(400, {"error": "Invalid request parameters",
                                  "details": [{"path": ["target"], "message":
                                               "Invalid enum value. Expected 'self' | "
                                               "'parent' | 'root'"}]})
        run = self.store.get_run(run_id)
        if run is None:
            raise HTTPError(404, "Run not found")
        if target != "self":     # local runs have no parent: each is its own root
            raise HTTPError(404, "Target not found")
        return run

    async def create(self, request: web.Request, run_id: str, target: str,
                     stream: str) -> web.Response:
        """PUT: what streams.writer/pipe start with; the answer says where
        to append (S2)."""
        self.api.authenticate(request, allow_jwt=False)
        run = self._target(run_id, target)
        if run.finished:
            raise HTTPError(400, "Cannot initialize a realtime stream on a completed run")
        self.store.add_output_stream(run, stream)
        headers = {}
        if run.streams_version == "v2":
            headers = {"X-S2-Access-Token": self.s2_token(),
                       "X-S2-Stream-Name": f"/runs/{run.id}/{stream}",
                       "X-S2-Basin": S2_BASIN,
                       "X-S2-Flush-Interval-Ms": str(S2_FLUSH_INTERVAL_MS),
                       "X-S2-Max-Retries": str(S2_MAX_RETRIES),
                       "X-S2-Endpoint": f"{request.scheme}://{request.host}{S2_PATH}"}
        return json_response({"version": run.streams_version}, 202, headers)

    async def append_part(self, request: web.Request, run_id: str, target: str,
                          stream: str) -> web.Response:
        """POST .../append: the raw body stored as a string record."""
        self.api.authenticate(request, allow_jwt=False)
        raw = await self.api.read_body(request, APPEND_MAX_BYTES,
                                       {"error": "Request body too large"})
        run = self._target(run_id, target)
        if run.finished:
            raise HTTPError(400, "Cannot append to a realtime stream on a completed run")
        self.store.add_output_stream(run, stream)
        part_id = request.headers.get("X-Part-Id") or "".join(
            secrets.choice(_NANOID) for _ in range(7))
        body = jsjson.stringify({"data": raw.decode("utf-8", "replace"), "id": part_id})
        self.api.check_record_size(body)
        self.api.append(run.id, stream, [body])
        return json_response({"ok": True})

    async def read(self, request: web.Request, run_id: str, stream: str) -> web.StreamResponse:
        return await self.api.read_stream(request, run_id, stream)

    # ---- S2

    def _stream_of(self, name: str) -> tuple:
        """An S2 stream name -> (run id, storage name)."""
        _, sep, rest = name.partition("/runs/")
        run_id, _, stream = rest.partition("/")
        if not sep or not stream or self.store.get_run(run_id) is None:
            raise S2Error(404, "stream_not_found", f"stream {name!r} not found")
        return run_id, stream

    @staticmethod
    def _records(body: Any, fmt: str) -> list:
        """The records of an append body -> [(body text, headers)], checked
        as S2 checks them."""
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise S2Error(400, "bad_json", "expected an object with a records array")
        records = body["records"]
        if not 1 <= len(records) <= S2_MAX_BATCH_RECORDS:
            raise S2Error(422, "invalid", "a batch holds 1 to 1000 records")
        out, total = [], 0
        for rec in records:
            if not isinstance(rec, dict):
                raise S2Error(400, "bad_json", "a record is an object")
            text, headers = rec.get("body", ""), rec.get("headers", [])
            if not isinstance(text, str) or not isinstance(headers, list) or not all(
                    isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
                    for h in headers):
                raise S2Error(400, "bad_json", "a record has a string body and "
                                               "[name, value] string headers")
            if fmt == "base64":
                try:
                    raw = base64.b64decode(text, validate=True)
                    headers = [[base64.b64decode(n), base64.b64decode(v)] for n, v in headers]
                except ValueError:
                    raise S2Error(400, "bad_json", "invalid base64") from None
            else:
                raw = text.encode()
                headers = [[n.encode(), v.encode()] for n, v in headers]
            size = metered_size(raw, headers)
            if size > S2_MAX_METERED:
                raise S2Error(422, "invalid", "record must have metered size less than 1 MiB")
            total += size
            out.append(raw.decode("utf-8", "replace"))
        if total > S2_MAX_METERED:
            raise S2Error(422, "invalid", "batch must have metered size less than 1 MiB")
        return out

    async def s2_append(self, request: web.Request, name: str) -> web.Response:
        """POST <endpoint>/streams/<name>/records, S2's unary append:
        {"records": [{"body": "..."}]} -> the ack (start, end, tail)."""
        self._check_s2_token(request)
        fmt = request.headers.get("S2-Format", "raw")
        if fmt not in ("raw", "base64"):
            raise S2Error(400, "bad_header", f"invalid S2-Format {fmt!r}")
        run_id, stream = self._stream_of(name)
        if (request.content_length or 0) > S2_BODY_MAX:
            raise S2Error(413, "invalid", "the request is too large")
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise S2Error(400, "bad_json", "the body is not JSON") from None
        bodies = self._records(body, fmt)
        s = self.api.hub.get(run_id, stream)
        match = body.get("match_seq_num")
        if match is not None and match != s.tail:
            return json_response({"seq_num_mismatch": s.tail}, 412)
        records = self.api.append(run_id, stream, bodies)
        ts = records[-1].ts
        return json_response({
            "start": {"seq_num": records[0].seq, "timestamp": ts},
            "end": {"seq_num": records[-1].seq + 1, "timestamp": ts},
            "tail": {"seq_num": s.tail, "timestamp": s.last_ts}})

