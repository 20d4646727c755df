"""Issue 9's soak: mixed TCP and UDP traffic through a client and server in two namespaces for
SOAK_MINUTES (default 30; scripts/soak.sh [MINUTES]), every transfer checksummed, RSS and fd
count of both processes sampled every ~10 s.

Pass: zero bytes corrupted or lost, no failed operation; after warm-up (the first third of
the run, at most 5 minutes) RSS grows < 5 % on each side (medians over the first and the
last tenth of the samples); the fd count once traffic has
stopped (and UDP flows expired) is what it was before traffic started."""

import json
import os
import statistics
import time

import pytest

from conftest import netlab_unavailable
from paqetlab import PY, Paqet, client_config, server_config, tempdir, wait_port
import netlab

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
pytestmark = [pytest.mark.root, pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60) + 600)]
HERE = os.path.dirname(__file__)
TOOL = os.path.join(HERE, "socks_tool.py")
TARGET_PORT = 7100
SAMPLE_EVERY = 10.0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_pair(lab, topo, d, limits=None, level="warn"):
    """Targets, server and client (SOCKS5 1080, TCP forward 8081, UDP forward 5353)."""
    lab.popen(topo.server, [PY, os.path.join(HERE, "soak_target.py"), str(TARGET_PORT)])
    scfg = server_config(topo, level=level)
    fwd = [{"listen": "127.0.0.1:8081", "target": f"{topo.server_ip4}:{TARGET_PORT + 1}",
            "protocol": "tcp"},
           {"listen": "127.0.0.1:5353", "target": f"{topo.server_ip4}:{TARGET_PORT + 1}",
            "protocol": "udp"}]
    ccfg = client_config(topo, forward=fwd, level=level)
    if limits:
        scfg["limits"] = dict(limits)
        ccfg["limits"] = dict(limits)
    server = Paqet(lab, topo.server, scfg, "server", d)
    client = Paqet(lab, topo.client, ccfg, "client", d)
    assert wait_port(lab, topo.client, 1080), client.log()
    assert wait_port(lab, topo.server, TARGET_PORT + 1, host=topo.server_ip4)
    assert tunnel_works(lab, topo), (server.log()[-2000:], client.log()[-2000:])
    return server, client


def tunnel_works(lab, topo, timeout: float = 30.0) -> bool:
    """A SOCKS5 CONNECT to the echo target answers success within timeout (polled)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = lab.run(topo.client, PY, TOOL, "rep", "1080", topo.server_ip4, str(TARGET_PORT + 1),
                    check=False, timeout=30)
        if r.returncode == 0 and r.stdout.strip() == "0":
            return True
        time.sleep(0.5)
    return False


def test_soak():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    seconds = MINUTES * 60
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        server, client = start_pair(lab, topo, d, limits={"udp_idle_timeout": 5})
        pids = {"server": server.proc.pid, "client": client.proc.pid}
        time.sleep(2)
        fds_before = {k: fd_count(p) for k, p in pids.items()}
        out = os.path.join(d, "summary.json")
        gen = lab.popen(topo.client, [PY, os.path.join(HERE, "soak_traffic.py"), str(seconds),
                                      topo.server_ip4, str(TARGET_PORT), out])
        samples = []  # (t, {side: (rss_kb, fds)})
        t0 = time.monotonic()
        while gen.poll() is None and time.monotonic() - t0 < seconds + 300:
            time.sleep(SAMPLE_EVERY)
            assert server.proc.poll() is None and client.proc.poll() is None, \
                (server.log()[-2000:], client.log()[-2000:])
            s = {k: (rss_kb(p), fd_count(p)) for k, p in pids.items()}
            samples.append((time.monotonic() - t0, s))
            print(f"t={samples[-1][0]:6.0f}s " + "  ".join(
                f"{k}: rss {v[0] / 1024:.1f} MiB fds {v[1]}" for k, v in s.items()), flush=True)
        assert gen.wait(60) == 0, "traffic generator failed"
        time.sleep(12)  # UDP flows expire (udp_idle_timeout 5 s), closed streams settle
        fds_after = {k: fd_count(p) for k, p in pids.items()}
        with open(out) as f:
            summary = json.load(f)
        warm = min(seconds / 3, 300.0)
        steady = [s for t, s in samples if t >= warm]
        assert len(steady) >= 6, samples
        report = {"summary": summary, "fds_before": fds_before, "fds_after": fds_after}
        for side in pids:
            rss = [s[side][0] for s in steady]
            # medians over a tenth of the steady samples (at least 3): RSS swings by a few
            # MiB with the transfers in flight, and a 3-sample median at one end can land in
            # a dip (a 30-minute run measured +7.3 % that way while RSS was flat for the last
            # 20 minutes, below its peak at minute 10)
            w = max(3, len(rss) // 10)
            first, last = statistics.median(rss[:w]), statistics.median(rss[-w:])
            fds = [s[side][1] for s in steady]
            report[side] = {"rss_after_warmup_kb": first, "rss_end_kb": last,
                            "rss_growth_pct": round(100 * (last - first) / first, 2),
                            "rss_max_kb": max(rss), "rss_max_first_half_kb": max(rss[:len(rss) // 2]),
                            "rss_max_second_half_kb": max(rss[len(rss) // 2:]),
                            "fds_min": min(fds), "fds_max": max(fds)}
        print("SOAK SUMMARY " + json.dumps(report, indent=1), flush=True)
        assert summary["bytes_corrupted"] == 0 and summary["bytes_lost"] == 0, summary
        assert summary["errors"] == 0, summary["first_errors"]
        assert summary["operations"] > 0 and summary["bytes_checked"] > 0
        for side in pids:
            assert report[side]["rss_growth_pct"] < 5.0, report
            assert fds_after[side] <= fds_before[side], report
        server.stop()
        client.stop()
