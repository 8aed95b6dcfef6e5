"""Static checks of the C sources: cppcheck and clang-tidy (.clang-tidy at
the root says which checks and why), both clean."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

from mount_ctl import BUILD, ROOT

SOURCES = sorted(glob.glob(str(ROOT / "client" / "*.c")) + glob.glob(str(ROOT / "fs" / "*.c")))


def test_cppcheck_is_clean():
    assert shutil.which("cppcheck"), "cppcheck is installed by scripts/setup"
    out = subprocess.run(
        ["cppcheck", "--enable=warning,performance,portability", "--inline-suppr",
         "--error-exitcode=1", "--quiet", "-D_GNU_SOURCE", "-I", "client", "-I", "fs",
         "-I", "/usr/include/fuse3", "-I", "/usr/include",
         "--suppress=missingIncludeSystem", "--suppress=*:/usr/include/*", *SOURCES],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_clang_tidy_is_clean():
    assert shutil.which("clang-tidy"), "clang-tidy is installed by scripts/setup"
    assert (BUILD / "compile_commands.json").exists()
    # One file per process, two at a time: the machine has two cores.  The
    # largest first, so that no long file is left to run alone at the end.
    largest_first = sorted(SOURCES, key=os.path.getsize, reverse=True)
    out = subprocess.run(
        ["xargs", "-P", str(os.cpu_count() or 2), "-n", "1", "clang-tidy", "-p", str(BUILD),
         "--quiet"], input="\n".join(largest_first), cwd=ROOT, capture_output=True, text=True,
        timeout=900)
    findings = [l for l in out.stdout.splitlines() if ": error:" in l or ": warning:" in l]
    assert out.returncode == 0 and not findings, "\n".join(findings) or out.stderr[-4000:]
