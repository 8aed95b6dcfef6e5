"""The scenarios, each run three ways against the one local server (the
volume scenario only through a mount: it measures the daemon's memory):

  triggerfs  through a mount, with ordinary tools (cat, head) or plain
             read(2)/write(2) (bench-fslatency, bench-waiters)
  direct     bench-direct on libtriggerclient: the floor
  sdk        Node with the published @trigger.dev/sdk (tests/sdk/bench_*.mjs)

Each function returns plain data for the JSON report; report.py reduces it
(medians) and judges the targets."""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .env import SDK_DIR, Bench, BenchError, Mount, loadavg, proc_status

WAYS = ("triggerfs", "direct", "sdk")
CAT = 'cat "$1" > "$2"'


@dataclass
class Config:
    quick: bool
    reps: int = 5                       # repetitions of send and latency
    send_records: int = 10000           # one stream
    par_streams: int = 10
    par_records: int = 1000             # per stream
    round_trips: int = 1000
    out_round_trips: int = 200         # output streams: the SDK lingers 200 ms each
    w_runs: int = 100                   # many waiters: runs x streams x readers
    w_streams: int = 10
    w_readers: int = 10
    w_reps: int = 3
    stat_samples: int = 500
    cost_sizes: list = field(default_factory=lambda: [1000, 10000, 100000])
    cost_min_records: int = 30000       # small sizes repeat up to this many
    vol_bytes: int = 1 << 30            # through the mount in all
    vol_streams: int = 100              # each followed by a reader
    vol_record: int = 32 * 1024         # bytes per record
    ways: tuple = WAYS

    @classmethod
    def make(cls, quick: bool) -> "Config":
        if not quick:
            return cls(quick=False)
        return cls(quick=True, reps=3, send_records=2000, par_records=200, round_trips=200,
                   out_round_trips=50,
                   w_runs=10, stat_samples=200, cost_sizes=[1000, 10000],
                   cost_min_records=10000, vol_bytes=256 << 20)


def rotated(ways: tuple, rep: int) -> tuple:
    """The ways in a different order each repetition, so that none always
    runs first (or right after another's load)."""
    k = rep % len(ways)
    return ways[k:] + ways[:k]


def attempt(fn: Callable[[], dict]) -> dict:
    """One measurement; a failure is recorded, not fatal to the others."""
    try:
        return fn()
    except BenchError as e:
        return {"error": str(e)}


def percentile(sorted_values: list, p: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    k = max(0, math.ceil(p * len(sorted_values)) - 1)
    return sorted_values[k]


def summary_ms(samples_ns: list) -> dict:
    s = sorted(v / 1e6 for v in samples_ns)
    return {"n": len(s), "p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
            "mean_ms": sum(s) / len(s) if s else math.nan, "max_ms": s[-1] if s else math.nan}


def sdk_env(b: Bench, **extra: Any) -> dict:
    return dict(b.env, **{k: str(v) for k, v in extra.items()})


def node(script: str) -> list:
    return ["node", str(SDK_DIR / script)]


class Sampler:
    """Samples a process's thread count and RSS every few ms in the
    background: the peaks, not just the state at the end."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.max_threads = 0
        self.max_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> dict:
        try:
            st = proc_status(self.pid)
        except OSError:
            return {}
        self.max_threads = max(self.max_threads, st.get("threads", 0))
        self.max_rss = max(self.max_rss, st.get("rss", 0))
        return st

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ---- 1. send throughput ----------------------------------------------------

def send_triggerfs(b: Bench, m: Mount, run: str, records: Path, streams: list) -> dict:
    """`cat records > runs/R/input/S`, one shell per stream, all at once.
    The shells are started first and wait for a line on stdin, so the time
    covers the redirections and cats, not Python forking them one by one
    (the other ways are timed from their first send, too)."""
    shells = [b.spawn(["sh", "-c", "read go; " + CAT, "sh", str(records),
                       str(m.stream(run, s))], "cat", stdin=True) for s in streams]
    try:
        cpu0, t0 = m.cpu_s(), time.monotonic()
        for sh in shells:
            sh.send("go\n")
        for sh in shells:
            if sh.wait(600) != 0:
                raise BenchError(f"cat > {run}/input: {sh.log_tail()}")
        return {"seconds": time.monotonic() - t0, "cpu_s": m.cpu_s() - cpu0}
    finally:
        for sh in shells:
            sh.stop()


def send_direct(b: Bench, run: str, records: Path, streams: list) -> dict:
    return b.run([b.prog("bench/bench-direct"), "send", str(records), run, *streams],
                 "direct-send", timeout=600)


def send_sdk(b: Bench, run: str, records: Path, streams: list) -> dict:
    env = sdk_env(b, RUN_ID=run, STREAMS=",".join(streams), RECORDS_FILE=records)
    return b.run(node("bench_send.mjs"), "sdk-send", timeout=900, env=env, cwd=SDK_DIR)


def send_once(b: Bench, m: Mount, way: str, run: str, records: Path,
              streams: list) -> dict:
    n = sum(1 for _ in open(records)) * len(streams)
    srv0 = b.server_cpu_s()
    if way == "triggerfs":
        r = send_triggerfs(b, m, run, records, streams)
    elif way == "direct":
        r = send_direct(b, run, records, streams)
    else:
        r = send_sdk(b, run, records, streams)
    srv = b.server_cpu_s() - srv0
    return {"records": n, "seconds": r["seconds"], "records_per_s": n / r["seconds"],
            "cpu_us_per_record": r["cpu_s"] / n * 1e6,
            "server_cpu_share": srv / r["seconds"]}


def scenario_send(b: Bench, cfg: Config, run: str) -> dict:
    shapes = {
        "single": (b.records_file(cfg.send_records), 1),
        "parallel": (b.records_file(cfg.par_records), cfg.par_streams),
    }
    out: dict = {shape: {w: [] for w in cfg.ways} for shape in shapes}
    out["shape"] = {"single": f"1 stream x {cfg.send_records}",
                    "parallel": f"{cfg.par_streams} streams x {cfg.par_records}"}
    with b.mount("send") as m:
        for rep in range(cfg.reps):
            for way in rotated(cfg.ways, rep):
                for shape, (records, k) in shapes.items():
                    streams = [f"{shape}-{way}-{rep}-{i}" for i in range(k)]
                    b.log(f"send {shape} {way} rep {rep}")
                    out[shape][way].append(attempt(
                        lambda: send_once(b, m, way, run, records, streams)))
    return out


# ---- 2. delivery latency ---------------------------------------------------

def latency_once(b: Bench, m: Mount, way: str, run: str, stream: str, n: int) -> dict:
    timeout = 60 + n * 0.05
    if way == "triggerfs":
        r = b.run([b.prog("bench/bench-fslatency"), str(m.stream(run, stream)),
                   str(m.stats_path), str(n)], "fs-latency", timeout)
    elif way == "direct":
        r = b.run([b.prog("bench/bench-direct"), "latency", run, stream, str(n)],
                  "direct-latency", timeout)
    else:
        r = b.run(node("bench_latency.mjs"), "sdk-latency", timeout,
                  env=sdk_env(b, RUN_ID=run, STREAM_ID=stream, COUNT=n), cwd=SDK_DIR)
    if len(r["samples_ns"]) != n:
        raise BenchError(f"{way}: {len(r['samples_ns'])} samples, not {n}")
    return summary_ms(r["samples_ns"])


def scenario_latency(b: Bench, cfg: Config, run: str) -> dict:
    out: dict = {w: [] for w in cfg.ways}
    out["round_trips"] = cfg.round_trips
    with b.mount("latency") as m:
        for rep in range(cfg.reps):
            for way in rotated(cfg.ways, rep):
                b.log(f"latency {way} rep {rep}")
                out[way].append(attempt(lambda: latency_once(
                    b, m, way, run, f"lat-{way}-{rep}", cfg.round_trips)))
    return out


# ---- 7. output streams -------------------------------------------------------

def output_send_once(b: Bench, m: Mount, way: str, run: str, records: Path,
                     stream: str) -> dict:
    """Append throughput: every record to one output stream."""
    n = sum(1 for _ in open(records))
    if way == "triggerfs":
        # What a user types; the shell's start is a few ms of the total.
        t0 = time.monotonic()
        b.shell(CAT, [str(records), str(m.stream(run, stream, "output"))], "output-cat", 600)
        seconds = time.monotonic() - t0
    elif way == "direct":
        seconds = b.run([b.prog("bench/bench-direct"), "output-send", str(records), run,
                         stream], "direct-output", timeout=600)["seconds"]
    else:
        seconds = b.run(node("bench_output.mjs"), "sdk-output", timeout=600, cwd=SDK_DIR,
                        env=sdk_env(b, MODE="send", RUN_ID=run, STREAM_ID=stream,
                                    RECORDS_FILE=records))["seconds"]
    return {"records": n, "seconds": seconds, "records_per_s": n / seconds}


def output_latency_once(b: Bench, m: Mount, way: str, run: str, stream: str, n: int) -> dict:
    """Delivery latency: write one value, time until a reader has it."""
    timeout = 60 + n * 0.5
    if way == "triggerfs":
        r = b.run([b.prog("bench/bench-fslatency"), str(m.stream(run, stream, "output")),
                   str(m.stats_path), str(n)], "fs-output-latency", timeout)
    elif way == "direct":
        r = b.run([b.prog("bench/bench-direct"), "output-latency", run, stream, str(n)],
                  "direct-output-latency", timeout)
    else:
        r = b.run(node("bench_output.mjs"), "sdk-output-latency", timeout, cwd=SDK_DIR,
                  env=sdk_env(b, MODE="latency", RUN_ID=run, STREAM_ID=stream, COUNT=n))
    if len(r["samples_ns"]) != n:
        raise BenchError(f"{way}: {len(r['samples_ns'])} samples, not {n}")
    return summary_ms(r["samples_ns"])


def scenario_output(b: Bench, cfg: Config, run: str) -> dict:
    records = b.records_file(cfg.send_records)
    out: dict = {"send": {w: [] for w in cfg.ways}, "latency": {w: [] for w in cfg.ways},
                 "records": cfg.send_records, "round_trips": cfg.out_round_trips}
    with b.mount("output") as m:
        for rep in range(cfg.reps):
            for way in rotated(cfg.ways, rep):
                b.log(f"output {way} rep {rep}")
                out["send"][way].append(attempt(lambda: output_send_once(
                    b, m, way, run, records, f"out-{way}-{rep}")))
                out["latency"][way].append(attempt(lambda: output_latency_once(
                    b, m, way, run, f"outlat-{way}-{rep}", cfg.out_round_trips)))
    return out


# ---- 3. many waiters -------------------------------------------------------

def timed_ms(fn: Callable[[Any], Any], args: list) -> dict:
    samples = []
    for a in args:
        t0 = time.monotonic_ns()
        fn(a)
        samples.append(time.monotonic_ns() - t0)
    s = summary_ms(samples)
    return {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "n": s["n"]}


def stat_ls(m: Mount, runs: list, files: list, n: int) -> dict:
    """stat(2) of stream files and ls of runs' input directories."""
    rnd = random.Random(n)
    return {"stat": timed_ms(os.stat, [rnd.choice(files) for _ in range(n)]),
            "ls": timed_ms(os.listdir, [m.path / "runs" / rnd.choice(runs) / "input"
                                        for _ in range(max(20, n // 5))])}


def send_to_all(b: Bench, runs_file: Path, cfg: Config, prefix: str) -> dict:
    """bench-direct sends one record per reader to each stream PREFIX0..K-1
    of every run (input/S gives each record to one reader; as
    libtriggerclient sends: the first send to a stream also reads its
    tail); what it says, and the server's CPU until it has exited (all
    answered, and so all records pushed to whoever reads them)."""
    srv0 = b.server_cpu_s()
    sent = b.run([b.prog("bench/bench-direct"), "release", str(runs_file),
                  str(cfg.w_streams), prefix, str(cfg.w_readers)], "release", 120)
    sent["server_cpu_s"] = b.server_cpu_s() - srv0
    return sent


def idle_send_ms(b: Bench, runs_file: Path, cfg: Config, prefix: str) -> float:
    """Server CPU per send, ms, of the same sends as a release to streams
    of the same runs that nobody reads: the baseline the release's cost
    with every stream's reader connected is held against."""
    sent = send_to_all(b, runs_file, cfg, prefix + "idle-")
    return sent["server_cpu_s"] / sent["sent"] * 1e3


def release(b: Bench, runs_file: Path, cfg: Config, prefix: str, waiters: Any) -> dict:
    """Send one record to every stream; time until every reader returned,
    the server's CPU per send (with the readers' connections held), and
    how busy the server was meanwhile."""
    srv0 = b.server_cpu_s()
    sent = send_to_all(b, runs_file, cfg, prefix)
    done = waiters.result(120)
    srv = b.server_cpu_s() - srv0
    release_s = (int(done["last_ns"]) - sent["start_ns"]) / 1e9
    return {"sends_s": (sent["end_ns"] - sent["start_ns"]) / 1e9, "release_s": release_s,
            "after_sends_s": (int(done["last_ns"]) - sent["end_ns"]) / 1e9,
            "server_ms_per_send": sent["server_cpu_s"] / sent["sent"] * 1e3,
            "server_cpu_share": srv / release_s if release_s > 0 else math.nan,
            "done": done}


RELEASE_KEYS = ("sends_s", "release_s", "after_sends_s", "server_ms_per_send",
                "server_cpu_share")


def send_cost_ratio(r: dict) -> dict:
    """How much more a send costs the server with the readers connected."""
    idle = r["server_ms_per_send_idle"]
    return {"server_send_cost_ratio": r["server_ms_per_send"] / idle if idle > 0 else math.nan}


def park_readers(b: Bench, m: Mount, cfg: Config, runs_file: Path, prefix: str,
                 streams: int, total: int) -> tuple:
    """bench-waiters with every reader parked: (the child, the daemon's
    status with one reader per stream, then with all of them)."""
    w = b.spawn([b.prog("bench/bench-waiters"), str(m.path), str(runs_file),
                 str(cfg.w_streams), str(cfg.w_readers), prefix], "fs-waiters", stdin=True)
    try:
        w.expect("stage1", 120)
        m.wait_parked(streams, 300)
        one = m.status()
        w.send("go\n")
        w.expect("stage2", 300)
        m.wait_parked(total, 300)
        return w, one, m.status()
    except BaseException:
        w.stop()
        raise


def waiters_triggerfs(b: Bench, cfg: Config, runs: list, runs_file: Path,
                      rep: int) -> dict:
    streams, total = len(runs) * cfg.w_streams, len(runs) * cfg.w_streams * cfg.w_readers
    prefix = f"w-fs-{rep}-"
    idle_ms = idle_send_ms(b, runs_file, cfg, prefix)
    with b.mount(f"waiters-{rep}") as m:
        idle = m.status()
        files = [m.stream(r, f"{prefix}{k}") for r in runs for k in range(cfg.w_streams)]
        lat_idle = stat_ls(m, runs, files, cfg.stat_samples)
        t0, srv0 = time.monotonic(), b.server_cpu_s()
        with Sampler(m.pid) as sampler:
            w, one, waiting = park_readers(b, m, cfg, runs_file, prefix, streams, total)
            try:
                setup_s = time.monotonic() - t0
                setup_share = (b.server_cpu_s() - srv0) / setup_s
                lat = stat_ls(m, runs, files, cfg.stat_samples)
                cpu0 = m.runtime_s()
                rel = release(b, runs_file, cfg, prefix, w)
                release_cpu = m.runtime_s() - cpu0
            finally:
                w.stop()
        if rel["done"]["ok"] != total:
            raise BenchError(f"{rel['done']['failed']} of {total} readers failed: "
                             f"{rel['done']['first_error']}")
        out = {"readers": total, "streams": streams, "setup_s": setup_s,
               "threads": sampler.max_threads, "rss": waiting["rss"],
               "max_rss": sampler.max_rss, "idle_rss": idle["rss"],
               "one_reader_per_stream_rss": one["rss"],
               "stat_ms": lat["stat"], "ls_ms": lat["ls"],
               "stat_idle_ms": lat_idle["stat"], "ls_idle_ms": lat_idle["ls"],
               "daemon_cpu_release_s": release_cpu, "server_cpu_share_setup": setup_share,
               "server_ms_per_send_idle": idle_ms, **{k: rel[k] for k in RELEASE_KEYS}}
        return out | send_cost_ratio(out)


def waiters_process(b: Bench, cfg: Config, way: str, runs_file: Path, total: int,
                    rep: int) -> dict:
    """direct and sdk: one process holds every stream's subscription."""
    prefix, streams = f"w-{way}-{rep}-", total // cfg.w_readers
    idle_ms = idle_send_ms(b, runs_file, cfg, prefix)
    t0, srv0 = time.monotonic(), b.server_cpu_s()
    if way == "direct":
        w = b.spawn([b.prog("bench/bench-direct"), "waiters", str(runs_file),
                     str(cfg.w_streams), str(cfg.w_readers), prefix], "direct-waiters")
    else:
        w = b.spawn(node("bench_waiters.mjs"), "sdk-waiters", cwd=SDK_DIR,
                    env=sdk_env(b, RUNS_FILE=runs_file, K=cfg.w_streams,
                                READERS=cfg.w_readers, PREFIX=prefix))
    try:
        with Sampler(w.pid) as sampler:
            w.expect("ready", 300)
            setup_s = time.monotonic() - t0
            setup_share = (b.server_cpu_s() - srv0) / setup_s
            waiting = proc_status(w.pid)
            rel = release(b, runs_file, cfg, prefix, w)
    finally:
        w.stop()
    if rel["done"]["released"] != total:
        raise BenchError(f"released {rel['done']['released']} of {total}")
    out = {"readers": total, "streams": streams, "setup_s": setup_s,
           "threads": sampler.max_threads, "rss": waiting["rss"], "max_rss": sampler.max_rss,
           "server_cpu_share_setup": setup_share, "server_ms_per_send_idle": idle_ms,
           **{k: rel[k] for k in RELEASE_KEYS}}
    return out | send_cost_ratio(out)


def scenario_waiters(b: Bench, cfg: Config) -> dict:
    runs, runs_file = b.make_runs(cfg.w_runs)
    total = len(runs) * cfg.w_streams * cfg.w_readers
    out: dict = {w: [] for w in cfg.ways}
    out["shape"] = {"runs": len(runs), "streams_per_run": cfg.w_streams,
                    "readers_per_stream": cfg.w_readers, "readers": total}
    for rep in range(cfg.w_reps):
        for way in rotated(cfg.ways, rep):
            b.log(f"waiters {way} rep {rep}")
            if way == "triggerfs":
                out[way].append(attempt(lambda: waiters_triggerfs(b, cfg, runs, runs_file, rep)))
            else:
                out[way].append(attempt(lambda: waiters_process(b, cfg, way, runs_file,
                                                                total, rep)))
    return out


# ---- 4. cost per record (and 5. retained bytes) ------------------------------

def cost_send(b: Bench, m: Mount, run: str, n: int, r: int) -> float:
    """Daemon CPU to send n records with `cat > input/S`, seconds."""
    c0 = m.cpu_s()
    b.shell(CAT, [str(b.records_file(n)), str(m.stream(run, f"cost-send-{n}-{r}"))],
            "cost-cat", timeout=60 + n / 200)
    return m.cpu_s() - c0


def cost_deliver(b: Bench, m: Mount, run: str, n: int, r: int) -> dict:
    """Daemon CPU to deliver n records to one `head -n N input/S` while
    bench-direct sends them; and the memory the received log holds."""
    stream = f"cost-deliver-{n}-{r}"
    reader = b.spawn(["sh", "-c", 'head -n "$1" "$2" > /dev/null', "sh", str(n),
                      str(m.stream(run, stream))], "cost-head")
    try:
        m.wait_parked(1, 60)
        rss0, c0 = m.status()["rss"], m.cpu_s()
        b.run([b.prog("bench/bench-direct"), "send", str(b.records_file(n)), run, stream],
              "cost-direct-send", timeout=60 + n / 200)
        if reader.wait(60) != 0:
            raise BenchError(f"head: {reader.log_tail()}")
        return {"cpu_s": m.cpu_s() - c0,
                "log_bytes": os.stat(m.stream(run, stream, "log")).st_size,
                "rss_growth": m.status()["rss"] - rss0}
    finally:
        reader.stop()


def consumer_view(b: Bench, m: Mount, run: str, n: int) -> dict:
    """The cost of the consumer's view: `head -n N` of n records already
    held, through input/S (one record per read, each taken) and through
    log/S (reads as large as the kernel asks): wall and daemon CPU."""
    stream = f"consumer-view-{n}"
    b.run([b.prog("bench/bench-direct"), "send", str(b.records_file(n)), run, stream],
          "view-direct-send", timeout=60 + n / 200)
    size = os.stat(m.stream(run, stream, "log")).st_size      # caught up by the stat
    out = {"records": n, "bytes": size}
    for kind in ("log", "input"):
        c0, t0 = m.cpu_s(), time.monotonic()
        b.shell('head -n "$1" "$2" > /dev/null', [str(n), str(m.stream(run, stream, kind))],
                f"view-{kind}", timeout=120 + n / 100)
        out[f"{kind}_s"] = time.monotonic() - t0
        out[f"{kind}_cpu_s"] = m.cpu_s() - c0
    return out


def cost_schedule(cfg: Config) -> list:
    """(size, repetition) in time order: the small sizes repeat (CPU time
    comes in 10 ms ticks) and their repetitions are spread evenly among the
    large ones, so that load from elsewhere falls on every size alike."""
    reps = {n: max(1, cfg.cost_min_records // n) for n in cfg.cost_sizes}
    return [(n, r) for _, n, r in sorted((r / reps[n], n, r) for n in reps
                                         for r in range(reps[n]))]


def scenario_cost(b: Bench, cfg: Config, run: str) -> dict:
    cpu: dict = {k: {} for k in ("send", "deliver")}
    out: dict = {"send_us": {}, "deliver_us": {}, "repeats": {}}
    with b.mount("cost") as m:
        out["idle_rss"] = m.status()["rss"]
        for n, r in cost_schedule(cfg):
            b.log(f"cost {n} #{r}")
            res = attempt(lambda: {"send": cost_send(b, m, run, n, r),
                                   "deliver": cost_deliver(b, m, run, n, r)})
            if "error" in res:
                out.setdefault("errors", {})[f"{n}#{r}"] = res["error"]
                continue
            out["repeats"][str(n)] = out["repeats"].get(str(n), 0) + 1
            for kind, c in (("send", res["send"]), ("deliver", res["deliver"]["cpu_s"])):
                cpu[kind][n] = cpu[kind].get(n, 0.0) + c
            if n == max(cfg.cost_sizes):
                out["retained"] = {k: res["deliver"][k] for k in ("log_bytes", "rss_growth")}
        view = attempt(lambda: consumer_view(b, m, run, max(cfg.cost_sizes)))
        out["consumer_view"] = view
    for kind in cpu:
        for n, total in cpu[kind].items():
            out[f"{kind}_us"][str(n)] = total / (n * out["repeats"][str(n)]) * 1e6
    return out


# ---- 5. memory -------------------------------------------------------------

def scenario_memory(results: dict) -> dict:
    """Derived from the many-waiters mount (idle, one reader per stream, all
    readers) and from the largest delivery of the cost scenario."""
    out: dict = {}
    fs = [r for r in results.get("waiters", {}).get("triggerfs", []) if "error" not in r]
    if fs:
        def med(key: Callable[[dict], float]) -> float:
            v = sorted(key(r) for r in fs)
            return v[len(v) // 2]
        out["idle_rss"] = med(lambda r: r["idle_rss"])
        out["per_stream"] = med(lambda r: (r["one_reader_per_stream_rss"] - r["idle_rss"])
                                / r["streams"])
        out["per_reader"] = med(lambda r: (r["rss"] - r["one_reader_per_stream_rss"])
                                / (r["readers"] - r["streams"]))
    retained = results.get("cost", {}).get("retained")
    if retained and retained["log_bytes"]:
        out["per_retained_byte"] = retained["rss_growth"] / retained["log_bytes"]
        out["retained_log_bytes"] = retained["log_bytes"]
    if "idle_rss" not in out and "idle_rss" in results.get("cost", {}):
        out["idle_rss"] = results["cost"]["idle_rss"]
    return out


# ---- 6. volume: memory after gigabytes ---------------------------------------

def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def volume_readers(b: Bench, m: Mount, run: str, streams: list, size: int) -> list:
    """One follower per stream, each printing "done" once it has read
    `size` bytes: `head -c` on input/S (the consumer) for half of them,
    `tail -f` on log/S (the observer) for the other half."""
    out = []
    for i, s in enumerate(streams):
        if i % 2:
            script = 'head -c "$1" "$2" > /dev/null && echo done'
            path = m.stream(run, s)
        else:  # tail never ends by itself; the group is ended by stop()
            script = 'head -c "$1" < <(exec tail -c +1 -f "$2") > /dev/null && echo done'
            path = m.stream(run, s, "log")
        out.append(b.spawn(["bash", "-c", script, "bash", str(size), str(path)],
                           f"volume-reader-{i}"))
    return out


def scenario_volume(b: Bench, cfg: Config, run: str) -> dict:
    """cfg.vol_bytes through cfg.vol_streams streams of one run, each
    followed, sent by bench-direct (all streams at once); the daemon's RSS
    at the end and at its peak, with its default -o cache_mem."""
    n = -(-cfg.vol_bytes // (cfg.vol_streams * cfg.vol_record))   # at least vol_bytes
    path = b.tmp / f"volume-{cfg.vol_record}.jsonl"
    pad = "".join(random.Random(6).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4096))
    with open(path, "w") as f:
        for i in range(n):
            head = '{"i":%d,"pad":"' % i
            f.write(head + (pad * (cfg.vol_record // 4096 + 1))[:cfg.vol_record - len(head) - 3]
                    + '"}\n')
    size = path.stat().st_size
    streams = [f"volume-{i}" for i in range(cfg.vol_streams)]
    with b.mount("volume") as m:
        readers = volume_readers(b, m, run, streams, size)
        try:
            m.wait_parked(len(streams) // 2, 60)
            idle = m.status()["rss"]
            t0 = time.monotonic()
            with Sampler(m.pid, 0.1) as sampler:
                b.run([b.prog("bench/bench-direct"), "send", str(path), run, *streams],
                      "volume-send", timeout=1800)
                for r in readers:
                    r.expect("done", 600)
            wall = time.monotonic() - t0
            stats, after = m.stats(), m.status()["rss"]
            # Every log/S read back from the start is the file sent, byte
            # for byte (most of it from the cache directory).
            want = file_sha256(path)
            t1 = time.monotonic()
            for s in streams:
                if file_sha256(m.stream(run, s, "log")) != want:
                    raise BenchError(f"log/{s} read back differs from what was sent")
            return {"bytes": size * len(streams), "streams": len(streams),
                    "record_bytes": cfg.vol_record, "seconds": wall,
                    "rss_before": idle, "rss_after": after,
                    "max_rss": sampler.max_rss, "cache_mem": stats.get("cache_mem"),
                    "mem_bytes": stats.get("mem_bytes"), "disk_bytes": stats.get("disk_bytes"),
                    "readback_s": time.monotonic() - t1,
                    "rss_after_readback": m.status()["rss"]}
        finally:
            for r in readers:
                r.stop()


def run_all(b: Bench, cfg: Config, only: Optional[set]) -> dict:
    want = (lambda s: only is None or s in only)
    need_run = any(want(s) for s in ("send", "latency", "cost", "memory", "volume",
                                     "output"))
    run = b.make_runs(1)[0][0] if need_run else ""
    results: dict = {}
    steps = [("send", lambda: scenario_send(b, cfg, run)),
             ("latency", lambda: scenario_latency(b, cfg, run)),
             ("waiters", lambda: scenario_waiters(b, cfg)),
             ("cost", lambda: scenario_cost(b, cfg, run)),
             ("volume", lambda: scenario_volume(b, cfg, run)),
             ("output", lambda: scenario_output(b, cfg, run))]
    for name, fn in steps:
        if want(name) or (name in ("waiters", "cost") and want("memory")):
            t0, load0 = time.monotonic(), loadavg()
            results[name] = attempt(fn)
            results[name]["wall_s"] = time.monotonic() - t0
            results[name]["loadavg"] = [load0, loadavg()]
    if want("memory"):
        results["memory"] = scenario_memory(results)
    return results
