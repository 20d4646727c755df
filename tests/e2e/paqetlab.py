"""Running real `paqet run` processes in network namespaces (tests, demo and benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import yaml

PY = sys.executable


def write_config(path: str, cfg: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def server_config(topo, port=9999, *, mode="fast3", block="aes", key="e2e-key", fec=(0, 0),
                  ipv6=False, explicit=True, level="info", extra_kcp=None, firewall="managed",
                  driver="auto"):
    net = {"interface": topo.server_if, "firewall": firewall, "driver": driver}
    if ipv6:
        net["ipv6"] = {"addr": f"[{topo.server_ip6}]:{port}"}
    else:
        net["ipv4"] = {"addr": f"{topo.server_ip4}:{port}"}
    kcp = {"mode": mode, "block": block, "key": key}
    if fec[0]:
        kcp.update(dshard=fec[0], pshard=fec[1])
    kcp.update(extra_kcp or {})
    return {"role": "server", "log": {"level": level}, "listen": {"addr": f":{port}"},
            "network": net, "transport": {"protocol": "kcp", "kcp": kcp}}


def client_config(topo, socks_port=1080, port=9999, *, mode="fast3", block="aes", key="e2e-key",
                  fec=(0, 0), ipv6=False, explicit=True, level="info", conn=1, extra=None,
                  extra_kcp=None, forward=None, socks_auth=None, dialect="auto",
                  firewall="managed"):
    net = {"firewall": firewall}
    if explicit:
        net["interface"] = topo.client_if
        if ipv6:
            net["ipv6"] = {"addr": f"[{topo.client_ip6}]:0"}
        else:
            net["ipv4"] = {"addr": f"{topo.client_ip4}:0"}
    kcp = {"mode": mode, "block": block, "key": key}
    if fec[0]:
        kcp.update(dshard=fec[0], pshard=fec[1])
    kcp.update(extra_kcp or {})
    server = f"[{topo.server_ip6}]:{port}" if ipv6 else f"{topo.server_ip4}:{port}"
    socks = {"listen": f"127.0.0.1:{socks_port}"}
    if socks_auth:
        socks.update(username=socks_auth[0], password=socks_auth[1])
    cfg = {"role": "client", "log": {"level": level}, "socks5": [socks],
           "network": net, "server": {"addr": server},
           "transport": {"protocol": "kcp", "conn": conn, "dialect": dialect, "kcp": kcp}}
    if forward:
        cfg["forward"] = forward
    cfg.update(extra or {})
    return cfg


class Paqet:
    """A `paqet run` process inside a namespace; its output goes to a log file."""

    def __init__(self, lab, ns: str, cfg: dict, name: str, workdir: str,
                 env: dict | None = None) -> None:
        self.path = write_config(os.path.join(workdir, f"{name}.yaml"), cfg)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.logf = open(self.log_path, "w")
        env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
        self.proc = lab.popen(ns, [PY, "-m", "paqet", "run", "-c", self.path],
                              stdout=self.logf, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        self.logf.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, text: str, timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.05)
        return False

    def stop(self, sig=15, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_port(lab, ns: str, port: int, timeout: float = 15.0, host="127.0.0.1") -> bool:
    code = (f"import socket,time,sys\nend=time.time()+{timeout}\n"
            f"while time.time()<end:\n"
            f"  s=socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)\n"
            f"  try:\n    s.connect(('{host}',{port})); sys.exit(0)\n"
            f"  except OSError: time.sleep(0.05)\n  finally: s.close()\nsys.exit(1)\n")
    return lab.run(ns, PY, "-c", code, check=False, timeout=timeout + 5).returncode == 0


def http_server(lab, ns: str, directory: str, port: int = 8000, bind: str = "::"):
    return lab.popen(ns, [PY, "-m", "http.server", str(port), "--bind", bind, "--directory",
                          directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_blob(directory: str, name: str, size: int) -> str:
    import hashlib
    path = os.path.join(directory, name)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        block = os.urandom(1 << 20)
        while left > 0:
            chunk = block[:min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def curl(lab, ns: str, url: str, socks_port: int = 1080, timeout: float = 120, auth=None,
         out: str | None = None) -> subprocess.CompletedProcess:
    proxy = f"socks5h://{auth[0]}:{auth[1]}@127.0.0.1:{socks_port}" if auth else \
        f"socks5h://127.0.0.1:{socks_port}"
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-x", proxy, "-o", out or "/dev/null",
           "-w", "%{http_code} %{size_download} %{speed_download}", url]
    return lab.run(ns, *cmd, check=False, timeout=timeout + 10)


def tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="paqet-e2e-")


__all__ = ["Paqet", "server_config", "client_config", "curl", "http_server", "make_blob",
           "wait_port", "tempdir", "socket"]
