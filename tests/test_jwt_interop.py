"""Tokens minted by libtriggerclient (libjwt) verify with PyJWT, the way a
server other than ours would check them: signature, algorithm and claims."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import jwt
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("TRIGGERFS_BUILD", ROOT / "build"))
MINT = BUILD / "tests" / "unit" / "mint-token"

KEY = "tr_dev_" + base64.urlsafe_b64encode(os.urandom(18)).decode()
ISS = "https://id.trigger.dev"
AUD = "https://api.trigger.dev"


def mint(key: str, sub: str, iat: int, exp: int, scopes: list[str]) -> str:
    """Run the C helper; the key goes through stdin, never argv."""
    assert MINT.exists(), f"{MINT} is missing: build with meson compile -C {BUILD}"
    proc = subprocess.run(
        [str(MINT), sub, str(iat), str(exp), *scopes],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 0, f"mint-token failed: {proc.stderr}"
    assert key not in proc.stdout and key not in proc.stderr
    return proc.stdout.strip()


def verify(token: str, key: str = KEY) -> dict:
    return jwt.decode(token, key, algorithms=["HS256"], audience=AUD, issuer=ISS)


def test_claims_and_signature():
    now = int(time.time())
    scopes = ["read:runs:run_abc", "write:inputStreams:run_abc", "read:tags:env:prod"]
    token = mint(KEY, "env_123", now, now + 900, scopes)

    claims = verify(token)
    assert claims == {
        "iss": ISS,
        "aud": AUD,
        "sub": "env_123",
        "pub": True,
        "scopes": scopes,
        "iat": now,
        "exp": now + 900,
    }
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header.get("typ", "JWT") == "JWT"


def test_wrong_key_is_refused():
    now = int(time.time())
    token = mint(KEY, "env_123", now, now + 60, ["read:runs"])
    with pytest.raises(jwt.InvalidSignatureError):
        verify(token, KEY + "x")


def test_expired_token_is_refused():
    now = int(time.time())
    token = mint(KEY, "env_123", now - 120, now - 60, ["read:runs"])
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token)


def test_no_scopes_and_unicode():
    now = int(time.time())
    token = mint(KEY, "env_\u00e9\u20ac", now, now + 60, [])
    claims = verify(token)
    assert claims["scopes"] == []
    assert claims["sub"] == "env_\u00e9\u20ac"
    payload = token.split(".")[1]
    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(raw["iat"], int) and isinstance(raw["exp"], int)


def test_key_only_from_stdin():
    proc = subprocess.run(
        [str(MINT), "env_1", "1", "2"], input="", capture_output=True, text=True, timeout=10
    )
    assert proc.returncode != 0
    assert "stdin" in proc.stderr
