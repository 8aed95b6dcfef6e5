"""The real API's rate limiter (Upstash ratelimit algorithms): only paths
under /api/ are limited. A valid secret key shares one token bucket per
environment (750, refilled 250 every 10 s); a valid public JWT gets a fixed
window per token (60 a minute); anything else (unknown keys, bad tokens) a
default bucket keyed by the credential's text. Every limited answer says
where it stands in x-ratelimit-limit/-remaining/-reset (Unix ms)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

from . import clock

# Paths under /api/ that the real limiter lets through untouched.
WHITELIST_PREFIXES = ("/api/v1/auth/jwt/claims",)
WHITELIST_CALLBACK = "/callback/"      # /api/v1/waitpoints/tokens/<id>/callback/<hash>


@dataclass
class Limits:
    bucket_max: int = 750
    bucket_refill: int = 250
    bucket_interval_s: float = 10.0
    jwt_tokens: int = 60
    jwt_window_s: float = 60.0


@dataclass
class Verdict:
    ok: bool
    limit: int
    remaining: int
    reset_ms: int

    def headers(self) -> dict:
        return {"x-ratelimit-limit": str(self.limit),
                "x-ratelimit-remaining": str(max(0, self.remaining)),
                "x-ratelimit-reset": str(self.reset_ms)}

    def refusal(self) -> bytes:
        """The 429 body, application/problem+json as the real server writes it."""
        seconds = max(0.0, (self.reset_ms - clock.now_ms()) / 1000)
        text = (f"Rate limit exceeded {max(0, self.remaining)}/{self.limit} requests "
                f"remaining. Retry in {_js_number(seconds)} seconds.")
        return json.dumps({
            "title": "Rate Limit Exceeded", "status": 429,
            "type": "https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/429",
            "detail": text, "reset": self.reset_ms, "limit": self.limit,
            "remaining": self.remaining, "secondsUntilReset": seconds, "error": text,
        }, indent=2).encode()


def _js_number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def limited_path(path: str) -> bool:
    return path.startswith("/api") and not path.startswith(WHITELIST_PREFIXES) and \
        not (path.startswith("/api/v1/waitpoints/tokens/") and WHITELIST_CALLBACK in path)


def no_authorization_body() -> bytes:
    return json.dumps({
        "title": "Unauthorized", "status": 401,
        "type": "https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401",
        "detail": "No authorization header provided",
        "error": "No authorization header provided",
    }, indent=2).encode()


class RateLimiter:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.buckets: dict = {}      # key -> [tokens, refilled_at_ms]
        self.windows: dict = {}      # key -> [window index, count]

    @staticmethod
    def key_of(authorization: str) -> str:
        return hashlib.sha256(authorization.encode()).hexdigest()

    def bucket(self, key: str) -> Verdict:
        lim = self.limits
        now = clock.now_ms()
        interval = int(lim.bucket_interval_s * 1000)
        state = self.buckets.get(key)
        if state is None:
            state = self.buckets[key] = [lim.bucket_max, now]
        periods = (now - state[1]) // interval
        if periods > 0:
            state[0] = min(lim.bucket_max, state[0] + periods * lim.bucket_refill)
            state[1] += periods * interval
        reset = state[1] + interval
        if state[0] <= 0:
            return Verdict(False, lim.bucket_max, 0, reset)
        state[0] -= 1
        return Verdict(True, lim.bucket_max, state[0], reset)

    def window(self, key: str) -> Verdict:
        lim = self.limits
        size = int(lim.jwt_window_s * 1000)
        index = clock.now_ms() // size
        state = self.windows.get(key)
        if state is None or state[0] != index:
            state = self.windows[key] = [index, 0]
        state[1] += 1
        reset = (index + 1) * size
        return Verdict(state[1] <= lim.jwt_tokens, lim.jwt_tokens,
                       lim.jwt_tokens - state[1], reset)

    def check(self, authorization: str, kind: Optional[str]) -> Verdict:
        """kind: "secret" (a valid key of the environment), "jwt" (a valid
        public token) or None (anything else)."""
        if kind == "secret":
            return self.bucket("env")
        if kind == "jwt":
            return self.window(self.key_of(authorization))
        return self.bucket(self.key_of(authorization))
