"""scripts/bench in its smallest mode: one repetition of the send scenario,
all three ways (mount, direct client, published SDK), against its own
local server.  Checks the JSON report has every field the table and the
targets are built from; no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
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


def positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v) and v > 0


def test_bench_quick_send_reports_every_way(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    r = run_bench(["--quick", "--only", "send", "--reps", "1", "--json", str(report)])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(report.read_text())

    assert doc["errors"] == []
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
    report = tmp_path / "bench.json"
    r = run_bench(["--only", "volume", "--ways", "triggerfs", "--volume-mib", "16",
                   "--json", str(report)], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(report.read_text())
    assert doc["errors"] == []
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
    report = tmp_path / "bench.json"
    r = run_bench(["--quick", "--only", "output", "--reps", "1", "--json", str(report)],
                  timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(report.read_text())
    assert doc["errors"] == []
    for way in WAYS:
        assert positive(doc["medians"]["output"]["send"][way]["records_per_s"]), way
        lat = doc["medians"]["output"]["latency"][way]
        assert positive(lat["p50_ms"]) and lat["p99_ms"] >= lat["p50_ms"], (way, lat)
    assert "7 output append" in doc["table"] and doc["table"] in r.stdout
