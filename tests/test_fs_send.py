"""Write = send, through a real mount: what is written is a stream of JSON
texts as jq reads them (one per line, pretty-printed over many lines,
several on one line, a leading BOM ignored); each value is one send, sent
as soon as it is complete and delivered when write(2) returns; a value cut
short fails the close; at the first value that is not JSON the values
before it are sent, nothing from it on, and the log names its line counted
from the open."""

from __future__ import annotations

import errno
import os

from mount_ctl import mount, mount_factory, os_error, sh  # noqa: F401

MIB = 1024 * 1024


def values(server, run, stream):
    return [v for _, v in server.records(run, stream)]


def test_echo_is_delivered_when_it_returns(mount, server, run):
    r = sh('echo \'{"approved":true}\' > "$S"', env={"S": mount.input(run, "approval")})
    assert (r.returncode, r.stderr) == (0, b"")
    # The send was accepted before echo returned: the API holds it now.
    assert server.records(run, "approval") == [(0, {"approved": True})]


def test_string_stays_a_string(mount, server, run):
    r = sh("echo '\"123\"' > \"$S\"; echo 123 >> \"$S\"", env={"S": mount.input(run, "s")})
    assert r.returncode == 0, r.stderr
    assert values(server, run, "s") == ["123", 123]


def test_append_redirect(mount, server, run):
    r = sh('for i in 1 2 3; do echo "{\\"i\\":$i}" >> "$S" || exit 9; done',
           env={"S": mount.input(run, "chat")})
    assert r.returncode == 0, r.stderr
    assert values(server, run, "chat") == [{"i": 1}, {"i": 2}, {"i": 3}]


def test_printf_without_newline_is_sent_at_close(mount, server, run):
    r = sh("/usr/bin/printf '%s' '{\"k\":\"v\"}' > \"$S\"", env={"S": mount.input(run, "p")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "p") == [{"k": "v"}]


def test_a_value_is_sent_as_soon_as_complete_a_bare_number_at_close(mount, server, run):
    fd = os.open(mount.input(run, "q"), os.O_WRONLY)
    try:
        assert os.write(fd, b'[1,') == 3
        assert values(server, run, "q") == []          # incomplete: kept
        assert os.write(fd, b'2]') == 2
        assert values(server, run, "q") == [[1, 2]]    # complete: sent, no newline needed
        assert os.write(fd, b' 42') == 3
        assert values(server, run, "q") == [[1, 2]]    # 42 could still become 421
    finally:
        os.close(fd)                                   # close(2) sends it
    assert values(server, run, "q") == [[1, 2], 42]


def test_jq_pretty_printed_output_is_one_send(mount, server, run):
    r = sh('jq -n \'{a: 1, b: [1, 2, {c: "x"}]}\' > "$S"', env={"S": mount.input(run, "jq")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "jq") == [{"a": 1, "b": [1, 2, {"c": "x"}]}]


def test_python_json_dumps_indent_2(mount, server, run):
    script = ("import json, sys\n"
              "with open(sys.argv[1], 'w') as f:\n"
              "    f.write(json.dumps({'approved': True, 'by': ['ana', 'bo']}, indent=2))\n"
              "    f.write('\\n')\n"
              "    f.write(json.dumps([1, {'n': None}], indent=2))\n")
    r = sh('/usr/bin/python3 -c "$P" "$S"', env={"P": script, "S": mount.input(run, "py")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "py") == [{"approved": True, "by": ["ana", "bo"]},
                                         [1, {"n": None}]]


def test_a_leading_utf8_bom_is_ignored(mount, server, run):
    r = sh("/usr/bin/printf '\\357\\273\\277{\"a\":\"\\303\\251\"}\\n' > \"$S\"",
           env={"S": mount.input(run, "bom")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "bom") == [{"a": "\u00e9"}]
    # Only at the start: a BOM between values is not JSON.
    fd = os.open(mount.input(run, "bom2"), os.O_WRONLY)
    try:
        assert os.write(fd, b'1\n\xef\xbb\xbf2\n') == 2
    finally:
        # What was refused fails every later write and the close.
        assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert values(server, run, "bom2") == [1]


def test_two_values_on_one_line(mount, server, run):
    r = sh('echo \'{"a":1} {"b":2}{"c":3} [4] "five" 6\' > "$S"', env={"S": mount.input(run, "two")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "two") == [{"a": 1}, {"b": 2}, {"c": 3}, [4], "five", 6]


def test_lines_of_one_write_arrive_in_order(mount, server, run):
    data = b'1\n"two"\n\n{"three":[3]}\n  4  \n'
    fd = os.open(mount.input(run, "chat"), os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    # Blank lines are skipped; whitespace around a value is not sent.
    assert server.records(run, "chat") == [(0, 1), (1, "two"), (2, {"three": [3]}), (3, 4)]

    r = sh("/usr/bin/printf '5\\n6\\n7\\n' > \"$S\"", env={"S": mount.input(run, "chat")})
    assert r.returncode == 0, r.stderr
    assert values(server, run, "chat")[4:] == [5, 6, 7]


def test_api_refusing_second_line_gives_short_write(mount, server, run):
    """The second line passes the local 1 MiB check ({"data":<line>} is
    about 600 KB) but the API refuses it with 413: the record it would
    store escapes every backslash again and meters over 1 MiB. So the API,
    not the daemon, rejects line 2 after accepting line 1."""
    line1 = b'{"n":1}\n'
    line2 = b'"' + b"\\\\" * 300_000 + b'"\n'
    line3 = b'{"n":3}\n'
    fd = os.open(mount.input(run, "chat"), os.O_WRONLY)
    try:
        assert os.write(fd, line1 + line2 + line3) == len(line1)   # short write
        assert values(server, run, "chat") == [{"n": 1}]
        # The next write reports the error...
        assert os_error(lambda: os.write(fd, b'{"n":4}\n')) == errno.EFBIG
        # ...and after that the file works again.
        assert os.write(fd, b'{"n":5}\n') == 8
    finally:
        os.close(fd)
    assert values(server, run, "chat") == [{"n": 1}, {"n": 5}]
    lines = mount.log_matching(rf"run {run} stream chat: send failed")
    assert len(lines) == 1, mount.stderr()
    assert "413" in lines[0]


def test_partial_value_that_cannot_become_json_fails_at_once(mount, server, run):
    r = sh("/usr/bin/printf 'nope' > \"$S\"", env={"S": mount.input(run, "bad")})
    assert r.returncode != 0
    assert b"Invalid argument" in r.stderr, r.stderr
    fd = os.open(mount.input(run, "bad"), os.O_WRONLY)
    try:
        assert os_error(lambda: os.write(fd, b'{"a" 1')) == errno.EINVAL
        # Nothing from the refused value on: later writes fail too.
        assert os_error(lambda: os.write(fd, b'{"a":1}\n')) == errno.EINVAL
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert values(server, run, "bad") == []


def test_truncated_value_fails_the_close_of_usr_bin_printf(mount, server, run):
    r = sh("/usr/bin/printf '{\"x\":' > \"$S\"", env={"S": mount.input(run, "inc")})
    # A truncated body (a curl cut short) must not exit 0.
    assert r.returncode != 0
    assert b"Invalid argument" in r.stderr, r.stderr
    line = mount.wait_log(rf"run {run} stream inc: close with an incomplete value \(line 1 ")
    assert "not sent" in line.string
    mount.wait_log(rf"run {run} stream inc: dropped an incomplete value of 5 bytes")
    mount.wait_stats(open_handles=0)
    assert values(server, run, "inc") == []


def test_truncated_value_raises_at_close_in_python(mount, server, run):
    script = ("import sys\n"
              "try:\n"
              "    with open(sys.argv[1], 'w') as f:\n"
              "        f.write('{\"ok\": true}\\n{\"cut\": [1, 2')\n"
              "except OSError as e:\n"
              "    print('raised', e.errno)\n"
              "    sys.exit(3)\n")
    r = sh('/usr/bin/python3 -c "$P" "$S"', env={"P": script, "S": mount.input(run, "pyinc")})
    assert r.returncode == 3, r.stderr
    assert r.stdout == f"raised {errno.EINVAL}\n".encode()
    assert values(server, run, "pyinc") == [{"ok": True}]


def test_another_process_sharing_the_file_completes_the_value(mount, server, run):
    """The first process's close fails (its value is incomplete); the second
    completes it and it is sent."""
    r = sh("exec 3> \"$S\"; /usr/bin/printf '{\"x\":' >&3; echo first=$?;"
           " /usr/bin/printf '7}' >&3; echo second=$?; exec 3>&-",
           env={"S": mount.input(run, "share2")})
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"first=1\nsecond=0\n", (r.stdout, r.stderr)
    assert values(server, run, "share2") == [{"x": 7}]


def test_invalid_value_sends_everything_before_it(mount, server, run):
    path = mount.input(run, "v")
    r = sh("echo '{bad' > \"$S\"", env={"S": path})
    assert r.returncode == 1
    assert b"Invalid argument" in r.stderr, r.stderr
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.write(fd, b'0\n') == 2
        # Line 3 counted from the open: the values before it are sent, the
        # write is short, the next write fails.
        assert os.write(fd, b'1\n{"a":}\n3\n') == 2
        assert os_error(lambda: os.write(fd, b'{"a":}\n3\n')) == errno.EINVAL
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EINVAL
    assert values(server, run, "v") == [0, 1]
    lines = mount.log_matching(rf"run {run} stream v: the value at line (\d+) \(counted from the open\) is not JSON")
    assert len(lines) == 2, mount.stderr()
    assert "at line 1 " in lines[0] and "at line 3 " in lines[1], lines


def test_cat_of_a_big_file_with_a_bad_line_in_the_middle(mount, server, run, tmp_path):
    """5,000 lines (about 430 KB: several 128 KiB writes), line 3,001 (in
    cat's second write) not JSON: exactly the 3,000 lines before it are
    stored, in order, cat fails, and the log names line 3001."""
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        for i in range(1, 5_001):
            f.write('{"i":%d,"pad":"%s"}\n' % (i, "x" * 64) if i != 3_001 else "{oops\n")
    r = sh('cat "$F" > "$S"', env={"F": str(big), "S": mount.input(run, "big")}, timeout=300)
    assert r.returncode == 1
    assert b"Invalid argument" in r.stderr, r.stderr
    got = values(server, run, "big")
    assert [v["i"] for v in got] == list(range(1, 3_001))
    assert mount.log_matching(rf"run {run} stream big: the value at line 3001 \(counted from the open\)"), \
        mount.stderr()[-2000:]


def test_record_over_one_mib_is_efbig(mount, server, run):
    """A value of 1 MiB + 1 bytes written in 64 KiB pieces (as cat or dd
    would), after a small one: the write that takes it past the limit fails
    with EFBIG, and so does everything after it (nothing from it on is
    sent); the bytes are not held."""
    line = b'"' + b"a" * (MIB - 1) + b'"\n'     # 1 MiB + 1 bytes of JSON
    fd = os.open(mount.input(run, "big"), os.O_WRONLY)
    errors = []
    try:
        assert os.write(fd, b'"small"\n') == 8
        for i in range(0, len(line), 65536):
            try:
                assert os.write(fd, line[i:i + 65536]) == len(line[i:i + 65536])
            except OSError as e:
                errors.append((i, e.errno))
        assert errors, "no write failed"
        # {"data":<value>} passes 1 MiB within the piece holding byte MIB - 9.
        assert errors[0] == (((MIB - 9) // 65536) * 65536, errno.EFBIG)
        assert {e for _, e in errors} == {errno.EFBIG}
        assert os_error(lambda: os.write(fd, b'"after"\n')) == errno.EFBIG
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EFBIG
    assert values(server, run, "big") == ["small"]
    assert mount.log_matching(rf"run {run} stream big: the value at line 2 .*over 1 MiB"), \
        mount.stderr()


def test_shell_pipeline_over_one_mib_fails_efbig(mount, server, run):
    r = sh("{ printf '\"'; head -c 1048576 /dev/zero | tr '\\0' a; printf '\"\\n'; } > \"$S\"",
           env={"S": mount.input(run, "big")})
    assert b"tr: write error: File too large" in r.stderr, r.stderr
    assert values(server, run, "big") == []


def test_one_write_of_an_oversize_line_is_efbig(mount, server, run):
    """One write(2) of 1 MiB + 1 bytes: the kernel splits it at its
    max_write, the first piece is kept (short count), the rest is refused.
    Writing the rest again must still be EFBIG (that line can never be
    sent), not EINVAL for a value that seems to start mid-string."""
    line = b'"' + b"a" * (MIB - 1) + b'"\n'
    fd = os.open(mount.input(run, "big"), os.O_WRONLY)
    try:
        def write_all():
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        assert os_error(write_all) == errno.EFBIG
    finally:
        assert os_error(lambda: os.close(fd)) == errno.EFBIG
    assert values(server, run, "big") == []


def test_truncate_is_accepted_and_ignored(mount, server, run):
    path = mount.input(run, "t")
    r = sh('echo 1 > "$S" && echo 2 > "$S" && truncate -s 0 "$S" && echo 3 >> "$S"',
           env={"S": path})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "t") == [1, 2, 3]
