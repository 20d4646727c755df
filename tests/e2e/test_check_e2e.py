"""`paqet check` in network namespaces against a running server: a good client config
(auto-detected network) passes every check with exit 0; a wrong key, a wrong server address
and missing manual firewall rules each fail with a `fix:` line and exit 1."""

import os
import re
import subprocess

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import PY, Paqet, client_config, server_config, tempdir, write_config

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


class Site:
    pass


@pytest.fixture(scope="module")
def site():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        s = Site()
        s.lab, s.topo, s.dir, s.server = lab, topo, d, srv
        yield s
        srv.stop()


def check(site, ns, cfg, name):
    path = write_config(os.path.join(site.dir, f"{name}.yaml"), cfg)
    r = site.lab.run(ns, PY, "-m", "paqet", "check", "-c", path, "-n", "2", "-W", "1.5",
                     check=False, timeout=60)
    print(r.stdout)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def test_good_client_config_passes(site):
    t = site.topo
    r = check(site, t.client, client_config(t, explicit=False), "good")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    server_mac = site.lab.mac(t.server, t.server_if)
    assert re.search(rf"\[ OK \] network: interface {t.client_if}, IPv4 {t.client_ip4}, .*"
                     rf"next hop {t.server_ip4} \(on the link\) at {server_mac}", out), out
    for name in ("config", "privileges", "raw socket", "firewall", "tunnel"):
        assert f"[ OK ] {name}:" in out, out
    assert "2/2 PPONG from 198.18.0.2:9999" in out and "fix:" not in out, out
    assert out.strip().endswith("all checks passed")


def test_server_config_passes_beside_the_running_server(site):
    t = site.topo
    r = check(site, t.server, server_config(t), "server-check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "a paqet on this port is running" in r.stdout, r.stdout
    assert "tunnel" not in r.stdout


def test_wrong_key_fails_the_tunnel_check_with_a_fix(site):
    t = site.topo
    r = check(site, t.client, client_config(t, key="not-the-server-key"), "badkey")
    assert r.returncode == 1, r.stdout
    lines = r.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("[FAIL] tunnel:"))
    assert "no answer from 198.18.0.2:9999" in lines[i]
    assert lines[i + 1].strip().startswith("fix:") and "transport.kcp.key" in lines[i + 1]
    assert "[ OK ] network:" in r.stdout and "1 problem(s) found" in r.stdout


def test_wrong_server_address_fails_with_a_fix(site):
    t = site.topo
    cfg = client_config(t, explicit=False)
    cfg["server"]["addr"] = "198.18.0.77:9999"  # on the link, but nobody has it
    r = check(site, t.client, cfg, "badaddr")
    assert r.returncode == 1, r.stdout
    assert "[FAIL] network:" in r.stdout and "198.18.0.77" in r.stdout, r.stdout
    assert "router_mac" in r.stdout.split("[FAIL] network:")[1].splitlines()[1]
    assert "[SKIP] tunnel:" in r.stdout


def test_manual_firewall_rules_missing_then_added(site):
    t = site.topo
    cfg = server_config(t, port=9998, firewall="manual")
    r = check(site, t.server, cfg, "manual")
    assert r.returncode == 1, r.stdout
    fix = r.stdout.split("[FAIL] firewall:")[1].splitlines()[1]
    cmds = fix.split("fix: add them: ")[1].split("; ")
    assert len(cmds) == 3 and all("9998" in c for c in cmds), fix
    for c in cmds:  # the fix line, followed literally
        site.lab.run(t.server, *c.split())
    r = check(site, t.server, cfg, "manual")
    assert r.returncode == 0, r.stdout
    assert "[ OK ] firewall: manual: notrack and RST-drop rules for TCP port 9998" in r.stdout


def test_non_root_with_the_units_capabilities_passes(site):
    """What packaging/paqet.service grants (an unprivileged user with CAP_NET_RAW and
    CAP_NET_ADMIN as ambient capabilities, nothing else, no new privileges) is enough: the
    raw socket, the managed nftables rules (nft runs as a child process) and the tunnel all
    work, for `paqet check` and for the unit's `paqet run` (a server, rules removed at stop)."""
    t = site.topo
    probe = site.lab.run(t.client, *AS_UNIT, PY, "-c", "import paqet", check=False, timeout=60)
    if probe.returncode != 0:
        # e.g. a checkout under a mode-0700 directory (`mktemp -d`): the unit's user cannot
        # read the code, which says nothing about the capabilities under test
        pytest.skip("user nobody cannot import paqet from this checkout "
                    f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else '?'}); "
                    "clone it under a world-readable directory to run this test")
    os.chmod(site.dir, 0o755)
    path = write_config(os.path.join(site.dir, "caps.yaml"), client_config(t, explicit=False))
    os.chmod(path, 0o644)
    r = site.lab.run(t.client, *AS_UNIT, PY, "-m", "paqet", "check", "-c", path, "-n", "2",
                     check=False, timeout=60)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ OK ] privileges: not root, with CAP_NET_ADMIN and CAP_NET_RAW" in r.stdout
    assert "[ OK ] tunnel: 2/2 PPONG" in r.stdout
    # the unit's ExecStart, a server on another port, as that user
    spath = write_config(os.path.join(site.dir, "caps-server.yaml"), server_config(t, port=9996))
    os.chmod(spath, 0o644)
    log = open(os.path.join(site.dir, "caps-server.log"), "w")
    srv = site.lab.popen(t.server, [*AS_UNIT, PY, "-m", "paqet", "run", "-c", spath],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: "paqet_9996_" in nft_tables(site)), open(log.name).read()
        r = check(site, t.client, client_config(t, port=9996), "caps-client")
        assert r.returncode == 0 and "PPONG from 198.18.0.2:9996" in r.stdout, r.stdout
    finally:
        srv.terminate()
        srv.wait(10)
    assert srv.returncode == 0, open(log.name).read()
    assert "paqet_9996_" not in nft_tables(site), "the rules outlived the server"


CAPS = "-all,+net_raw,+net_admin"
AS_UNIT = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
           f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}", f"--bounding-set={CAPS}"]


def nft_tables(site) -> str:
    return site.lab.run(site.topo.server, "nft", "list", "tables").stdout


def wait_for(cond, timeout=15.0) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_ports_taken_by_other_programs(site):
    """A program already on the client's SOCKS5 port, and one listening on the server's
    paqet port (paqet's rules would break its connections): each is named, with a fix."""
    t = site.lab
    topo = site.topo
    listener = ("import socket,sys,time\ns=socket.socket()\n"
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print('up', flush=True)\n"
                "time.sleep(60)\n")
    procs = [t.popen(topo.client, [PY, "-c", listener, "127.0.0.1", "1081"],
                     stdout=subprocess.PIPE, text=True),
             t.popen(topo.server, [PY, "-c", listener, "0.0.0.0", "9997"],
                     stdout=subprocess.PIPE, text=True)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "up"
        r = check(site, topo.client, client_config(topo, socks_port=1081), "busy")
        assert r.returncode == 1, r.stdout
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("[FAIL] ports:"))
        assert "127.0.0.1:1081" in line, line  # `ip netns exec` execs: its PID is python's
        assert re.search(rf"in use by python[\d.]* \(pid {procs[0].pid}\)", line), line
        assert "[ OK ] tunnel:" in r.stdout  # the rest still checked
        r = check(site, topo.server, server_config(topo, port=9997), "busy-server")
        assert r.returncode == 1, r.stdout
        assert re.search(r"\[FAIL\] ports: TCP port 9997 is also a listening port of python",
                         r.stdout), r.stdout
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
