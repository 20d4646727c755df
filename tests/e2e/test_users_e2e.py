"""Users and SIGHUP on real `paqet run` processes over raw frames between namespaces:
two users with their own keys downloading at once, each counted in `paqet stats --json`;
a key not in the list getting nothing through; a user removed by SIGHUP cut off while
the other's download finishes intact; a forward added and one removed by SIGHUP; a broken
file on SIGHUP refused with one line while a download runs on."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from paqetlab import (PY, Paqet, client_config, http_server, make_blob, server_config,
                      tempdir, wait_port, write_config)

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
KEYS = {"alice": "key-of-alice", "bob": "key-of-bob"}


def users_server(topo, d, users, *, level="info"):
    cfg = server_config(topo, level=level)
    del cfg["transport"]["kcp"]["key"]
    cfg["users"] = [{"name": n, "key": KEYS[n]} for n in users]
    cfg["stats"] = {"socket": f"{d}/server.sock", "log_interval": 0}
    return cfg


def client(topo, key, socks_port, **kw):
    cfg = client_config(topo, socks_port, key=key, **kw)
    cfg["stats"] = {"socket": "off"}
    return cfg


def stats(lab, topo, d) -> dict:
    r = lab.run(topo.server, PY, "-m", "paqet", "stats", "--socket", f"{d}/server.sock",
                "--json", check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_curl(lab, ns, url, socks_port, out, *, rate=None, max_time=120):
    cmd = ["curl", "-sS", "--max-time", str(max_time), "-x", f"socks5h://127.0.0.1:{socks_port}",
           "-o", out, "-w", "%{http_code} %{size_download} %{size_header}"]
    if rate:
        cmd += ["--limit-rate", rate]
    return lab.popen(ns, cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_two_users_counted_and_a_foreign_key_refused(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        make_blob(d, "a", 24 << 20)
        make_blob(d, "b", 12 << 20)
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, users_server(topo, d, ["alice", "bob"]), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        a = Paqet(lab, topo.client, client(topo, KEYS["alice"], 1080), "alice", d)
        b = Paqet(lab, topo.client, client(topo, KEYS["bob"], 1081), "bob", d)
        m = Paqet(lab, topo.client, client(topo, "not-a-user", 1082), "mallory", d)
        for port in (1080, 1081, 1082):
            assert wait_port(lab, topo.client, port)
        assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)
        url = f"http://{topo.server_ip4}:8000/"
        ca = start_curl(lab, topo.client, url + "a", 1080, f"{d}/got-a")
        cb = start_curl(lab, topo.client, url + "b", 1081, f"{d}/got-b")
        got = {}
        for name, p in (("alice", ca), ("bob", cb)):
            out, err = p.communicate(timeout=150)
            code, body, head = out.split()
            assert code == "200", (out, err)
            got[name] = int(body) + int(head)
        assert got["alice"] > 24 << 20 and got["bob"] > 12 << 20
        users = stats(lab, topo, d)["users"]
        for name in ("alice", "bob"):
            sent = users[name]["bytes_out"]
            print(f"{name}: curl received {got[name]} bytes, stats bytes_out {sent} "
                  f"(+{(sent - got[name]) / got[name] * 100:.3f} %)")
            assert got[name] <= sent <= got[name] * 1.01
            assert users[name]["sessions"] == 1 and users[name]["bytes_in"] > 0
        r = lab.run(topo.client, "curl", "-sS", "--max-time", "5", "-x",
                    "socks5h://127.0.0.1:1082", "-o", "/dev/null", "-w", "%{size_download}",
                    url + "b", check=False, timeout=20)
        assert r.returncode != 0 and r.stdout in ("", "0"), (r.returncode, r.stdout)
        snap = stats(lab, topo, d)
        assert set(snap["users"]) == {"alice", "bob"} and snap["sessions"] == 2
        assert snap["drops"]["bad_crc"] > 0
        for p in (m, b, a, srv):
            p.stop()


def test_sighup_removes_a_user_and_the_other_download_finishes(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        digest = make_blob(d, "big", 24 << 20)
        make_blob(d, "small", 1 << 20)
        http_server(lab, topo.server, d)
        scfg = users_server(topo, d, ["alice", "bob"])
        srv = Paqet(lab, topo.server, scfg, "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        a = Paqet(lab, topo.client, client(topo, KEYS["alice"], 1080), "alice", d)
        b = Paqet(lab, topo.client, client(topo, KEYS["bob"], 1081), "bob", d)
        for port in (1080, 1081):
            assert wait_port(lab, topo.client, port)
        assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)
        url = f"http://{topo.server_ip4}:8000/"
        # 24 MiB at 4 MB/s: about six seconds, the SIGHUP lands in the middle
        ca = start_curl(lab, topo.client, url + "big", 1080, f"{d}/got-a", rate="4M")
        cb = start_curl(lab, topo.client, url + "big", 1081, f"{d}/got-b", rate="4M")
        assert wait_for(lambda: stats(lab, topo, d)["users"]["bob"]["bytes_out"] > 1 << 20)
        assert stats(lab, topo, d)["sessions"] == 2
        write_config(srv.path, users_server(topo, d, ["alice"]))
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: stats(lab, topo, d)["sessions"] == 1)
        took = time.monotonic() - t0
        print(f"bob's session closed {took * 1000:.0f} ms after SIGHUP (incl. paqet stats runs)")
        snap = stats(lab, topo, d)
        assert list(snap["users"]) == ["alice"]
        assert [s["user"] for s in snap["session_list"]] == ["alice"]
        assert "user bob removed" in srv.log() and "users -bob" in srv.log()
        out, err = ca.communicate(timeout=150)
        assert out.split()[:2] == ["200", str(24 << 20)], (out, err)
        assert sha256(f"{d}/got-a") == digest
        out, err = cb.communicate(timeout=150)
        assert out.split()[1] != str(24 << 20), (out, err)  # bob's download was cut
        r = lab.run(topo.client, "curl", "-sS", "--max-time", "5", "-x",
                    "socks5h://127.0.0.1:1081", "-o", "/dev/null", url + "small",
                    check=False, timeout=20)
        assert r.returncode != 0  # and a new one fails
        for p in (b, a, srv):
            p.stop()


def test_sighup_forwards_and_a_broken_file(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        digest = make_blob(d, "big", 16 << 20)
        with open(f"{d}/small", "w") as f:
            f.write("hello through a forward\n")
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        fwd = {"target": f"{topo.server_ip4}:8000", "protocol": "tcp"}
        ccfg = client(topo, "e2e-key", 1080, forward=[{"listen": "127.0.0.1:7001", **fwd}])
        cli = Paqet(lab, topo.client, ccfg, "client", d)
        assert wait_port(lab, topo.client, 7001), cli.log()
        assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)

        def get(port):
            return lab.run(topo.client, "curl", "-sS", "--max-time", "10",
                           f"http://127.0.0.1:{port}/small", check=False, timeout=20)
        assert get(7001).stdout == "hello through a forward\n"
        running = start_curl(lab, topo.client, f"http://{topo.server_ip4}:8000/big", 1080,
                             f"{d}/got", rate="4M")
        ccfg["forward"] = [{"listen": "127.0.0.1:7002", **fwd}]
        write_config(cli.path, ccfg)
        cli.proc.send_signal(signal.SIGHUP)
        assert cli.wait_log("+forward[0] 127.0.0.1:7002"), cli.log()
        assert get(7002).stdout == "hello through a forward\n"
        refused = get(7001)
        assert refused.returncode == 7, (refused.returncode, refused.stderr)  # refused
        before = cli.log().count("\n")
        with open(cli.path, "a") as f:
            f.write("transport: [this is not\n")
        cli.proc.send_signal(signal.SIGHUP)
        assert cli.wait_log("reload refused"), cli.log()
        cli.proc.send_signal(signal.SIGUSR1)  # its lines mark the end of what the reload said
        assert cli.wait_log("stats backend"), cli.log()
        new = cli.log().splitlines()[before:]
        new = new[:next(i for i, x in enumerate(new) if "] stats " in x)]
        assert len(new) == 1 and "[ERROR] reload refused: invalid YAML" in new[0], new
        assert get(7002).stdout == "hello through a forward\n"  # the old config in force
        out, err = running.communicate(timeout=150)
        assert out.split()[:2] == ["200", str(16 << 20)], (out, err)
        assert sha256(f"{d}/got") == digest
        cli.stop()
        srv.stop()
