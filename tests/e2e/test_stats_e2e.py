"""Live stats from real `paqet run` processes over raw frames between namespaces: `paqet stats`
(table and --json) after a download, the Prometheus endpoint, the periodic log line, and the
control socket gone (one-line error) after the client stops."""

import json
import os
import stat

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import (PY, Paqet, client_config, curl, http_server, make_blob, server_config,
                      tempdir, wait_port)

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]
SIZE = 5 << 20


def test_stats_of_running_instances():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        make_blob(d, "blob5", SIZE)
        http_server(lab, topo.server, d)
        scfg = server_config(topo)
        scfg["stats"] = {"socket": f"{d}/server.sock", "prometheus": "127.0.0.1:9108"}
        ccfg = client_config(topo)
        ccfg["stats"] = {"socket": f"{d}/client.sock", "log_interval": 1}
        server = Paqet(lab, topo.server, scfg, "server", d)
        assert server.wait_log("listening for packets"), server.log()
        client = Paqet(lab, topo.client, ccfg, "client", d)
        try:
            assert wait_port(lab, topo.client, 1080), client.log()
            assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)
            r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob5")
            assert r.stdout.startswith("200 "), (r.stdout, r.stderr)

            mode = os.stat(f"{d}/client.sock").st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            out = lab.run(topo.client, PY, "-m", "paqet", "stats", "-c", client.path, "--json",
                          check=False, timeout=30)
            assert out.returncode == 0, out.stderr
            snap = json.loads(out.stdout)
            assert snap["role"] == "client" and snap["sessions"] == 1
            assert snap["totals"]["rx_bytes"] > SIZE and snap["totals"]["streams_opened"] >= 1
            assert snap["session_list"][0]["srtt_ms"] > 0

            table = lab.run(topo.server, PY, "-m", "paqet", "stats", "--socket",
                            f"{d}/server.sock", check=False, timeout=30)
            assert table.returncode == 0, table.stderr
            assert "paqet server" in table.stdout and f"{topo.client_ip4}:" in table.stdout

            metrics = lab.run(topo.server, "curl", "-sS", "--max-time", "10",
                              "http://127.0.0.1:9108/metrics", check=False, timeout=20)
            assert metrics.returncode == 0, metrics.stderr
            sent = [ln for ln in metrics.stdout.splitlines()
                    if ln.startswith("paqet_sent_bytes_total ")]
            assert sent and float(sent[0].split()[1]) > SIZE, metrics.stdout[:2000]
            assert 'paqet_drops_total{reason="bad_crc"}' in metrics.stdout

            assert client.wait_log("stats: 1 session(s)", 10), client.log()
        finally:
            client.stop()
            server.stop()
        assert not os.path.exists(f"{d}/client.sock") and not os.path.exists(f"{d}/server.sock")
        gone = lab.run(topo.client, PY, "-m", "paqet", "stats", "-c", client.path, check=False,
                       timeout=30)
        assert gone.returncode == 1 and gone.stdout == ""
        assert gone.stderr.strip().count("\n") == 0 and "no paqet instance" in gone.stderr
