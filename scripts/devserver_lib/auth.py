"""Credentials as the Trigger.dev API checks them: the environment's secret
key, or a public access token (HS256 JWT signed with that key), and the
scope rules that decide what a token may do.

Error texts are the real server's, so SDK users see the same messages."""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import jwt

from . import clock
ISSUER = "https://id.trigger.dev"
AUDIENCE = "https://api.trigger.dev"
# The texts the real route builder answers (they are fixed texts there,
# whatever the cause inside: an expired token is "invalid" too).
MISSING = "Invalid or Missing API key"
INVALID_KEY = "Invalid API key"
TOKEN_INVALID = "Public Access Token is invalid"
TOKEN_NO_ENV = "Invalid Public Access Token"

# The body of every 403 the real route builder sends.
FORBIDDEN_BODY = {"error": "Unauthorized", "code": "unauthorized",
                  "param": "access_token", "type": "authorization"}

_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def random_key() -> str:
    return "tr_dev_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def random_additional_key() -> str:
    """An additional API key of the environment: tr_<env>_sk_<24 alnum>."""
    return "tr_dev_sk_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def random_id(prefix: str, n: int = 25) -> str:
    """Ids shaped like the real friendly ids: prefix + lowercase alnum."""
    return prefix + "".join(secrets.choice(_LOWER_ALNUM) for _ in range(n))


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Credential:
    kind: str                      # "secret" or "jwt"
    scopes: list = field(default_factory=list)
    claims: dict = field(default_factory=dict)
    signing: bool = True           # a secret key that can sign tokens (the root key)


def _b64url_json(segment: str) -> Optional[object]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def is_public_jwt(token: str) -> bool:
    """What the real server uses to tell a public token from a key."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    payload = _b64url_json(parts[1])
    return isinstance(payload, dict) and payload.get("pub") is True


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_claims(claims: dict, now: int) -> None:
    """jose's jwtVerify claim checks, in jose's order. Only an expired token
    gets its own message; every other failure is 'invalid'."""
    if "iss" not in claims or "aud" not in claims:
        raise AuthError(401, TOKEN_INVALID)
    if claims["iss"] != ISSUER:
        raise AuthError(401, TOKEN_INVALID)
    aud = claims["aud"]
    if not (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)):
        raise AuthError(401, TOKEN_INVALID)
    for name in ("iat", "nbf", "exp"):
        if name in claims and not _is_number(claims[name]):
            raise AuthError(401, TOKEN_INVALID)
    if "nbf" in claims and claims["nbf"] > now:
        raise AuthError(401, TOKEN_INVALID)
    if "exp" in claims and claims["exp"] <= now:
        raise AuthError(401, TOKEN_INVALID)


def verify_jwt(token: str, key: str, env_id: str) -> dict:
    payload = _b64url_json(token.split(".")[1])
    sub = payload.get("sub") if isinstance(payload, dict) else None
    if not isinstance(sub, str) or sub != env_id:
        raise AuthError(401, TOKEN_NO_ENV)
    try:
        claims = jwt.decode(token, key, algorithms=["HS256", "HS384", "HS512"],
                            options={"verify_exp": False, "verify_aud": False,
                                     "verify_iss": False, "verify_iat": False,
                                     "verify_nbf": False})
    except jwt.PyJWTError:
        raise AuthError(401, TOKEN_INVALID) from None
    _check_claims(claims, int(clock.now()))
    return claims


def _token(header: str) -> str:
    return header[7:] if header.startswith("Bearer ") else header


def _jwt_credential(claims: dict) -> Credential:
    scopes = claims.get("scopes")
    if not isinstance(scopes, list):
        scopes = []
    return Credential("jwt", [s for s in scopes if isinstance(s, str)], claims)


def authenticate(header: Optional[str], keys: dict, env_id: str,
                 allow_jwt: bool) -> Credential:
    """The Authorization header -> a Credential, or AuthError(401).
    `keys` maps each secret key of the environment to whether it can sign
    (the root key) or not (additional keys): tokens are verified against
    the root key only."""
    if not header:
        raise AuthError(401, MISSING)
    token = _token(header)
    for key, signing in keys.items():
        if hmac.compare_digest(token.encode(), key.encode()):
            return Credential("secret", signing=signing)
    if token.startswith("tr_") or not is_public_jwt(token) or not allow_jwt:
        raise AuthError(401, INVALID_KEY)
    root = next(k for k, signing in keys.items() if signing)
    return _jwt_credential(verify_jwt(token, root, env_id))


class Authenticator:
    """authenticate() for one key and environment that remembers the tokens
    it has verified: clients send the same token again and again, and
    PyJWT's decode is a large part of the cost of a small request.

    The subject, signature and scopes of a token are functions of its text,
    so a remembered token skips those checks; its time claims (exp, nbf)
    are still checked on every use, so it expires exactly when it would
    have uncached. Only tokens that passed are remembered."""

    MAX_TOKENS = 4096

    def __init__(self, keys: dict, env_id: str):
        self.keys, self.env_id = keys, env_id
        self._verified: dict = {}     # token text -> Credential

    def __call__(self, header: Optional[str], allow_jwt: bool) -> Credential:
        token = _token(header) if header else ""
        cred = self._verified.get(token)
        if cred is None:
            cred = authenticate(header, self.keys, self.env_id, allow_jwt)
            if cred.kind == "jwt":
                self._remember(token, cred)
            return cred
        if not allow_jwt:
            raise AuthError(401, INVALID_KEY)
        try:
            _check_claims(cred.claims, int(clock.now()))
        except AuthError:
            del self._verified[token]
            raise
        return cred

    def _remember(self, token: str, cred: Credential) -> None:
        if len(self._verified) >= self.MAX_TOKENS:
            del self._verified[next(iter(self._verified))]     # the oldest
        self._verified[token] = cred


Resource = tuple  # (type, id or None)


# Actions that also accept a "write" scope (the real server's aliases).
WRITE_ALIASES = ("trigger", "batchTrigger", "update")


def scope_allows(scopes: Iterable[str], actions: Sequence[str],
                 resources: Sequence[Resource]) -> bool:
    """True if any scope grants any of `actions` on any of `resources`.

    A scope is action:type[:id]; everything after the second colon is the id
    (tags such as "file:1234" contain colons). Bare "admin" allows
    everything ("admin:<type>" is not universal), action "*" any action,
    type "all" any resource, a scope without id every resource of its
    type. trigger, batchTrigger and update also accept write scopes."""
    wanted = set(actions)
    if wanted & set(WRITE_ALIASES):
        wanted.add("write")
    for scope in scopes:
        if scope == "admin":
            return True
        parts = scope.split(":", 2)
        action = parts[0]
        if action not in wanted and action != "*":
            continue
        stype = parts[1] if len(parts) > 1 else None
        if stype == "all":
            return True
        sid = parts[2] if len(parts) > 2 else ""
        for rtype, rid in resources:
            if stype == rtype and (not sid or sid == rid):
                return True
    return False


def allowed(cred: Credential, actions: Sequence[str],
            resources: Sequence[Resource]) -> bool:
    return cred.kind == "secret" or scope_allows(cred.scopes, actions, resources)


def mint(key: str, claims: dict, ttl_seconds: int) -> str:
    """Sign a token the way the SDK's generateJWT (jose) does: header
    {"alg":"HS256"}, the given claims, then iss, aud, exp, iat."""
    now = int(clock.now())
    payload = dict(claims)
    payload.update(iss=ISSUER, aud=AUDIENCE, exp=now + ttl_seconds, iat=now)
    return jwt.encode(payload, key, algorithm="HS256", headers={"typ": None})
