"""Waitpoint token routes (wait.createToken, listTokens, retrieveToken,
completeToken and the token's callback URL), and the retrieval every
waitpoint shares, .wait() ones included. A token is a waitpoint that no
input stream is linked to."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import jsjson, store as storemod
from .api import (HTTPError, Route, _expect, _string_list, js_parse_int, json_response,
                  parse_delay_ms, parse_duration_ms)

if TYPE_CHECKING:
    from .api import Api

COMPLETE_MAX_BYTES = 3 * 1024 * 1024
CREATE_MAX_BYTES = 10 * 1024
TOKEN_JWT_TTL = 24 * 3600           # the x-trigger-jwt of a created token


class WaitpointRoutes:
    def __init__(self, api: "Api"):
        self.api, self.store = api, api.store

    def routes(self) -> list:
        base = ("api", "v1", "waitpoints", "tokens")
        return [
            Route("POST", base, self.create),
            Route("GET", base, self.list),
            Route("GET", base + (None,), self.retrieve),
            Route("POST", base + (None, "complete"), self.complete, cors=True),
            Route("POST", base + (None, "callback", None), self.callback),
        ]

    def callback_hash(self, wp_id: str) -> str:
        return hmac.new(self.api.key.encode(), wp_id.encode(), hashlib.sha256).hexdigest()

    def url(self, request: web.Request, wp_id: str) -> str:
        return (f"{request.scheme}://{request.host}/api/v1/waitpoints/tokens/{wp_id}"
                f"/callback/{self.callback_hash(wp_id)}")

    def waitpoint_json(self, request: web.Request, wp: storemod.Waitpoint,
                       with_output: bool = True) -> dict:
        out: dict = {"id": wp.id, "type": "MANUAL", "url": self.url(request, wp.id),
                     "status": storemod.waitpoint_status(wp),
                     "idempotencyKey": wp.idempotency_key,
                     "userProvidedIdempotencyKey": wp.user_key}
        if wp.idempotency_expires is not None:
            out["idempotencyKeyExpiresAt"] = storemod.iso(wp.idempotency_expires)
        if with_output:
            if wp.output is not None:
                out["output"] = wp.output
            out.update(outputType="application/json", outputIsError=wp.output_is_error)
        if wp.timeout_at is not None:
            out["timeoutAt"] = storemod.iso(wp.timeout_at)
            out["completedAfter"] = storemod.iso(wp.timeout_at)
        if wp.completed_at is not None:
            out["completedAt"] = storemod.iso(wp.completed_at)
        out.update(createdAt=storemod.iso(wp.created_at), tags=wp.tags)
        return out

    async def create(self, request: web.Request) -> web.Response:
        self.api.authenticate(request, allow_jwt=False)
        body = self.api.parse_json_body(await self.api.read_body(
            request, CREATE_MAX_BYTES, {"error": "Request body too large"}))
        timeout = _expect(body, "timeout", str, "string")
        idem_key = _expect(body, "idempotencyKey", str, "string")
        idem_ttl = _expect(body, "idempotencyKeyTTL", str, "string")
        tags = _string_list(body, "tags")
        if len(tags) > 10:
            raise HTTPError(422, {"error": f"Waitpoints can only have 10 tags, you're "
                                           f"trying to set {len(tags)}."})
        wp = self.store.waitpoint_by_idempotency_key(idem_key) if idem_key else None
        cached = wp is not None
        if wp is None:
            ttl = parse_duration_ms(idem_ttl) if idem_ttl else None
            with self.store.transaction() as db:
                wp = self.store.create_waitpoint(
                    db, "", "", parse_delay_ms(timeout), idem_key,
                    storemod.now_ms() + ttl if ttl else None, tags)
        token, _ = self.api.mint([f"write:waitpoints:{wp.id}"], TOKEN_JWT_TTL)
        return json_response({"id": wp.id, "isCached": cached, "url": self.url(request, wp.id)},
                             200, {"x-trigger-jwt": token,
                                   "x-trigger-jwt-claims": jsjson.stringify(self.api.claims())})

    async def list(self, request: web.Request) -> web.Response:
        self.api.authenticate(request, allow_jwt=False)
        q = request.query
        statuses = [v for v in q.get("filter[status]", "").split(",") if v]
        bad = [v for v in statuses if v not in ("WAITING", "COMPLETED", "TIMED_OUT")]
        size = js_parse_int(q.get("page[size]", "25"))
        if bad or size is None or not 1 <= size <= 100:
            raise HTTPError(400, {"error": "Query Error"})
        tags = [v for v in q.get("filter[tags]", "").split(",") if v]
        wps, more = self.store.list_waitpoints(statuses, q.get("filter[idempotencyKey]"),
                                               tags, size, q.get("page[after]"))
        pagination: dict = {}
        if more and wps:
            pagination["next"] = wps[-1].id
        if q.get("page[after]") and wps:
            pagination["previous"] = wps[0].id
        return json_response({"data": [self.waitpoint_json(request, wp, False) for wp in wps],
                              "pagination": pagination})

    async def retrieve(self, request: web.Request, wp_id: str) -> web.Response:
        self.api.authenticate(request, allow_jwt=False)
        wp = self.store.get_waitpoint(wp_id)
        if wp is None:
            # The real route lets the lookup's exception through.
            raise HTTPError(500, {"error": "Internal Server Error"}, note="unknown waitpoint")
        return json_response(self.waitpoint_json(request, wp))

    def _complete(self, wp_id: str, data: Any) -> None:
        output = jsjson.stringify(data) if data is not None else None
        with self.store.transaction() as db:
            self.store.complete_waitpoint(db, wp_id, output)

    async def complete(self, request: web.Request, wp_id: str) -> web.Response:
        cred = self.api.authenticate(request)
        body = self.api.parse_json_body(await self.api.read_body(
            request, COMPLETE_MAX_BYTES, {"error": "Request body too large"}))
        self.api.require(request, cred, ("write",), [("waitpoints", wp_id)])
        if self.store.get_waitpoint(wp_id) is None:
            raise HTTPError(404, {"error": "Waitpoint not found"})
        self._complete(wp_id, body.get("data"))
        return json_response({"success": True})

    async def callback(self, request: web.Request, wp_id: str, digest: str) -> web.Response:
        """The token's URL: anyone holding it may complete the token with
        any JSON body (a webhook)."""
        if not hmac.compare_digest(digest.encode(), self.callback_hash(wp_id).encode()):
            raise HTTPError(401, {"error": "Invalid URL, hash doesn't match"})
        if self.store.get_waitpoint(wp_id) is None:
            raise HTTPError(404, {"error": "Waitpoint not found"})
        raw = await self.api.read_body(request, COMPLETE_MAX_BYTES,
                                       {"error": "Request body too large"})
        try:
            data = jsjson.parse(jsjson.decode_body(raw)) if raw else None
        except jsjson.JSONError:
            raise HTTPError(400, {"error": "Invalid JSON"}) from None
        self._complete(wp_id, data)
        return json_response({"success": True})
