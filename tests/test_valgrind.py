"""A mount/use/unmount cycle under valgrind memcheck: no invalid access, no
definite leak. Runs the optimised build (valgrind and ASan do not mix); in
the sanitizer pass of CI that build is there from the first pass."""

from __future__ import annotations

import re
import shutil
import subprocess

from mount_ctl import ROOT, Mount, kill_group, sh, spawn_sh, Lines

BUILD = ROOT / "build"


def plain_daemon() -> str:
    if not (BUILD / "build.ninja").exists():
        subprocess.run(["meson", "setup", str(BUILD)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["meson", "compile", "-C", str(BUILD), "fs/triggerfs"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    return str(BUILD / "fs" / "triggerfs")


class ValgrindMount(Mount):
    def __init__(self, daemon: str, log: str, **kw):
        super().__init__(**kw)
        self.daemon, self.vg_log = daemon, log

    def argv(self) -> list:
        argv = super().argv()
        return ["valgrind", "--tool=memcheck", "--leak-check=full",
                "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                f"--log-file={self.vg_log}", self.daemon] + argv[1:]


def test_memcheck_mount_use_unmount(server, run, tmp_path):
    assert shutil.which("valgrind"), "valgrind is installed by scripts/setup"
    log = str(tmp_path / "valgrind.log")
    m = ValgrindMount(plain_daemon(), log, api_url=server.url, key=server.secret_key)
    m.start(timeout=60)
    reader = None
    try:
        S = m.input(run, "chat")
        reader = spawn_sh('exec head -n2 "$S"', env={"S": S})
        m.wait_parked(1, timeout=30)
        assert sh('echo \'{"a":1}\' > "$S" && printf \'[2]\' >> "$S"',
                  env={"S": S}, timeout=60).returncode == 0
        lines = Lines(reader.stdout.fileno())
        assert lines.next(timeout=30)[0] == '{"a":1}'
        assert lines.next(timeout=30)[0] == "[2]"
        assert reader.wait(30) == 0
        out = sh('cat "$L"; ls "$R"', env={"L": m.log(run, "chat"),
                                          "R": m.path("runs")}, timeout=60)
        assert out.stdout.decode().startswith('{"a":1}\n[2]\n')
        assert sh('echo nope > "$S"', env={"S": S}, timeout=60).returncode != 0
    finally:
        if reader:
            kill_group(reader)
        problems = m.stop()
    text = open(log).read()
    assert m.returncode == 0, f"valgrind reported errors:\n{text[-6000:]}"
    assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-6000:]
    assert "definitely lost: 0 bytes" in text or "All heap blocks were freed" in text, \
        text[-6000:]
    assert not problems, problems
