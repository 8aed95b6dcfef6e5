"""A long TLS link to a local API server, built from parts on this machine:
a test certificate authority (openssl), a TLS 1.3 + HTTP/2 terminating
proxy (nginx, as in front of real deployments) and scripts/delayrelay in
front of it for the round trip (the kernel has no netem).

    client --(delay each way)--> delayrelay --> nginx (TLS, h2) --> devserver

Used by scripts/bench --wan and tests/test_tls.py.  Counts come from what
the kernel and nginx say: connections held (/proc/net/tcp), connections
accepted (stub_status) and which carried requests (the access log)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

SCRIPTS = Path(__file__).resolve().parents[1]
_RELAY = re.compile(r"delayrelay: listening on [\d.]+:(\d+)")


class LinkError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise LinkError(f"openssl {args[0]}: {r.stderr.strip()[-500:]}")


def make_ca(directory: Path, name: str) -> tuple:
    """A certificate authority: (certificate path, key path)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3",
             "-subj", f"/CN=triggerfs {name}")
    return cert, key


def make_server_cert(directory: Path, ca: tuple, host: str = "localhost") -> tuple:
    """A server certificate for host (and 127.0.0.1) signed by ca."""
    key, csr = directory / "server.key", directory / "server.csr"
    cert, ext = directory / "server.pem", directory / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n"
                   "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))
    return cert, key


NGINX_CONF = """\
daemon off;
master_process off;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    log_format conn '$connection $connection_requests $request_method $uri $status $msec $request_time';
    access_log {d}/nginx-access.log conn;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    client_max_body_size 2m;
    {extra}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            # One upstream connection per request (no upstream keepalive):
            # the connections to the server are the requests in flight.
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 700s;
        }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{ stub_status; }}
    }}
}}
"""


class Link:
    """nginx (TLS 1.3, HTTP/2) in front of the server at upstream_port, and
    a delay relay in front of nginx (delay_ms each way; 0: none)."""

    def __init__(self, directory: Path, upstream_port: int, delay_ms: float = 10.0,
                 nginx_extra: str = "", ca: Optional[tuple] = None):
        self.dir = Path(directory)
        self.ca = ca            # (certificate, key) of another link's CA
        self.upstream_port = upstream_port
        self.delay_ms = delay_ms
        self.nginx_extra = nginx_extra
        self.procs: list = []
        self.port = self.status_port = self.relay_port = 0
        self.ca_file = self.wrong_ca_file = Path()

    def start(self, timeout: float = 20.0) -> "Link":
        (self.dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
        ca = self.ca = self.ca or make_ca(self.dir, "test-ca")
        self.ca_file = ca[0]
        self.wrong_ca_file = make_ca(self.dir, "other-ca")[0]
        cert, key = make_server_cert(self.dir, ca)
        self.port, self.status_port = free_port(), free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            d=self.dir, port=self.port, status_port=self.status_port, cert=cert, key=key,
            upstream=self.upstream_port, extra=self.nginx_extra))
        with open(self.dir / "nginx-stderr.log", "ab") as err:
            self.procs.append(subprocess.Popen(
                ["nginx", "-p", str(self.dir), "-c", str(conf)], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, start_new_session=True))
        self._wait_port(self.port, timeout, "nginx")
        self.relay_port = self.port
        if self.delay_ms > 0:
            self._start_relay(timeout)
        return self

    def _start_relay(self, timeout: float) -> None:
        proc = subprocess.Popen(
            [str(SCRIPTS / "delayrelay"), "--to", f"127.0.0.1:{self.port}",
             "--delay-ms", str(self.delay_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.dir / "delayrelay.log", "ab"), text=True,
            start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = _RELAY.search(line)
        if not m:
            raise LinkError(f"delayrelay said {line!r}")
        self.relay_port = int(m.group(1))

    def _wait_port(self, port: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise LinkError(f"{what} did not start: {self.nginx_log()}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.relay_port}"

    def nginx_log(self) -> str:
        text = ""
        for name in ("nginx-stderr.log", "nginx-error.log"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-5:])

    # ---- what the link carries

    def status(self) -> dict:
        """nginx's stub_status: active, accepts, handled, requests."""
        with socket.create_connection(("127.0.0.1", self.status_port), 5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        text = data.decode(errors="replace")
        active = int(re.search(r"Active connections:\s*(\d+)", text).group(1))
        accepts, handled, requests = map(int, re.search(
            r"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", text).groups())
        return {"active": active, "accepts": accepts, "handled": handled,
                "requests": requests}

    def client_connections(self) -> int:
        """Established connections into nginx's TLS port, that is, the
        clients' connections (each relayed one-to-one); the status port is
        not counted."""
        return established_to(self.port)

    def upstream_connections(self) -> int:
        """Requests nginx has in flight at the server (one connection each)."""
        return established_to(self.upstream_port, self.procs[0].pid)

    def access_log_mark(self) -> int:
        with contextlib.suppress(OSError):
            return (self.dir / "nginx-access.log").stat().st_size
        return 0

    def _request_connections(self, since: int) -> list:
        """The connection number of each request nginx logged after byte
        offset since (a request is logged when it ends)."""
        with contextlib.suppress(OSError), open(self.dir / "nginx-access.log", "rb") as f:
            f.seek(since)
            return [int(first) for first in (line.split(" ", 1)[0] for line in
                                             f.read().decode(errors="replace").splitlines())
                    if first.isdigit()]
        return []

    def requests_since(self, since: int = 0) -> int:
        """Requests nginx logged after byte offset since."""
        return len(self._request_connections(since))

    def connections_with_requests(self, since: int = 0) -> set:
        """nginx's connection numbers that carried a request after byte
        offset since."""
        return set(self._request_connections(since))

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()

    def __enter__(self) -> "Link":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def socket_inodes(pid: int) -> set:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    return inodes


def established_to(port: int, pid: Optional[int] = None) -> int:
    """Sockets in ESTABLISHED state whose remote end is 127.0.0.1:port
    (only process pid's, when given)."""
    want = f"0100007F:{port:04X}"
    mine = socket_inodes(pid) if pid else None
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == want and fields[3] == "01" and (
                    mine is None or fields[9] in mine):
                n += 1
    return n


def nginx_available() -> Optional[str]:
    """Why the link cannot be built here, or None."""
    for prog in ("nginx", "openssl"):
        if not any(os.access(os.path.join(d, prog), os.X_OK)
                   for d in os.environ.get("PATH", "/usr/bin").split(":") + ["/usr/sbin"]):
            return f"{prog} is not installed (scripts/setup installs it)"
    return None
