"""Write = send, through a real mount: each complete line one send, in
order, delivered when write(2) returns; partial lines kept per open file
and sent at close; invalid lines refused before anything is sent; a later
line refused by the API makes a short write."""

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

    fd = os.open(mount.input(run, "q"), os.O_WRONLY)
    try:
        assert os.write(fd, b'[1,2]') == 5
        assert values(server, run, "q") == []          # kept, not sent
    finally:
        os.close(fd)                                   # close(2) sends it
    assert values(server, run, "q") == [[1, 2]]


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


def test_two_processes_share_an_open_file(mount, server, run):
    r = sh("{ /usr/bin/printf '{\"x\":'; /usr/bin/printf '5}\\n'; } > \"$S\"",
           env={"S": mount.input(run, "shared")})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "shared") == [{"x": 5}]


def test_partial_line_that_cannot_become_json_fails_at_once(mount, server, run):
    r = sh("/usr/bin/printf 'nope' > \"$S\"", env={"S": mount.input(run, "bad")})
    assert r.returncode != 0
    assert b"Invalid argument" in r.stderr, r.stderr
    fd = os.open(mount.input(run, "bad"), os.O_WRONLY)
    try:
        assert os_error(lambda: os.write(fd, b'{"a" 1')) == errno.EINVAL
    finally:
        os.close(fd)
    assert values(server, run, "bad") == []


def test_incomplete_line_is_dropped_at_release_with_a_log_line(mount, server, run):
    r = sh("/usr/bin/printf '{\"x\":' > \"$S\"", env={"S": mount.input(run, "inc")})
    # close(2) keeps an incomplete line: another process may still complete it.
    assert (r.returncode, r.stderr) == (0, b"")
    line = mount.wait_log(rf"run {run} stream inc: dropped an incomplete line")
    assert "5 bytes" in line.string
    mount.wait_stats(open_handles=0)
    assert values(server, run, "inc") == []


def test_invalid_json_sends_nothing(mount, server, run):
    path = mount.input(run, "v")
    r = sh("echo '{bad' > \"$S\"", env={"S": path})
    assert r.returncode == 1
    assert b"Invalid argument" in r.stderr, r.stderr
    fd = os.open(path, os.O_WRONLY)
    try:
        # Line 1 is fine, line 2 is not: nothing from this write is sent.
        assert os_error(lambda: os.write(fd, b'1\n{"a":}\n3\n')) == errno.EINVAL
    finally:
        os.close(fd)
    assert values(server, run, "v") == []
    assert len(mount.log_matching(rf"run {run} stream v: write refused")) == 2, mount.stderr()


def test_record_over_one_mib_is_efbig(mount, server, run):
    """A line of 1 MiB + 1 bytes written in 64 KiB pieces (as cat or dd
    would): the write that takes it past the limit fails with EFBIG, and so
    does the rest of that line; the file stays usable."""
    line = b'"' + b"a" * (MIB - 1) + b'"\n'     # 1 MiB + 1 bytes of JSON
    fd = os.open(mount.input(run, "big"), os.O_WRONLY)
    errors = []
    try:
        for i in range(0, len(line), 65536):
            try:
                assert os.write(fd, line[i:i + 65536]) == len(line[i:i + 65536])
            except OSError as e:
                errors.append((i, e.errno))
        assert errors, "no write failed"
        # {"data":<line>} passes 1 MiB within the piece holding byte MIB - 9.
        assert errors[0] == (((MIB - 9) // 65536) * 65536, errno.EFBIG)
        assert {e for _, e in errors} == {errno.EFBIG}
        assert os.write(fd, b'"small"\n') == 8
    finally:
        os.close(fd)
    assert values(server, run, "big") == ["small"]
    assert mount.log_matching(rf"run {run} stream big: write refused.*over 1 MiB"), \
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
    sent), not EINVAL for a line that seems to start mid-string."""
    line = b'"' + b"a" * (MIB - 1) + b'"\n'
    fd = os.open(mount.input(run, "big"), os.O_WRONLY)
    try:
        def write_all():
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        assert os_error(write_all) == errno.EFBIG
    finally:
        os.close(fd)
    assert values(server, run, "big") == []


def test_truncate_is_accepted_and_ignored(mount, server, run):
    path = mount.input(run, "t")
    r = sh('echo 1 > "$S" && echo 2 > "$S" && truncate -s 0 "$S" && echo 3 >> "$S"',
           env={"S": path})
    assert (r.returncode, r.stderr) == (0, b"")
    assert values(server, run, "t") == [1, 2, 3]
