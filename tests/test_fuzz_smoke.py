"""The libFuzzer targets of tests/fuzz build with clang and run for 10 s
each without finding a failing input (scripts/fuzz --seconds 10)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("jsonline", "sse", "record", "cred")


def test_fuzz_targets_run_clean():
    assert shutil.which("clang"), "clang is missing: scripts/setup installs clang libclang-rt-14-dev"
    build = ROOT / "build-fuzz"
    before = set(build.glob("crash-*")) if build.exists() else set()
    proc = subprocess.run([str(ROOT / "scripts" / "fuzz"), "--seconds", "10"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    for t in TARGETS:
        m = re.search(rf"^fuzz: {t} ok: (\d+) runs", proc.stdout, re.M)
        assert m, f"no result for {t}:\n{proc.stdout}"
        # Thousands of inputs at least: the target really ran its checks.
        assert int(m.group(1)) > 2000, proc.stdout
    assert set(build.glob("crash-*")) == before
