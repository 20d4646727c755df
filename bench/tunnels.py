"""The tunnels the namespace benchmarks run side by side (bench/compare.py, bench/wan.py): ours
(`paqet run`, raw frames), Debian's kcptun (kcp-go + smux over UDP), and our client stack
against kcptun-server (bench/kcptun_client.py, UDP). Each exposes TCP forwards on the
client side at 127.0.0.1:port, port+1, ... (one per client process) to one target on the
server, and is stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "e2e"),
           os.path.join(ROOT, "tests", "interop")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from paqetlab import PY, Paqet, client_config, server_config, wait_port  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
FWD_PORT = 8081
KCP_PORT = 29900
KCPTUN_KEY = "bench"
#: the windows kcptun gets everywhere (kcptun's client defaults 128/512; its server 1024/1024,
#: as paqet's server)
KCPTUN_WINDOWS = {"client": (128, 512), "server": (1024, 1024)}
KINDS = ("paqet", "kcptun", "paqet-kcptun")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cannot_run() -> str | None:
    """Why a side-by-side bench cannot run here (namespaces, kcptun), or None."""
    import shutil
    import netlab
    reason = netlab.available()
    if reason:
        return reason
    if shutil.which("kcptun-server") is None or shutil.which("kcptun-client") is None:
        return "kcptun is not installed (apt-get install kcptun)"
    return None


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK
    except (OSError, IndexError):
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def set_key(cfg: dict, dotted: str, value) -> None:
    """cfg["a"]["b"]["c"] = value for "a.b.c" (missing levels made; a list index is a
    number: "forward.0.listen")."""
    node, keys = cfg, dotted.split(".")
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[int(k)]
            continue
        nxt = node.get(k)
        if not isinstance(nxt, (dict, list)):
            nxt = node[k] = {}
        node = nxt
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def parse_set(items) -> list[tuple[str, object]]:
    """--set key=value (value as YAML: 2048, true, "text") -> [(key, value)]."""
    import yaml
    out = []
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set wants key=value, not {item!r}")
        out.append((key.strip(), yaml.safe_load(raw)))
    return out


class Side:
    """One tunnel (ours, kcptun, or our client against kcptun-server) between the
    namespaces. `clients` client processes, each with a TCP forward at 127.0.0.1:port+i to
    `target` (default: the server's HTTP port). Ours: `overrides` [(dotted YAML key, value)]
    apply to both configs, `env` to the paqet processes (PYTHONPATH: another build);
    `workdir` holds configs, logs and control sockets."""

    def __init__(self, lab, topo, kind, d, mode, block, fec, http_port=8000, port=None,
                 clients=1, target=None, overrides=(), env=None, label=None,
                 first_byte="/small"):
        if kind not in KINDS:
            raise ValueError(f"unknown tunnel kind {kind!r}")
        self.lab, self.topo, self.kind, self.d = lab, topo, kind, d
        self.mode, self.block, self.fec, self.http_port = mode, block, fec, http_port
        self.port = port if port is not None else FWD_PORT + (kind != "paqet")
        self.clients = clients
        self.target = target or f"{topo.server_ip4}:{http_port}"
        self.overrides, self.env = list(overrides), env
        self.label = label or kind
        self.first_byte = first_byte   # an HTTP path start() fetches (None: no fetch)
        self.host = "127.0.0.1"   # where the forwards listen (client namespace)
        self.procs: list = []
        self.server = None
        self.client_procs: list = []

    @property
    def ports(self) -> list[int]:
        return [self.port + i for i in range(self.clients)]

    def _ours_configs(self):
        topo = self.topo
        scfg = server_config(topo, mode=self.mode, block=self.block, fec=self.fec, level="warn")
        scfg["stats"] = {"socket": self.stats_path("server")}
        ccfgs = []
        for i, port in enumerate(self.ports):
            fwd = [{"listen": f"127.0.0.1:{port}", "target": self.target, "protocol": "tcp"}]
            c = client_config(topo, mode=self.mode, block=self.block, fec=self.fec,
                              level="warn", forward=fwd)
            c["stats"] = {"socket": self.stats_path("client", i)}
            c.pop("socks5", None)   # forwards only: several clients run side by side
            ccfgs.append(c)
        for cfg in [scfg, *ccfgs]:
            for key, value in self.overrides:
                set_key(cfg, key, value)
        return scfg, ccfgs

    def stats_path(self, role: str, i: int = 0) -> str:
        return os.path.join(self.d, f"{self.label}-{role}{i if role == 'client' else ''}.sock")

    def _kcptun_common(self):
        return ["--key", KCPTUN_KEY, "--crypt", self.block, "--mode", self.mode, "--mtu", "1350",
                "--datashard", str(self.fec[0]), "--parityshard", str(self.fec[1]),
                "--nocomp", "--smuxver", "2", "--quiet", "--dscp", "46"]

    def _kcptun_server(self):
        snd, rcv = KCPTUN_WINDOWS["server"]
        return self.lab.popen(self.topo.server, [
            "kcptun-server", "-l", f"{self.topo.server_ip4}:{KCP_PORT}", "-t", self.target,
            "--sndwnd", str(snd), "--rcvwnd", str(rcv), *self._kcptun_common()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> float:
        """Start every process, wait for every forward to listen and (with `first_byte`)
        for the first fetched byte through the first client; returns the seconds taken."""
        lab, topo = self.lab, self.topo
        t0 = time.monotonic()
        env = dict(os.environ, **(self.env or {}))
        if self.kind == "paqet":
            scfg, ccfgs = self._ours_configs()
            self.server = Paqet(lab, topo.server, scfg, f"{self.label}-srv", self.d, env=env)
            self.client_procs = [Paqet(lab, topo.client, c, f"{self.label}-cli{i}", self.d,
                                       env=env) for i, c in enumerate(ccfgs)]
            self.procs = [self.server.proc] + [c.proc for c in self.client_procs]
        elif self.kind == "kcptun":
            snd, rcv = KCPTUN_WINDOWS["client"]
            self.procs = [self._kcptun_server()] + [
                lab.popen(topo.client, ["kcptun-client", "-l", f"127.0.0.1:{port}", "-r",
                                        f"{topo.server_ip4}:{KCP_PORT}", "--sndwnd", str(snd),
                                        "--rcvwnd", str(rcv), *self._kcptun_common()],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for port in self.ports]
        else:  # our client stack (UDP) against kcptun-server
            _, ccfgs = self._ours_configs()
            self.procs = [self._kcptun_server()]
            for i, (port, c) in enumerate(zip(self.ports, ccfgs)):
                c["network"] = {"driver": "udp", "ipv4": {"addr": f"{topo.client_ip4}:0"}}
                from paqetlab import write_config
                path = write_config(os.path.join(self.d, f"{self.label}-cli{i}.yaml"), c)
                log = open(os.path.join(self.d, f"{self.label}-cli{i}.log"), "w")
                self.procs.append(lab.popen(topo.client, [
                    PY, os.path.join(HERE, "kcptun_client.py"), "--config", path,
                    "--listen", f"127.0.0.1:{port}", "--remote", f"{topo.server_ip4}:{KCP_PORT}",
                    "--kcptun-key", KCPTUN_KEY, "--stats-file", self.stats_path("client", i)],
                    stdout=log, stderr=subprocess.STDOUT, env=env))
        for port in self.ports:
            if not wait_port(lab, topo.client, port, timeout=20):
                self.stop()
                raise RuntimeError(f"{self.label} did not come up (port {port}); logs in {self.d}")
        if self.first_byte:  # first byte through the tunnel
            for _ in range(200):
                if self.fetch(self.first_byte, timeout=5) is not None:
                    break
        return time.monotonic() - t0

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.lab.procs = [p for p in self.lab.procs if p not in self.procs]

    def sender_stats(self, role: str, i: int = 0) -> dict | None:
        """KCP totals of one end ("server" or "client" i): {"retrans": .., "segments_out":
        .., ...}; None where this tunnel has no such figures (kcptun)."""
        if self.kind == "kcptun" or (self.kind == "paqet-kcptun" and role == "server"):
            return None
        path = self.stats_path(role, i)
        if self.kind == "paqet":
            from paqet.control import ControlError, query
            try:
                return query(path, timeout=5)["totals"]
            except (ControlError, OSError, KeyError, ValueError):
                return None
        # bench/kcptun_client.py writes its counters to the file on SIGUSR1
        proc = self.procs[1 + i]
        try:
            before = os.stat(path).st_mtime_ns
        except OSError:
            before = 0
        proc.send_signal(signal.SIGUSR1)
        for _ in range(100):
            try:
                if os.stat(path).st_mtime_ns != before:
                    with open(path) as f:
                        return json.load(f)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        return None

    def fetch(self, path, timeout=300, out="/dev/null"):
        r = self.lab.run(self.topo.client, "curl", "-sS", "--max-time", str(timeout), "-o", out,
                         "-w", "%{http_code} %{size_download} %{time_total}",
                         f"http://127.0.0.1:{self.port}{path}", check=False, timeout=timeout + 10)
        parts = r.stdout.split()
        if r.returncode != 0 or not parts or parts[0] != "200":
            return None
        return int(parts[1]), float(parts[2])

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)  # `ip netns exec` execs in place

    def rss(self) -> list[float]:
        """[server, client] resident set sizes, MB."""
        return [rss_mb(p.pid) for p in self.procs]
