"""--wan: the same operations over a long TLS link (bench_lib/wan.py: nginx
with TLS 1.3 and HTTP/2 behind a 20 ms round trip), side by side: curl
(a new process and connection per operation, as a shell loop of curl
does), libtriggerclient (bench-direct), the published SDK, and triggerfs.
Times are also given in round trips (time / RTT), the unit the targets are
in."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .env import SDK_DIR, Bench, BenchError, Mount, wait_for
from .scenarios import Config, attempt, latency_once, node
from .wan import Link

DELAY_MS = 10.0                 # each way: a 20 ms round trip
# What --only picks from, with --wan: the mount's sends and delivery, its
# send + delivery round trips, subscriptions and the release, curl, the
# other processes (libtriggerclient, SDK: --ways), CPU per new connection.
PARTS = ("sends", "latency", "connections", "curl", "process", "newconn")
RELEASE_CONNECTIONS = 16        # the release's sends, pipelined


def rtt_s() -> float:
    return 2 * DELAY_MS / 1000


def timed(fn: Any) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def write_value(path: Path, value: str) -> None:
    """What `echo value > path` does: open, one write, close."""
    with open(path, "w") as f:
        f.write(value + "\n")


def local_send(b: Bench, run: str, stream: str, value: Any) -> None:
    """A send straight to the local server (not over the link)."""
    req = urllib.request.Request(
        f"{b.url}/realtime/v1/streams/{run}/input/{stream}",
        data=json.dumps({"data": value}).encode(), method="POST",
        headers={"Authorization": f"Bearer {b.env['TRIGGER_SECRET_KEY']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def deliver_s(b: Bench, run: str, stream: str, reader: subprocess.Popen,
              is_parked: Any) -> float:
    """A reader waits; a record is stored (locally); how long until the
    reader has it and exits."""
    wait_for(is_parked, 60, "the reader to wait")
    t0 = time.monotonic()
    local_send(b, run, stream, "deliver")
    reader.wait(30)
    return time.monotonic() - t0


# ---- triggerfs ---------------------------------------------------------------

def counted(link: Link, out: dict, key: str, fn: Any) -> None:
    """out[key + "_s"]: how long fn took; out[key + "_requests"]: the
    requests it made on the link (one after another: its round trips)."""
    mark = link.access_log_mark()
    out[key + "_s"] = timed(fn)
    time.sleep(0.3)         # requests are logged when they end
    out[key + "_requests"] = link.requests_since(mark)


def fs_sends(b: Bench, link: Link, m: Mount, runs: list, steady: int) -> dict:
    """The first echo after the mount is up, to a new run, to a new stream
    of a known run, to a stream a reader follows, and steady ones."""
    out: dict = {}
    counted(link, out, "first_after_mount", lambda: write_value(m.stream(runs[0], "a"), "1"))
    counted(link, out, "new_run", lambda: write_value(m.stream(runs[1], "a"), "1"))
    counted(link, out, "new_stream", lambda: write_value(m.stream(runs[1], "b"), "1"))
    reader = subprocess.Popen(["head", "-n1", str(m.stream(runs[2], "f"))],
                              stdout=subprocess.DEVNULL)
    try:
        m.wait_parked(1, 30)
        out["followed_stream_s"] = timed(lambda: write_value(m.stream(runs[2], "f"), "1"))
        reader.wait(30)
    finally:
        reader.kill()
        reader.wait()
    out["steady_s"] = statistics.median(
        timed(lambda: write_value(m.stream(runs[1], "b"), str(i))) for i in range(steady))
    reader = subprocess.Popen(["head", "-n1", str(m.stream(runs[1], "d"))],
                              stdout=subprocess.DEVNULL)
    try:
        out["deliver_s"] = deliver_s(b, runs[1], "d", reader,
                                     lambda: m.stats()["parked_reads"] >= 1)
    finally:
        reader.kill()
        reader.wait()
    return out


def new_conn_cpu_ms(b: Bench, churn: Link, steady: Link, runs: list, n: int) -> dict:
    """The daemon's CPU per send when every request needs a new TLS
    connection (nginx closes each after one request) less its CPU per send
    on a kept connection: the CPU one new connection costs, on the event
    thread that every transfer shares."""
    per = {}
    for name, link in (("kept", steady), ("new", churn)):
        b.env["TRIGGER_API_URL"] = link.url
        with b.mount(f"wan-cpu-{name}") as m:
            path = m.stream(runs[0], f"cpu-{name}")
            write_value(path, "0")              # the run and the stream known
            a0, c0 = link.status()["accepts"], m.cpu_s()
            for i in range(n):
                write_value(path, str(i))
            per[name] = {"cpu_ms": (m.cpu_s() - c0) / n * 1e3,
                         "connections": link.status()["accepts"] - a0 - 1}
    extra = per["new"]["connections"] / n
    return {"per_send": per, "cpu_ms_per_connection":
            (per["new"]["cpu_ms"] - per["kept"]["cpu_ms"]) / extra if extra > 0 else None}


def release_sends(b: Bench, runs_file: Path, k: int, prefix: str, per: int) -> dict:
    """per records to each stream PREFIX0..K-1 of every run, straight to the
    local server: every request written at once, pipelined on a few kept
    connections (a stream's on one), the answers counted.  A sender that is
    neither the bottleneck nor a rival for the CPU, as the tasks it stands
    for run elsewhere (bench-direct's first sends read each stream's tail
    before 50d905c, which doubled the server's work; curl --parallel took
    0.45 s of CPU per 2,000 sends, on the 2 cores the server, the link and
    the mount share)."""
    host = b.url.split("//", 1)[1]
    body = b'{"data":{"release":true}}'
    head = (f"Host: {host}\r\nAuthorization: Bearer {b.env['TRIGGER_SECRET_KEY']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    streams = [f"{run}/input/{prefix}{i}" for run in runs_file.read_text().split()
               for i in range(k)]
    batches = [b"".join(f"POST /realtime/v1/streams/{s} HTTP/1.1\r\n{head}".encode() + body
                        for s in streams[c::RELEASE_CONNECTIONS] for _ in range(per))
               for c in range(RELEASE_CONNECTIONS)]
    conns = [socket.create_connection(("127.0.0.1", int(host.rsplit(":", 1)[1])), 30)
             for _ in batches]
    try:
        t0 = time.monotonic_ns()
        for c, batch in zip(conns, batches):
            c.sendall(batch)
        for c, i in zip(conns, range(RELEASE_CONNECTIONS)):
            read_answers(c, len(streams[i::RELEASE_CONNECTIONS]) * per)
        return {"start_ns": t0, "end_ns": time.monotonic_ns()}
    finally:
        for c in conns:
            c.close()


def read_answers(c: socket.socket, n: int) -> None:
    """n HTTP/1.1 answers from c, each a 200 (BenchError otherwise)."""
    buf = b""

    def more() -> bytes:
        data = c.recv(65536)
        if not data:
            raise BenchError("release: the server closed a connection")
        return data

    while n:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            buf += more()
            continue
        head = buf[:end].decode("latin-1")
        if not head.startswith("HTTP/1.1 200"):
            raise BenchError(f"release: {head.splitlines()[0]!r}")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        end += 4 + (int(m.group(1)) if m else 0)
        while len(buf) < end:
            buf += more()
        buf = buf[end:]
        n -= 1


def connections(b: Bench, link: Link, m: Mount, runs_file: Path, k: int, n_streams: int) -> dict:
    """n_streams subscriptions (one reader each, then two): connections
    held; then two records to every stream release every reader (input/S
    gives each record to one reader): connections opened meanwhile, how
    many carried no request, how long (from the first send on: the sends
    take most of it, so their own time is reported too)."""
    w = b.spawn([b.prog("bench/bench-waiters"), str(m.path), str(runs_file), str(k), "2",
                 "conn"], "wan-waiters", stdin=True)
    try:
        w.expect("stage1", 300)
        m.wait_parked(n_streams, 300)
        w.send("go\n")
        w.expect("stage2", 300)
        m.wait_parked(2 * n_streams, 300)
        held = link.client_connections()
        before, mark = link.status(), link.access_log_mark()
        sent = release_sends(b, runs_file, k, "conn", 2)
        done = w.result(60)
        if done["ok"] != 2 * n_streams:
            raise BenchError(f"{done['failed']} of {2 * n_streams} readers failed: "
                             f"{done['first_error']}")
        opened = link.status()["accepts"] - before["accepts"] - 1   # our status query
        time.sleep(0.5)         # requests are logged when they end
        carried = link.connections_with_requests(mark)
        return {"subscriptions": n_streams, "readers": 2 * n_streams,
                "connections_held": held, "released": done["ok"],
                "release_s": (int(done["last_ns"]) - sent["start_ns"]) / 1e9,
                "sends_s": (sent["end_ns"] - sent["start_ns"]) / 1e9,
                "after_sends_s": (int(done["last_ns"]) - sent["end_ns"]) / 1e9,
                "connections_opened": opened,
                "opened_without_request": max(0, opened - len(carried))}
    finally:
        w.stop()


def idle_send(b: Bench, link: Link, m: Mount, run: str, idle_s: float) -> dict:
    """A send after idle_s of nothing: the requests and connections it
    needed, and its time beside a send after a 1 s pause (on a machine
    whose processes all sleep, any isolated send wakes the whole chain:
    a few ms that are not the network's)."""
    path = m.stream(run, "idle")
    write_value(path, "0")
    paused = []
    for i in range(5):
        time.sleep(1)
        paused.append(timed(lambda: write_value(path, str(i))))
    time.sleep(idle_s)
    a0, mark = link.status()["accepts"], link.access_log_mark()
    took = timed(lambda: write_value(path, "1"))
    time.sleep(0.5)         # requests are logged when they end
    return {"idle_s": idle_s, "send_s": took, "paused_s": statistics.median(paused),
            "requests": link.requests_since(mark),
            "new_connections": link.status()["accepts"] - a0 - 1}


# ---- the others --------------------------------------------------------------

def curl_send(b: Bench, link: Link, run: str, stream: str) -> float:
    argv = ["curl", "-sS", "-o", "/dev/null", "--fail", "--cacert", str(link.ca_file),
            "-H", "Content-Type: application/json", "-H", "@-", "--data", '{"data":1}',
            f"{link.url}/realtime/v1/streams/{run}/input/{stream}"]
    t0 = time.monotonic()
    r = subprocess.run(argv, input=f"Authorization: Bearer {b.env['TRIGGER_SECRET_KEY']}\n",
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode:
        raise BenchError(f"curl: {r.stderr.strip()}")
    return time.monotonic() - t0


def curl_way(b: Bench, link: Link, runs: list, steady: int) -> dict:
    return {"first_after_mount_s": curl_send(b, link, runs[0], "a"),
            "new_run_s": curl_send(b, link, runs[1], "a"),
            "new_stream_s": curl_send(b, link, runs[1], "b"),
            "steady_s": statistics.median(curl_send(b, link, runs[1], "b")
                                          for _ in range(steady))}


def process_send_s(b: Bench, way: str, run: str, stream: str) -> float:
    """A new process sends one record: what a script calling the tool or
    the SDK once pays (start, connect, send)."""
    t0 = time.monotonic()
    if way == "direct":
        path = b.tmp / "one-record.jsonl"
        path.write_text("1\n")
        b.run([b.prog("bench/bench-direct"), "send", str(path), run, stream], "wan-direct", 60)
    else:
        child = b.spawn(node("send.mjs"), "wan-sdk", stdin=True, cwd=SDK_DIR,
                        env=dict(b.env, RUN_ID=run, STREAM_ID=stream))
        try:
            child.send("1\n")
            assert child.proc.stdin is not None
            child.proc.stdin.close()
            child.expect('{"sent":0', 60)
            child.wait(30)
        finally:
            child.stop()
    return time.monotonic() - t0


# ---- the scenario ------------------------------------------------------------

def scenario_wan(b: Bench, cfg: Config, idle_s: float, only: Any = None) -> dict:
    want = set(only or PARTS)
    port = int(b.url.rsplit(":", 1)[1])
    runs, _ = b.make_runs(6)
    k, n_runs = (100, 10) if not cfg.quick else (20, 5)
    sub_file = b.make_runs(n_runs)[1] if "connections" in want else None
    steady = 20 if not cfg.quick else 10
    local_env = dict(b.env)
    out: dict = {"rtt_ms": 2 * DELAY_MS}
    links = [Link(b.tmp / "wan", port, DELAY_MS).start()]
    link = links[0]
    try:
        b.env = dict(local_env, TRIGGER_API_URL=link.url, TRIGGER_CA_FILE=str(link.ca_file),
                     NODE_EXTRA_CA_CERTS=str(link.ca_file))
        if want & {"sends", "latency", "connections"} or idle_s:
            wan_mount(b, link, want, out, runs, steady, idle_s, (sub_file, k, n_runs * k))
        if "curl" in want:
            out["curl"] = attempt(lambda: curl_way(b, link, runs[5:] + runs[:1], steady))
        for way in ("direct", "sdk"):
            if way in cfg.ways and "process" in want:
                r = {"first_process_s": attempt(lambda: {"s": process_send_s(
                    b, way, runs[5], f"{way}-once")})}
                r["latency"] = attempt(lambda: latency_once(b, None, way, runs[3],
                                                            f"lat-{way}", steady * 5))
                out[way] = r
        if "newconn" in want:
            b.env = dict(local_env, TRIGGER_CA_FILE=str(link.ca_file))
            churn = Link(b.tmp / "wan-churn", port, 0, nginx_extra="keepalive_requests 1;",
                         ca=link.ca)
            fast = Link(b.tmp / "wan-fast", port, 0, ca=link.ca)
            links += [churn, fast]
            churn.start()
            fast.start()
            out["new_connection"] = attempt(lambda: new_conn_cpu_ms(
                b, churn, fast, runs, 50 if not cfg.quick else 20))
    finally:
        b.env = local_env
        for lk in links:
            lk.close()
    return out


def wan_mount(b: Bench, link: Link, want: set, out: dict, runs: list, steady: int,
              idle_s: float, subs: tuple) -> None:
    """What one mount over the link does: sends, latency, subscriptions
    (subs: the runs file, streams per run, streams) and their release, a
    send after idling."""
    with b.mount("wan") as m:
        wait_for(lambda: link.client_connections() >= 1, 10, "the mount's connection")
        if "sends" in want:
            out["triggerfs"] = attempt(lambda: fs_sends(b, link, m, runs, steady))
        if "latency" in want:
            out.setdefault("triggerfs", {})["latency"] = attempt(
                lambda: latency_once(b, m, "triggerfs", runs[3], "lat", steady * 5))
        if "connections" in want:
            out["connections"] = attempt(lambda: connections(b, link, m, *subs))
        if idle_s:
            out["idle"] = attempt(lambda: idle_send(b, link, m, runs[4], idle_s))


# ---- report ------------------------------------------------------------------

def _rt(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds * 1e3:.0f} ms = {seconds / rtt_s():.1f} RT"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def wan_table(r: dict) -> str:
    lat = {w: _get(r, w, "latency", "p50_ms") for w in ("direct", "sdk", "triggerfs")}
    rows = [
        ("first send (new process / after mount, new run)",
         _rt(_get(r, "curl", "first_after_mount_s")),
         _rt(_get(r, "direct", "first_process_s", "s")),
         _rt(_get(r, "sdk", "first_process_s", "s")),
         _rt(_get(r, "triggerfs", "first_after_mount_s"))),
        ("first send to another new run", _rt(_get(r, "curl", "new_run_s")), "-", "-",
         _rt(_get(r, "triggerfs", "new_run_s"))),
        ("first send to a new stream of a known run", _rt(_get(r, "curl", "new_stream_s")),
         "-", "-", _rt(_get(r, "triggerfs", "new_stream_s"))),
        ("first send to a stream a reader follows", "-", "-", "-",
         _rt(_get(r, "triggerfs", "followed_stream_s"))),
        ("steady send (median)", _rt(_get(r, "curl", "steady_s")), "-", "-",
         _rt(_get(r, "triggerfs", "steady_s"))),
        ("send + delivery round trip, followed stream (p50)", "-",
         *(_rt(lat[w] / 1e3) if isinstance(lat[w], (int, float)) else "-"
           for w in ("direct", "sdk", "triggerfs"))),
        ("delivery to a waiting reader (stored locally)", "-", "-", "-",
         _rt(_get(r, "triggerfs", "deliver_s"))),
    ]
    head = ("operation at 20 ms RTT", "curl", "libtriggerclient", "SDK", "triggerfs")
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row))
             for row in [head] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    c = r.get("connections", {})
    n = r.get("new_connection", {})
    lines.append("")
    if n:
        lines.append(f"CPU per new TLS connection (daemon): "
                     f"{_fmt(n.get('cpu_ms_per_connection'), 'ms')}  "
                     f"(per send: kept {_fmt(_get(n, 'per_send', 'kept', 'cpu_ms'), 'ms')}, "
                     f"new connection each {_fmt(_get(n, 'per_send', 'new', 'cpu_ms'), 'ms')})")
    if c:
        lines.append(f"{c.get('subscriptions')} subscriptions, {c.get('readers')} readers: "
                     f"{c.get('connections_held')} connections held; releasing them all "
                     f"took {_fmt(c.get('release_s'), 's')} (the sends "
                     f"{_fmt(c.get('sends_s'), 's')} of it), opened "
                     f"{c.get('connections_opened')} connections, "
                     f"{c.get('opened_without_request')} without a request")
    fs = r.get("triggerfs", {})
    if "new_run_requests" in fs:
        lines.append("triggerfs requests (round trips): first send after mount "
                     f"{fs.get('first_after_mount_requests')}, to another new run "
                     f"{fs.get('new_run_requests')}, to a new stream of a known run "
                     f"{fs.get('new_stream_requests')}")
    if "idle" in r:
        i = r["idle"]
        lines.append(f"send after {i.get('idle_s')} s idle: {_rt(i.get('send_s'))}, "
                     f"{i.get('requests')} request(s), {i.get('new_connections')} new "
                     f"connections (after a 1 s pause: {_rt(i.get('paused_s'))})")
    return "\n".join(lines)


def _fmt(v: Any, unit: str) -> str:
    return f"{v:.2f} {unit}" if isinstance(v, (int, float)) else "-"


def _within(seconds: Any, rts: int) -> Any:
    if not isinstance(seconds, (int, float)):
        return None
    return seconds / rtt_s() < rts + 0.5


def _at_most(requests: Any, n: int) -> Any:
    """Requests made one after another are round trips: judged in those,
    since the times add a few ms of FUSE and of waking every process on
    the way to the network's."""
    return None if not isinstance(requests, int) else 0 < requests <= n


def wan_targets(r: dict) -> list:
    c = r.get("connections", {})
    lat = _get(r, "triggerfs", "latency", "p50_ms")
    t = [("first echo after the mount is up (a new run) <= 2 RT, in requests",
          _at_most(_get(r, "triggerfs", "first_after_mount_requests"), 2)),
         ("first echo to another new run <= 2 RT, in requests",
          _at_most(_get(r, "triggerfs", "new_run_requests"), 2)),
         ("first echo to a new stream of a known run: 1 RT, in requests",
          _at_most(_get(r, "triggerfs", "new_stream_requests"), 1)),
         ("later echos: 1 RT", _within(_get(r, "triggerfs", "steady_s"), 1)),
         ("delivery to a waiting reader <= 1 RT",
          _within(_get(r, "triggerfs", "deliver_s"), 1)),
         ("send + delivery on a followed stream: 1 RT",
          _within(lat / 1e3 if isinstance(lat, (int, float)) else None, 1)),
         ("CPU per new TLS connection < 5 ms",
          None if _get(r, "new_connection", "cpu_ms_per_connection") is None
          else r["new_connection"]["cpu_ms_per_connection"] < 5),
         ("1,000 subscriptions on <= 16 connections",
          None if c.get("connections_held") is None else c["connections_held"] <= 16),
         ("releasing the readers opens no connection without a request",
          None if c.get("opened_without_request") is None
          else c["opened_without_request"] == 0),
         ("releasing the readers within 1 s",
          None if c.get("release_s") is None else c["release_s"] <= 1.0)]
    if "idle" in r:
        i = r["idle"]
        t.append((f"send after {i.get('idle_s')} s idle: 1 RT (one request on the kept "
                  "connection, as long as a send after a 1 s pause)",
                  None if i.get("requests") is None else
                  i["requests"] == 1 and i["new_connections"] == 0 and
                  i["send_s"] < i["paused_s"] + rtt_s() / 2))
    return t


def format_wan_targets(t: list) -> str:
    return "\n".join(f"  {'met' if ok else 'NOT MET' if ok is False else 'not measured'}"
                     f": {name}" for name, ok in t)
