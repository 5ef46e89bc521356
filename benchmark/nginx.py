"""Run deploy/nginx.conf on loopback in front of local server processes (for tests/test_nginx.py and the benchmark).

The shipped configuration is a complete nginx.conf with real values (port 80, upstreams 127.0.0.1:5001 and :5002).
`render_conf` fills in other ports, and adds what a throw-away instance needs: `daemon off`, a pid file, an error
log and temporary directories under a scratch prefix, so nginx runs as an ordinary child process of the caller.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from benchmark import ROOT

DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
UPSTREAM = "atari_servers"


def find_nginx() -> str | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx(timeout_s: float = 300.0) -> tuple[str | None, str]:
    """nginx's path, installing Debian's package when running as root; else (None, why not)."""
    path = find_nginx()
    if path:
        return path, ""
    if os.geteuid() != 0:
        return None, "nginx is not installed and this is not root (apt-get install -y nginx)"
    if not shutil.which("apt-get"):
        return None, "nginx is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + timeout_s
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "nginx"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "nginx"],
    ):
        try:
            subprocess.run(
                cmd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=max(deadline - time.monotonic(), 1),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"installing nginx timed out after {timeout_s:.0f} s"
        path = find_nginx()
        if path:
            return path, ""
    return None, "apt-get could not install nginx"


def ip_hash_backend(address: str, backends: int) -> int:
    """Which of `backends` equal-weight servers nginx's ip_hash picks for an IPv4 client (all of them up).

    ip_hash hashes the first three octets (ngx_http_upstream_ip_hash_module.c); the benchmark uses this to choose
    loopback source addresses that spread evenly, and checks the result against each server's /healthz.
    """
    h = 89
    for octet in address.split(".")[:3]:
        h = (h * 113 + int(octet)) % 6271
    return h % backends


def balanced_sources(backends: int, count: int) -> list[str]:
    """`count` loopback addresses (127.0.k.1) that ip_hash spreads round-robin over `backends` servers."""
    by_backend: list[list[str]] = [[] for _ in range(backends)]
    for k in range(1, 255):
        addr = f"127.0.{k}.1"
        by_backend[ip_hash_backend(addr, backends)].append(addr)
    out = []
    for i in range(count):
        pool = by_backend[i % backends]
        out.append(pool[(i // backends) % len(pool)])
    return out


def render_conf(
    template: str,
    listen: str,
    backends: list[str],
    prefix: Path,
    workers: int | None = None,
    tls: tuple[str, str] | None = None,
) -> str:
    """The deploy configuration with this listen address and these upstream servers, running under `prefix`: plain
    HTTP, or with `tls` (certificate, key) HTTPS on it. The http-to-https redirect block is left out."""
    lines = template.splitlines()
    out: list[str] = []
    in_upstream = done_upstream = in_redirect = False
    listens = 0
    for line in lines:
        code = line.split("#", 1)[0]
        if re.match(r"\s*#\s*BEGIN http-to-https", line):
            in_redirect = True
        if in_redirect:
            in_redirect = not re.match(r"\s*#\s*END http-to-https", line)
            continue
        m = re.match(r"(\s*)(ssl_certificate|ssl_certificate_key)\s", code)
        if m:
            if tls is not None:
                out.append(f"{m.group(1)}{m.group(2)} {tls[0] if m.group(2) == 'ssl_certificate' else tls[1]};")
            continue
        if re.match(rf"\s*upstream\s+{UPSTREAM}\s*\{{", code):
            in_upstream = True
            out.append(line)
            continue
        if in_upstream:
            if re.match(r"\s*server\s+\S+.*;", code):
                if not done_upstream:
                    indent = line[: len(line) - len(line.lstrip())]
                    out.extend(f"{indent}server {b};" for b in backends)
                    done_upstream = True
                continue
            if "}" in code:
                in_upstream = False
        elif re.match(r"\s*listen\s+[^;]+;", code):
            listens += 1
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}listen {listen}{' ssl' if tls else ''};")
            continue
        elif workers is not None and re.match(r"\s*worker_processes\s+", code):
            out.append(f"worker_processes {workers};")
            continue
        elif re.match(r"\s*http\s*\{", code):
            out.append(line)
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                out.append(f"    {kind}_temp_path {prefix / 'tmp' / kind};")
            continue
        out.append(line)
    if not done_upstream or listens != 1:
        raise ValueError(f"{DEPLOY_CONF} changed shape: expected one `listen` and `upstream {UPSTREAM}` servers")
    head = ["daemon off;", f"pid {prefix / 'nginx.pid'};", f"error_log {prefix / 'error.log'} warn;"]
    return "\n".join(head + out) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalNginx:
    """nginx as a non-daemon child process on a free loopback port, proxying to `backends` (host:port)."""

    def __init__(
        self,
        backends: list[str],
        prefix: Path,
        port: int | None = None,
        workers: int | None = None,
        nginx: str | None = None,
        template: Path = DEPLOY_CONF,
    ) -> None:
        exe = nginx or find_nginx()
        if not exe:
            raise FileNotFoundError("nginx is not installed (apt-get install -y nginx)")
        self.nginx = exe
        self.prefix = Path(prefix)
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(
            render_conf(template.read_text(), f"127.0.0.1:{self.port}", backends, self.prefix, workers)
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> LocalNginx:
        err = self.prefix / "error.log"
        self.proc = subprocess.Popen(
            [self.nginx, "-c", str(self.conf), "-p", str(self.prefix), "-e", str(err)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "w"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nginx did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        text = []
        for name in ("stderr.log", "error.log"):
            p = self.prefix / name
            if p.exists():
                text.append(p.read_text())
        return "\n".join(text)

    def pids(self) -> list[int]:
        """The master and its workers (for CPU accounting)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        return pids

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # a throw-away instance: fast shutdown, open WebSockets are cut
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LocalNginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
