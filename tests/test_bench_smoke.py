"""scripts/bench in its smallest mode: one repetition of the send scenario,
all three ways (mount, direct client, published SDK), against its own
local server.  Checks the JSON report has every field the table and the
targets are built from; no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("triggerfs", "direct", "sdk")


def run_bench(args: list, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run scripts/bench; on timeout SIGTERM lets it unmount and stop its
    server before the group is killed."""
    build = os.environ.get("TRIGGERFS_BUILD", str(ROOT / "build"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench"),
                             "--no-build", "--build", build, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"scripts/bench still running after {timeout}s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def bench_report(tmp_path: Path, args: list, timeout: float) -> tuple:
    """scripts/bench ARGS --json: (the finished process, its report), the
    run checked to have succeeded with no measurement failing."""
    report = tmp_path / "bench.json"
    r = run_bench([*args, "--json", str(report)], timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(report.read_text())
    assert doc["errors"] == []
    return r, doc


def positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v) and v > 0


def test_bench_quick_send_reports_every_way(tmp_path: Path) -> None:
    r, doc = bench_report(tmp_path, ["--quick", "--only", "send", "--reps", "1"], 120)

    assert doc["meta"]["quick"] is True and doc["meta"]["only"] == ["send"]
    for shape in ("single", "parallel"):
        for way in WAYS:
            reps = doc["results"]["send"][shape][way]
            assert len(reps) == 1 and "error" not in reps[0], reps
            assert reps[0]["records"] == (2000 if shape == "single" else 10 * 200)
            med = doc["medians"]["send"][shape][way]
            for key in ("records_per_s", "seconds", "cpu_us_per_record"):
                assert positive(med[key]), (shape, way, key, med)

    names = [t["target"] for t in doc["targets"]]
    assert any("within 1.15x of direct" in n for n in names)
    assert any("faster than sdk" in n for n in names)
    assert all(t["met"] in (True, False) for t in doc["targets"]), doc["targets"]
    # The table printed is the one in the report, with all three columns.
    assert doc["table"].splitlines()[0].split()[-5:] == \
        ["triggerfs", "direct", "sdk", "fs/direct", "fs/sdk"]
    assert doc["table"] in r.stdout


def test_bench_volume_reports_rss_after_the_volume(tmp_path: Path) -> None:
    """The volume scenario, 16 MiB instead of 1 GiB: every stream's log
    complete, the daemon's RSS and the cache's numbers reported, the
    target judged."""
    r, doc = bench_report(tmp_path, ["--only", "volume", "--ways", "triggerfs",
                                     "--volume-mib", "16"], 300)
    vol = doc["results"]["volume"]
    assert vol["bytes"] >= 16 << 20 and vol["streams"] == 100
    assert vol["cache_mem"] == 16 << 20 and vol["mem_bytes"] <= vol["cache_mem"]
    assert vol["mem_bytes"] + vol["disk_bytes"] >= vol["bytes"]
    for key in ("rss_before", "rss_after", "max_rss", "seconds"):
        assert positive(vol[key]), (key, vol)
    (t,) = [t for t in doc["targets"] if t["target"].startswith("volume:")]
    assert t["met"] in (True, False) and "MiB after" in t["measured"]
    assert re.search(r"^6 volume: [\d,]+ MiB through 100 followed streams", r.stdout, re.M)


def test_bench_rejects_unknown_scenario() -> None:
    r = run_bench(["--only", "nonsense"], timeout=30)
    assert r.returncode == 2 and "unknown nonsense" in r.stderr



def test_bench_quick_output_reports_every_way(tmp_path: Path) -> None:
    """Output streams: append throughput and delivery latency, each way."""
    r, doc = bench_report(tmp_path, ["--quick", "--only", "output", "--reps", "1"], 300)
    for way in WAYS:
        assert positive(doc["medians"]["output"]["send"][way]["records_per_s"]), way
        lat = doc["medians"]["output"]["latency"][way]
        assert positive(lat["p50_ms"]) and lat["p99_ms"] >= lat["p50_ms"], (way, lat)
    assert "7 output append" in doc["table"] and doc["table"] in r.stdout


def test_bench_wan_link_costs_one_round_trip_per_send(tmp_path: Path) -> None:
    """--wan, its cheapest part: the link (nginx with TLS 1.3 and HTTP/2,
    its own CA, scripts/delayrelay) carries the mount's sends, a steady send
    costs about one 20 ms round trip (at least one: the delay is there),
    and a waiting reader gets a record."""
    if any(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin") is None
           for p in ("nginx", "openssl", "curl")):
        raise AssertionError("nginx, openssl and curl are needed (scripts/setup installs them)")
    r, doc = bench_report(tmp_path, ["--wan", "--quick", "--only", "sends", "--ways",
                                     "triggerfs"], 120)
    fs = doc["results"]["triggerfs"]
    rtt = doc["results"]["rtt_ms"] / 1e3
    assert rtt == 0.020
    assert 0.95 * rtt <= fs["steady_s"] < 5 * rtt, fs
    for key in ("first_after_mount_s", "new_run_s", "new_stream_s", "followed_stream_s"):
        assert fs[key] >= 0.95 * rtt, (key, fs)
    assert 0 < fs["deliver_s"] < 5 * rtt, fs
    assert "later echos: 1 RT" in r.stdout and "connections" not in doc["results"]


def test_delayrelay_delays_each_chunk_without_queueing(tmp_path: Path) -> None:
    """Through scripts/delayrelay to an echo server, a burst of small
    messages each comes back one round trip (2 x 10 ms) after it left: the
    delay of one chunk is not added to the next (a relay serializing them
    would return the 100th after a second)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    relay = subprocess.Popen([str(ROOT / "scripts" / "delayrelay"), "--to",
                              f"127.0.0.1:{server.getsockname()[1]}", "--delay-ms", "10"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None
        port = int(relay.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"-")
            assert s.recv(1) == b"-"
            rtts = echo_burst(s, 100)
    finally:
        relay.kill()
        relay.wait()
        server.close()
    assert 0.019 <= min(rtts), rtts
    assert statistics.median(rtts) < 0.040, rtts
    assert max(rtts) < 0.3, rtts


def echo_burst(s: socket.socket, n: int) -> list:
    """n 8-byte messages sent 1 ms apart; each one's round trip, seconds."""
    sent: dict = {}
    got: dict = {}

    def receive() -> None:
        buf = b""
        while len(got) < n:
            buf += s.recv(65536)
            now = time.monotonic()
            while len(buf) >= 8:
                got[int(buf[:8])] = now
                buf = buf[8:]

    rx = threading.Thread(target=receive)
    rx.start()
    for i in range(n):
        sent[i] = time.monotonic()
        s.sendall(b"%08d" % i)
        time.sleep(0.001)
    rx.join(30)
    assert len(got) == n, f"{len(got)} of {n} messages came back"
    return [got[i] - sent[i] for i in range(n)]
