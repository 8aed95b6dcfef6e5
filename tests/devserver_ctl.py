"""Drive scripts/devserver from tests: start/stop/kill -9/restart a real
server process, call its API with urllib, mint tokens, read SSE.

    srv = DevServer().start()
    run, token = srv.trigger_run()
    srv.send(run, "chat", {"hi": 1})
    assert srv.records(run, "chat") == [(0, {"hi": 1})]
    srv.close()

The secret key is read from the server's key file and never printed."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import jwt

ROOT = Path(__file__).resolve().parent.parent
DEVSERVER = ROOT / "scripts" / "devserver"
ISSUER = "https://id.trigger.dev"
AUDIENCE = "https://api.trigger.dev"
NOAUTH = ""            # token=NOAUTH sends no Authorization header
_LISTENING = re.compile(rb"devserver: listening on http://127\.0\.0\.1:(\d+)\n")
# urllib must not send 127.0.0.1 through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll `predicate` until it returns a true value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def envelope_value(body: str) -> Any:
    """A record body {"data": <JSON text>, "id": ...} -> the value sent."""
    data = json.loads(body)["data"]
    return json.loads(data) if isinstance(data, str) else data


class SSE:
    """One SSE connection. Iterate for events (dicts with event, data, id,
    and `raw`, the exact bytes of the event)."""

    def __init__(self, srv: "DevServer", path: str, token: Optional[str] = None,
                 headers: Optional[dict] = None, timeout: float = 10.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
        hdrs = {"Accept": "text/event-stream"}
        hdrs.update(srv.auth_header(token))
        hdrs.update(headers or {})
        self.conn.request("GET", path, headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = self.resp.headers

    def body(self) -> bytes:
        return self.resp.read()

    def events(self) -> Iterator[dict]:
        event: dict = {"raw": b""}
        while True:
            line = self.resp.readline()
            if not line:
                return
            event["raw"] += line
            text = line.decode().rstrip("\n")
            if text == "":
                if "data" in event:
                    yield event
                event = {"raw": b""}
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event["data"] = event["data"] + "\n" + value if "data" in event else value
            elif name in ("event", "id"):
                event[name] = value

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "SSE":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DevServer:
    def __init__(self, db_dir: Optional[str] = None, env: Optional[dict] = None,
                 args: tuple = ()):
        self._tmp = None
        if db_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="devserver-")
            db_dir = self._tmp.name
        self.dir = Path(db_dir)
        self.db = self.dir / "dev.db"
        self.request_log = self.dir / "requests.jsonl"
        self.stderr_log = self.dir / "devserver.log"
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self._env = env or {}
        self._args = tuple(args)
        self._env_id: Optional[str] = None

    # ---- process control

    def start(self, timeout: float = 15.0) -> "DevServer":
        env = {k: v for k, v in os.environ.items() if k != "TRIGGER_SECRET_KEY"}
        env.update(self._env)
        argv = [str(DEVSERVER), "--port", str(self.port), "--db", str(self.db),
                "--request-log", str(self.request_log), *self._args]
        with open(self.stderr_log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            self.port = self._read_port(timeout)
        except BaseException:
            self.kill9()
            raise
        return self

    def _read_port(self, timeout: float) -> int:
        fd = self.proc.stdout.fileno()
        out = b""
        deadline = time.monotonic() + timeout
        while not _LISTENING.search(out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"devserver not listening after {timeout}s:\n{self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"devserver exited ({self.proc.wait()}):\n"
                                       f"{self.log_tail()}")
                out += chunk
        return int(_LISTENING.search(out).group(1))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self._reap(10)

    def kill9(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reap(10)

    def restart(self, timeout: float = 15.0) -> "DevServer":
        """Start again on the same database and port (stop first if running)."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "DevServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- identity

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secret_key(self) -> str:
        return (self.dir / "dev.db.key").read_text().strip()

    @property
    def env_id(self) -> str:
        if self._env_id is None:
            status, _, body = self.api("POST", "/api/v1/auth/jwt/claims")
            assert status == 200, body
            self._env_id = body["sub"]
        return self._env_id

    def auth_header(self, token: Optional[str]) -> dict:
        if token == NOAUTH:
            return {}
        return {"Authorization": f"Bearer {self.secret_key if token is None else token}"}

    def mint(self, scopes: list, exp_in: int = 900, key: Optional[str] = None,
             **claims: Any) -> str:
        """A public token like auth.createPublicToken makes. A claim given
        as None is left out."""
        now = int(time.time())
        payload = {"sub": self.env_id, "pub": True, "scopes": scopes, "iss": ISSUER,
                   "aud": AUDIENCE, "iat": now, "exp": now + exp_in}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.secret_key, algorithm="HS256")

    # ---- API calls

    def api(self, method: str, path: str, body: Any = None, token: Optional[str] = None,
            headers: Optional[dict] = None, timeout: float = 30.0) -> tuple:
        """-> (status, headers, parsed JSON or text). `body` may be bytes or
        str (sent as is) or any JSON value."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(self.auth_header(token))
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                status, rheaders, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, rheaders, raw = e.code, e.headers, e.read()
        if (rheaders.get("Content-Type") or "").startswith(("application/json",
                                                            "application/problem+json")):
            return status, rheaders, json.loads(raw)
        return status, rheaders, raw.decode(errors="replace")

    def trigger_run(self, task: str = "demo", payload: Any = None, tags: Optional[list] = None,
                    token: Optional[str] = None) -> tuple:
        """-> (run id, the run's public token from x-trigger-jwt)."""
        body: dict = {"payload": payload}
        if tags:
            body["options"] = {"tags": tags}
        status, headers, resp = self.api("POST", f"/api/v1/tasks/{urllib.parse.quote(task)}"
                                         "/trigger", body, token=token)
        assert status == 200, (status, resp)
        return resp["id"], headers["x-trigger-jwt"]

    @staticmethod
    def stream_path(run: str, stream: str, output: bool = False) -> str:
        """The route of an input stream, or with `output` the read route of
        an output stream."""
        return (f"/realtime/v1/streams/{urllib.parse.quote(run, safe='')}/"
                f"{'' if output else 'input/'}{urllib.parse.quote(stream, safe='')}")

    def send(self, run: str, stream: str, value: Any, token: Optional[str] = None) -> None:
        status, _, body = self.api("POST", self.stream_path(run, stream), {"data": value},
                                   token=token)
        assert (status, body) == (200, {"ok": True}), (status, body)

    def cancel(self, run: str) -> None:
        """Cancel and wait until the run is finished (the server keeps a
        cancelled run pending-cancel for a moment, as a worker would)."""
        status, _, body = self.api("POST", f"/api/v2/runs/{run}/cancel")
        assert (status, body) == (200, {"id": run}), (status, body)
        wait_for(lambda: self.api("GET", f"/api/v3/runs/{run}")[2].get("isCompleted"),
                 what=f"{run} to finish after its cancel")

    def sse(self, run: str, stream: str, token: Optional[str] = None,
            headers: Optional[dict] = None, timeout: float = 10.0, output: bool = False) -> SSE:
        return SSE(self, self.stream_path(run, stream, output), token, headers, timeout)

    def raw_records(self, run: str, stream: str, last_event_id: Any = None,
                    token: Optional[str] = None, timeout: float = 10.0,
                    output: bool = False) -> list:
        """Every stored record after `last_event_id`, as the records[] dicts
        of the SSE batches, read until caught up (the server sends a ping
        as soon as the reader has caught up)."""
        headers = {"Timeout-Seconds": "60"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        out: list = []
        deadline = time.monotonic() + timeout
        with self.sse(run, stream, token, headers, timeout, output) as s:
            assert s.status == 200, (s.status, s.body())
            for ev in s.events():
                if ev.get("event") == "batch":
                    out += json.loads(ev["data"])["records"]
                elif ev.get("event") == "ping":
                    return out
                if time.monotonic() > deadline:
                    break
        raise AssertionError(f"SSE for {run}/{stream} did not catch up within {timeout}s")

    def records(self, run: str, stream: str, last_event_id: Any = None,
                token: Optional[str] = None, timeout: float = 10.0,
                output: bool = False) -> list:
        """[(seq, value sent)] read through SSE until caught up."""
        return [(r["seq_num"], envelope_value(r["body"]))
                for r in self.raw_records(run, stream, last_event_id, token, timeout, output)]

    def open_output(self, run: str, stream: str, token: Optional[str] = None) -> dict:
        """PUT the output stream as streams.writer does -> its X-S2-* headers."""
        status, headers, body = self.api(
            "PUT", f"/realtime/v1/streams/{run}/self/{urllib.parse.quote(stream, safe='')}",
            token=token)
        assert (status, body) == (202, {"version": "v2"}), (status, body)
        return {k: v for k, v in headers.items() if k.lower().startswith("x-s2-")}

    def s2_append(self, s2: dict, bodies: list, token: Optional[str] = None,
                  match_seq_num: Optional[int] = None) -> tuple:
        """POST records to the S2 endpoint that `s2` (open_output's answer)
        points at -> (status, parsed answer)."""
        url = (f"{s2['X-S2-Endpoint']}/streams/"
               f"{urllib.parse.quote(s2['X-S2-Stream-Name'], safe='')}/records")
        body: dict = {"records": [{"body": b} for b in bodies]}
        if match_seq_num is not None:
            body["match_seq_num"] = match_seq_num
        req = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(), headers={
            "Authorization": f"Bearer {token or s2['X-S2-Access-Token']}",
            "S2-Format": "raw", "S2-Basin": s2["X-S2-Basin"],
            "Content-Type": "application/json"})
        try:
            with _OPENER.open(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def write_output(self, run: str, stream: str, values: list) -> None:
        """Append values as streams.writer does: each one record whose
        envelope's data is the value itself."""
        s2 = self.open_output(run, stream)
        bodies = [json.dumps({"data": v, "id": f"p{i:06d}"}) for i, v in enumerate(values)]
        status, ack = self.s2_append(s2, bodies)
        assert status == 200, ack

    def request_log_entries(self) -> list:
        try:
            return [json.loads(line) for line in self.request_log.read_text().splitlines()]
        except FileNotFoundError:
            return []
