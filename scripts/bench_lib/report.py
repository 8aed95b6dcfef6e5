"""Reduce the repetitions to medians, print the side-by-side table, and
judge each target as met / not met (reported, never asserted)."""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Optional

MiB = 1024 * 1024
FLAT_TOLERANCE = 1.25       # cost at the largest size vs the smallest
# Server CPU per send with every stream's reader connected vs with none: what
# "holding the connections does not slow the local server" means. (Its share
# of a core during the release cannot tell: any server is busy while a
# thousand sends arrive back to back.)
HELD_TOLERANCE = 1.5


def med(reps: list, key: str) -> Optional[float]:
    """Median of one field over the repetitions that did not fail."""
    vals = [r[key] for r in reps if isinstance(r, dict) and "error" not in r
            and isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return statistics.median(vals) if vals else None


def errors(reps: list) -> list:
    return [r["error"] for r in reps if isinstance(r, dict) and "error" in r]


def reduce(results: dict) -> dict:
    """Per scenario and way: the medians (and errors) the table shows."""
    out: dict = {}
    send = results.get("send")
    if send and "error" not in send:
        out["send"] = {shape: {way: {k: med(reps, k) for k in
                                     ("records_per_s", "seconds", "cpu_us_per_record",
                                      "server_cpu_share")}
                               | ({"errors": errors(reps)} if errors(reps) else {})
                               for way, reps in send[shape].items()}
                       for shape in ("single", "parallel")}
    lat = results.get("latency")
    if lat and "error" not in lat:
        out["latency"] = {way: {k: med(lat[way], k) for k in ("p50_ms", "p99_ms", "max_ms")}
                          | ({"errors": errors(lat[way])} if errors(lat[way]) else {})
                          for way in lat if isinstance(lat[way], list)}
    ou = results.get("output")
    if ou and "error" not in ou:
        out["output"] = {
            "send": {w: {"records_per_s": med(r, "records_per_s")}
                     | ({"errors": errors(r)} if errors(r) else {})
                     for w, r in ou["send"].items()},
            "latency": {w: {k: med(r, k) for k in ("p50_ms", "p99_ms")}
                        | ({"errors": errors(r)} if errors(r) else {})
                        for w, r in ou["latency"].items()}}
    wt = results.get("waiters")
    if wt and "error" not in wt:
        keys = ("setup_s", "release_s", "sends_s", "after_sends_s", "threads", "rss",
                "max_rss", "server_cpu_share", "server_cpu_share_setup",
                "server_ms_per_send", "server_ms_per_send_idle", "server_send_cost_ratio",
                "streams", "daemon_cpu_release_s")
        red: dict = {}
        for way in (w for w in wt if isinstance(wt[w], list)):
            red[way] = {k: med(wt[way], k) for k in keys}
            if way == "triggerfs":
                for k in ("stat_ms", "ls_ms", "stat_idle_ms", "ls_idle_ms"):
                    red[way][k] = {p: med([r[k] for r in wt[way] if "error" not in r], p)
                                   for p in ("p50_ms", "p99_ms")}
            if errors(wt[way]):
                red[way]["errors"] = errors(wt[way])
        out["waiters"] = red
    return out


# ---- formatting ------------------------------------------------------------

def fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or math.isnan(v):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else \
        f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return ""
    return f"{a / b:.2f}x"


def cells(label: str, fs: Any, direct: Any = None, sdk: Any = None,
          ratios: bool = False) -> list:
    return [label, fmt(fs), fmt(direct) if direct is not None else "",
            fmt(sdk) if sdk is not None else "",
            ratio(fs, direct) if ratios else "", ratio(fs, sdk) if ratios else ""]


def by_way(label: str, vals: dict, get: Callable[[dict], Optional[float]],
           ratios: bool = True) -> list:
    v = [get(vals[w]) if w in vals else None for w in ("triggerfs", "direct", "sdk")]
    return cells(label, v[0], v[1] if v[1] is not None else "-",
                 v[2] if v[2] is not None else "-", ratios)


def pair(d: dict) -> str:
    return f"{fmt(d.get('p50_ms'))} / {fmt(d.get('p99_ms'))}"


def table_rows(red: dict, results: dict) -> list:
    rows: list = []
    shape = results.get("send", {}).get("shape", {})
    for s in ("single", "parallel"):
        if s in red.get("send", {}):
            d = red["send"][s]
            rows.append(by_way(f"1 send {shape.get(s, s)}: records/s", d,
                               lambda x: x["records_per_s"]))
            rows.append(by_way("  cpu per record sent, us [a]", d,
                               lambda x: x["cpu_us_per_record"]))
            rows.append(by_way("  server cpu share", d, lambda x: x["server_cpu_share"], False))
    if "latency" in red:
        n = results["latency"].get("round_trips")
        for p in ("p50", "p99"):
            rows.append(by_way(f"2 latency {p} ms ({n} round trips)", red["latency"],
                               lambda x, p=p: x[f"{p}_ms"]))
    if "output" in red:
        o, n = red["output"], results["output"]
        rows.append(by_way(f"7 output append {n['records']} records: records/s [o]",
                           o["send"], lambda x: x["records_per_s"]))
        for p in ("p50", "p99"):
            rows.append(by_way(f"7 output latency {p} ms ({n['round_trips']} round trips)",
                               o["latency"], lambda x, p=p: x[f"{p}_ms"]))
    if "waiters" in red:
        w, sh = red["waiters"], results["waiters"].get("shape", {})
        fs = w.get("triggerfs", {})
        rows.append(by_way(f"3 waiters ({sh.get('readers')} readers): setup s", w,
                           lambda x: x["setup_s"]))
        rows.append(by_way("  all returned after send, s", w, lambda x: x["release_s"]))
        rows.append(by_way("  sends done, s", w, lambda x: x["sends_s"], False))
        rows.append(by_way("  all returned after last send done, s", w,
                           lambda x: x["after_sends_s"], False))
        rows.append(by_way("  threads (peak) [b]", w, lambda x: x["threads"], False))
        rows.append(by_way("  RSS MiB (peak) [b]", w,
                           lambda x: x["max_rss"] / MiB if x["max_rss"] else None, False))
        rows.append(cells("  stat p50 / p99 ms, waiting", pair(fs.get("stat_ms", {}))))
        rows.append(cells("  stat p50 / p99 ms, no reader", pair(fs.get("stat_idle_ms", {}))))
        rows.append(cells("  ls input/ p50 / p99 ms, waiting", pair(fs.get("ls_ms", {}))))
        rows.append(cells("  ls input/ p50 / p99 ms, no reader", pair(fs.get("ls_idle_ms", {}))))
        rows.append(by_way("  server cpu share in setup", w,
                           lambda x: x["server_cpu_share_setup"], False))
        rows.append(by_way("  server cpu share in release", w,
                           lambda x: x["server_cpu_share"], False))
        rows.append(by_way("  server cpu per send, ms, readers connected [d]", w,
                           lambda x: x["server_ms_per_send"], False))
        rows.append(by_way("  server cpu per send, ms, no reader [d]", w,
                           lambda x: x["server_ms_per_send_idle"], False))
        rows.append(cells("  daemon cpu in release, s", fs.get("daemon_cpu_release_s")))
    cost = results.get("cost")
    if cost and "error" not in cost:
        for kind in ("send", "deliver"):
            for n, us in cost[f"{kind}_us"].items():
                rows.append(cells(f"4 daemon cpu per record {kind}, {int(n):,}: us", us))
    mem = results.get("memory")
    if mem:
        for key, label, scale in (("idle_rss", "idle RSS MiB", MiB),
                                  ("per_stream", "per open stream KiB [c]", 1024),
                                  ("per_reader", "per parked reader, bytes", 1),
                                  ("per_retained_byte", "per retained record byte", 1)):
            if key in mem:
                rows.append(cells(f"5 memory: {label}", mem[key] / scale))
    vol = results.get("volume")
    if vol and "error" not in vol:
        title = f"6 volume: {vol['bytes'] / MiB:,.0f} MiB through {vol['streams']} followed streams"
        rows.append(cells(title, ""))
        for key, label in (("rss_after", "  daemon RSS MiB after"),
                           ("max_rss", "  daemon RSS MiB (peak)"),
                           ("mem_bytes", "  record data in memory, MiB [e]"),
                           ("disk_bytes", "  record data in the cache directory, MiB"),
                           ("rss_after_readback", "  daemon RSS MiB after reading every log/S back")):
            rows.append(cells(label, vol[key] / MiB))
        rows.append(cells("  MiB/s through the mount", vol["bytes"] / MiB / vol["seconds"]))
        rows.append(cells("  MiB/s reading log/S back (byte-exact)", vol["bytes"] / MiB / vol["readback_s"]))
    return rows


NOTES = {
    "[a]": "[a] triggerfs: the daemon's CPU; direct, sdk: the sending process's CPU.",
    "[b]": "[b] triggerfs: the daemon; direct, sdk: the one process holding every\n"
           "    subscription (sdk: one StandardInputStreamManager per run).",
    "[c]": "[c] one stream's subscription, log and first parked reader.",
    "[d]": "[d] the release's sends, server CPU until all are answered;\n"
           "    no reader: the same sends to other streams of the same runs, before.",
    "[e]": "[e] -o cache_mem (default 16 MiB) bounds it; the rest is read back from\n"
           "    the cache directory.",
    "[o]": "[o] output streams: triggerfs `cat FILE > runs/R/output/S` (each write's\n"
           "    values one S2 batch, the write returning when stored); direct:\n"
           "    trigger_output_append of every line at once; sdk: the published SDK's\n"
           "    streams.writer (StreamsWriterV2: S2 append session, BatchTransform\n"
           "    lingering X-S2-Flush-Interval-Ms) run outside a task with core's\n"
           "    StandardRealtimeStreamsManager.  Latency: write one value, time until a\n"
           "    reader of the output stream has it (triggerfs: a read(2) parked on\n"
           "    runs/R/output/S; direct: trigger_subscribe_output; sdk: streams.read).",
}
RATIOS = ("Ratios: triggerfs / other of the value shown (records/s: below 1 is slower;\n"
          "ms, s and cpu: below 1 is better).")


def notes(rows: list) -> str:
    """The footnotes the rows refer to."""
    text = " ".join(r[0] for r in rows)
    return "\n".join([n for k, n in NOTES.items() if k in text] + [RATIOS])


def format_table(rows: list) -> str:
    head = ["scenario / metric (medians)", "triggerfs", "direct", "sdk", "fs/direct", "fs/sdk"]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = []
    for r in [head, ["-" * w for w in widths]] + rows:
        lines.append("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                               for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


# ---- targets ---------------------------------------------------------------

def target(name: str, met: Optional[bool], measured: str) -> dict:
    return {"target": name, "met": met, "measured": measured}


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


def send_targets(red: dict) -> list:
    out = []
    for s in ("single", "parallel"):
        fs, di, sdk = (_get(red, "send", s, w, "records_per_s")
                       for w in ("triggerfs", "direct", "sdk"))
        if fs and di:
            out.append(target(f"send ({s}): triggerfs within 1.15x of direct",
                              di / fs <= 1.15, f"direct/triggerfs = {di / fs:.2f}x"))
        else:
            out.append(target(f"send ({s}): triggerfs within 1.15x of direct", None, "not measured"))
        if fs and sdk:
            out.append(target(f"send ({s}): triggerfs faster than sdk", fs > sdk,
                              f"{fs:,.0f} vs {sdk:,.0f} records/s"))
        else:
            out.append(target(f"send ({s}): triggerfs faster than sdk", None, "not measured"))
    return out


def latency_targets(red: dict) -> list:
    fs50, fs99 = _get(red, "latency", "triggerfs", "p50_ms"), _get(red, "latency", "triggerfs", "p99_ms")
    d50 = _get(red, "latency", "direct", "p50_ms")
    s50, s99 = _get(red, "latency", "sdk", "p50_ms"), _get(red, "latency", "sdk", "p99_ms")
    out = []
    name = "latency: triggerfs p50 within direct p50 + 0.5 ms"
    out.append(target(name, fs50 <= d50 + 0.5, f"{fs50:.3f} vs {d50:.3f} ms")
               if fs50 is not None and d50 is not None else target(name, None, "not measured"))
    name = "latency: triggerfs p50 and p99 below sdk"
    out.append(target(name, fs50 < s50 and fs99 < s99,
                      f"p50 {fs50:.3f} vs {s50:.3f}, p99 {fs99:.3f} vs {s99:.3f} ms")
               if None not in (fs50, fs99, s50, s99) else target(name, None, "not measured"))
    return out


def waiters_targets(red: dict, results: dict) -> list:
    w = _get(red, "waiters", "triggerfs") or {}
    n = _get(results, "waiters", "shape", "readers")
    checks = [
        (f"waiters ({n}): <= 16 daemon threads", w.get("threads"),
         lambda v: v <= 16, lambda v: f"{v:.0f} threads"),
        ("waiters: stat p99 < 20 ms", _get(w, "stat_ms", "p99_ms"),
         lambda v: v < 20, lambda v: f"{v:.3f} ms"),
        # One record per reader (input/S gives each to one): the release
        # takes as long as the server takes to store them; what the mount
        # adds is the time after the last send is answered.
        ("waiters: all returned within 0.5 s of the last send's answer",
         w.get("after_sends_s"), lambda v: v <= 0.5,
         lambda v: f"{v:.3f} s (all {w.get('release_s', 0):.3f} s after the first send)"),
        ("waiters: daemon RSS < 256 MiB", w.get("max_rss"),
         lambda v: v < 256 * MiB, lambda v: f"{v / MiB:.1f} MiB peak"),
        (f"waiters: server cpu per send, readers connected <= {HELD_TOLERANCE}x none",
         w.get("server_send_cost_ratio"), lambda v: v <= HELD_TOLERANCE,
         lambda v: f"{v:.2f}x: {w['server_ms_per_send']:.3f} ms per send with"
                   f" {w['streams']:,.0f} connections held, {w['server_ms_per_send_idle']:.3f}"
                   f" ms with none"),
    ]
    return [target(name, ok(v), txt(v)) if v is not None else target(name, None, "not measured")
            for name, v, ok, txt in checks]


def cost_targets(results: dict) -> list:
    cost = results.get("cost") or {}
    out = []
    for kind in ("send", "deliver"):
        vals = cost.get(f"{kind}_us") or {}
        name = f"cost: daemon cpu per record {kind} flat (largest <= {FLAT_TOLERANCE}x smallest)"
        if len(vals) < 2:
            out.append(target(name, None, "not measured"))
            continue
        sizes = sorted(vals, key=int)
        lo, hi = vals[sizes[0]], vals[sizes[-1]]
        out.append(target(name, hi <= FLAT_TOLERANCE * lo,
                          " -> ".join(f"{int(s):,}: {vals[s]:.1f} us" for s in sizes)))
    return out


def volume_targets(results: dict) -> list:
    vol = results.get("volume") or {}
    name = "volume: daemon RSS after 1 GiB through 100 followed streams < 96 MiB"
    if "rss_after" not in vol:
        return [target(name, None, "not measured")]
    if vol["bytes"] < 1 << 30:
        name = name.replace("1 GiB", f"{vol['bytes'] / MiB:,.0f} MiB")
    return [target(name, vol["rss_after"] < 96 * MiB,
                   f"{vol['rss_after'] / MiB:.1f} MiB after, {vol['max_rss'] / MiB:.1f} MiB peak")]


def judge(red: dict, results: dict) -> list:
    out: list = []
    if "send" in results:
        out += send_targets(red)
    if "latency" in results:
        out += latency_targets(red)
    if "waiters" in results:
        out += waiters_targets(red, results)
    if "cost" in results:
        out += cost_targets(results)
    if "volume" in results:
        out += volume_targets(results)
    return out


def format_targets(targets: list) -> str:
    word = {True: "met", False: "NOT MET", None: "n/a"}
    width = max((len(t["target"]) for t in targets), default=0)
    return "\n".join(f"{word[t['met']]:>8}  {t['target'].ljust(width)}  {t['measured']}"
                     for t in targets)
