"""The two views of one input stream, through a real mount, with the tools
users use: input/S delivers each record once per mount, to whichever
reader asks first, in order, one record per read(2); log/S is the whole
log for every reader; st_size of each is true at the first stat."""

from __future__ import annotations

import os

from devserver_ctl import wait_for
from mount_ctl import SLACK, Lines, kill_group, mount, mount_factory, sh, spawn_sh  # noqa: F401


def send_all(server, run, stream, values) -> None:
    for v in values:
        server.send(run, stream, v)


def test_head_n1_twice_takes_two_consecutive_records(mount, server, run):
    send_all(server, run, "approval", [{"n": 1}, {"n": 2}, {"n": 3}])
    r = sh('a=$(head -n1 "$S"); b=$(head -n1 "$S"); echo "$a|$b"',
           env={"S": mount.input(run, "approval")})
    assert (r.returncode, r.stdout) == (0, b'{"n":1}|{"n":2}\n'), r.stderr
    # The third is still waiting; the log still has all three.
    assert sh('head -n1 "$S"', env={"S": mount.input(run, "approval")}).stdout == b'{"n":3}\n'
    assert sh('cat "$L"', env={"L": mount.log(run, "approval")}).stdout == \
        b'{"n":1}\n{"n":2}\n{"n":3}\n'


def test_read_r_twice_takes_two_records(mount, server, run):
    send_all(server, run, "r", ["a", "b"])
    r = sh('read -r x < "$S"; read -r y < "$S"; echo "$x $y"', env={"S": mount.input(run, "r")})
    assert (r.returncode, r.stdout) == (0, b'"a" "b"\n'), r.stderr


def test_two_blocked_head_n1_each_get_their_own_record_in_order(mount, server, run):
    path = mount.input(run, "two")
    first = spawn_sh('head -n1 "$S"', env={"S": path})
    procs = [first]
    try:
        mount.wait_parked(1)
        procs.append(spawn_sh('head -n1 "$S"', env={"S": path}))
        mount.wait_parked(2)
        server.send(run, "two", "one")
        server.send(run, "two", "two")
        outs = [p.communicate(timeout=5 * SLACK)[0] for p in procs]
        assert outs == [b'"one"\n', b'"two"\n']
    finally:
        for p in procs:
            kill_group(p)


def test_records_sent_before_anyone_listened_come_first_then_new_ones(mount, server, run):
    send_all(server, run, "q", [1, 2])
    proc = spawn_sh('while read -r v; do echo "got $v"; done < "$S"', env={"S": mount.input(run, "q")})
    try:
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == "got 1"
        assert lines.next()[0] == "got 2"
        mount.wait_parked(1)
        server.send(run, "q", 3)
        assert lines.next()[0] == "got 3"
    finally:
        kill_group(proc)
    # while read took them: nothing is left for the next reader.
    assert os.stat(mount.input(run, "q")).st_size == 0


def test_a_short_read_gets_the_rest_of_its_record_on_the_same_descriptor(mount, server, run):
    send_all(server, run, "s", ["abcdefgh", "next"])
    fd = os.open(mount.input(run, "s"), os.O_RDONLY)
    try:
        assert os.read(fd, 4) == b'"abc'
        # Another reader meanwhile gets the next record, not the rest.
        assert sh('head -n1 "$S"', env={"S": mount.input(run, "s")}).stdout == b'"next"\n'
        assert os.read(fd, 100) == b'defgh"\n'     # the rest, and no more
    finally:
        os.close(fd)


def test_stat_and_test_s_on_both_views_before_any_read(mount, server, run):
    send_all(server, run, "st", [{"a": 1}, "bb"])
    size = len(b'{"a":1}\n"bb"\n')
    inp, log = mount.input(run, "st"), mount.log(run, "st")
    # First contact with the stream on this mount: a stat, not a read.
    r = sh('stat -c %s "$L"; stat -c %s "$S"; [ -s "$S" ] && echo waiting; '
           '[ -s "$L" ] && echo logged', env={"S": inp, "L": log})
    assert r.stdout == f"{size}\n{size}\nwaiting\nlogged\n".encode(), r.stderr
    assert sh('head -n1 "$S"', env={"S": inp}).stdout == b'{"a":1}\n'
    assert os.stat(inp).st_size == len(b'"bb"\n')      # what is not yet consumed
    assert os.stat(log).st_size == size                # the whole log
    assert sh('head -n1 "$S"', env={"S": inp}).stdout == b'"bb"\n'
    r = sh('[ -s "$S" ] || echo empty; ls -l "$L" | cut -d" " -f5', env={"S": inp, "L": log})
    assert r.stdout == f"empty\n{size}\n".encode()
    # A record sent through the API later shows as it arrives.
    server.send(run, "st", 3)
    wait_for(lambda: os.stat(log).st_size == size + 2, timeout=5 * SLACK, what="log size")
    assert os.stat(inp).st_size == 2


def test_cat_input_is_on_and_ends_with_the_run(mount, server, run):
    send_all(server, run, "on", [1])
    proc = spawn_sh('cat "$S"', env={"S": mount.input(run, "on")})
    try:
        lines = Lines(proc.stdout.fileno())
        assert lines.next()[0] == "1"
        server.send(run, "on", 2)
        assert lines.next()[0] == "2"
        server.cancel(run)
        assert proc.wait(5 * SLACK) == 0
    finally:
        kill_group(proc)


def test_what_the_mount_sends_it_also_receives_once(mount, server, run):
    path = mount.input(run, "loop")
    r = sh('jq -n \'{a: 1}\' > "$S" && echo 2 > "$S" && head -n1 "$S" && head -n1 "$S"',
           env={"S": path})
    assert (r.returncode, r.stdout) == (0, b'{"a":1}\n2\n'), r.stderr
