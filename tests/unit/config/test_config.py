"""Configuration: upstream's defaults key by key, and a table of bad configs, each of which
must name its YAML key path in one line and exit with status 2."""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from paqet.config import ConfigError, load_config, load_config_text

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
CLIENT = {"role": "client", "socks5": [{"listen": "127.0.0.1:1080"}],
          "network": {"interface": "eth0", "ipv4": {"addr": "198.18.0.1:0", "router_mac": "02:00:00:00:00:01"}},
          "server": {"addr": "198.18.0.2:9999"},
          "transport": {"protocol": "kcp", "kcp": {"key": "k"}}}
SERVER = {"role": "server", "listen": {"addr": ":9999"},
          "network": {"interface": "eth0", "ipv4": {"addr": "198.18.0.2:9999", "router_mac": "02:00:00:00:00:02"}},
          "transport": {"protocol": "kcp", "kcp": {"key": "k"}}}


def load(d):
    return load_config_text(yaml.safe_dump(d))


def with_(base, path, value):
    d = copy.deepcopy(base)
    cur = d
    parts = path.split(".")
    for p in parts[:-1]:
        if p.endswith("]"):
            name, idx = p[:-1].split("[")
            cur = cur[name][int(idx)]
        else:
            cur = cur.setdefault(p, {})
    if value is DELETE:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = value
    return d


DELETE = object()


def test_client_defaults_equal_upstream():
    c = load(CLIENT)
    k = c.transport.kcp
    assert c.log.level == "none"
    assert c.transport.conn == 1
    assert c.network.pcap.sockbuf == 4194304
    assert c.network.tcp.local_flag == ["PA"] and c.network.tcp.remote_flag == ["PA"]
    assert (k.mode, k.mtu, k.rcvwnd, k.sndwnd, k.block) == ("fast", 1350, 512, 128, "aes")
    assert (k.smuxbuf, k.streambuf, k.smuxkalive, k.smuxktimeout) == (4194304, 2097152, 2, 8)
    assert (k.dshard, k.pshard) == (0, 0)
    assert (k.nodelay, k.interval, k.resend, k.nocongestion, k.wdelay, k.acknodelay) == (0, 0, 0, 0, False, False)
    assert k.effective_mode() == (0, 30, 2, 1, True, False)
    assert c.local_flags == [0x18] and c.local_port == 0


def test_server_defaults_equal_upstream():
    s = load(SERVER)
    k = s.transport.kcp
    assert s.network.pcap.sockbuf == 8388608
    assert (k.rcvwnd, k.sndwnd) == (1024, 1024)
    assert (k.mode, k.mtu, k.block) == ("fast", 1350, "aes")
    assert s.local_port == 9999


@pytest.mark.parametrize("mode,want", [("normal", (0, 40, 2, 1, True, False)),
                                       ("fast", (0, 30, 2, 1, True, False)),
                                       ("fast2", (1, 20, 2, 1, False, True)),
                                       ("fast3", (1, 10, 2, 1, False, True))])
def test_mode_presets(mode, want):
    assert load(with_(CLIENT, "transport.kcp.mode", mode)).transport.kcp.effective_mode() == want


def test_zero_means_default_and_lenient_numbers():
    c = load(with_(with_(CLIENT, "transport.kcp.mtu", 0), "transport.conn", "4"))
    assert c.transport.kcp.mtu == 1350 and c.transport.conn == 4


def test_every_example_loads():
    for name in os.listdir(os.path.join(ROOT, "examples")):
        if name.endswith(".yaml"):
            assert load_config(os.path.join(ROOT, "examples", name)).role in ("client", "server")


BAD = [
    (CLIENT, "role", "boss", "role"),
    (CLIENT, "log.level", "verbose", "log.level"),
    (CLIENT, "transport.kcp.mtu", 20, "transport.kcp.mtu"),
    (CLIENT, "transport.kcp.mtu", 1600, "transport.kcp.mtu"),
    (CLIENT, "transport.kcp.mtu", "big", "transport.kcp.mtu"),
    (CLIENT, "transport.kcp.rcvwnd", 40000, "transport.kcp.rcvwnd"),
    (CLIENT, "transport.kcp.sndwnd", -1, "transport.kcp.sndwnd"),
    (CLIENT, "transport.kcp.mode", "turbo", "transport.kcp.mode"),
    (CLIENT, "transport.kcp.block", "rot13", "transport.kcp.block"),
    (CLIENT, "transport.kcp.key", "", "transport.kcp.key"),
    (CLIENT, "transport.kcp.smuxbuf", 100, "transport.kcp.smuxbuf"),
    (CLIENT, "transport.kcp.streambuf", 100, "transport.kcp.streambuf"),
    (CLIENT, "transport.kcp.streambuf", 8388608, "transport.kcp.streambuf"),
    (CLIENT, "transport.kcp.smuxkalive", 10, "transport.kcp.smuxktimeout"),
    (CLIENT, "transport.kcp.wdelay", "yes", "transport.kcp.wdelay"),
    (CLIENT, "transport.kcp.dshard", 10, "transport.kcp.pshard"),
    (CLIENT, "transport.kcp", DELETE, "transport.kcp"),
    (CLIENT, "transport.protocol", "quic", "transport.protocol"),
    (CLIENT, "transport.protocol", DELETE, "transport.protocol"),
    (CLIENT, "transport.conn", 300, "transport.conn"),
    (CLIENT, "transport.dialect", "alpha99", "transport.dialect"),
    (CLIENT, "server.addr", DELETE, "server.addr"),
    (CLIENT, "server.addr", "nohost", "server.addr"),
    (CLIENT, "server.addr", "198.18.0.2:70000", "server.addr"),
    (CLIENT, "socks5[0].listen", "127.0.0.1:0", "socks5[0].listen"),
    (CLIENT, "socks5[0].listen", 1080, "socks5[0].listen"),
    (CLIENT, "socks5", {"listen": "x"}, "socks5"),
    (CLIENT, "forward", [{"listen": "127.0.0.1:8080", "target": "example.com", "protocol": "tcp"}], "forward[0].target"),
    (CLIENT, "forward", [{"listen": "127.0.0.1:8080", "target": "198.18.0.9:80", "protocol": "sctp"}], "forward[0].protocol"),
    (CLIENT, "network.interface", "x" * 16, "network.interface"),
    (CLIENT, "network.ipv4.addr", "not-an-ip:0", "network.ipv4.addr"),
    (CLIENT, "network.ipv4.addr", "2001:2::1", "network.ipv4.addr"),
    (CLIENT, "network.ipv4.router_mac", "zz:bb", "network.ipv4.router_mac"),
    (CLIENT, "network.pcap.sockbuf", 100, "network.pcap.sockbuf"),
    (CLIENT, "network.pcap.sockbuf", 200 << 20, "network.pcap.sockbuf"),
    (CLIENT, "network.tcp.local_flag", ["PX"], "network.tcp.local_flag[0]"),
    (CLIENT, "network.tcp.remote_flag", ["PA"] * 65, "network.tcp.remote_flag"),
    (CLIENT, "network.firewall", "off", "network.firewall"),
    (SERVER, "listen.addr", DELETE, "listen.addr"),
    (SERVER, "listen.addr", ":0", "listen.addr"),
    (SERVER, "network.ipv4", DELETE, "network.ipv4.addr"),
    (SERVER, "network.ipv6", {"addr": "[2001:2::2]:9998"}, "network.ipv6.addr"),
]


@pytest.mark.parametrize("base,path,value,want", BAD, ids=[f"{b[1]}={b[2]!r}"[:60] for b in BAD])
def test_bad_config_names_its_key(base, path, value, want):
    with pytest.raises(ConfigError) as exc:
        load(with_(base, path, value))
    assert exc.value.path == want
    line = str(exc.value)
    assert "\n" not in line and line.startswith(want)


def test_conn_with_fixed_port():
    d = with_(with_(CLIENT, "network.ipv4.addr", "198.18.0.1:5000"), "transport.conn", 2)
    with pytest.raises(ConfigError) as exc:
        load(d)
    assert exc.value.path == "transport.conn"


@pytest.mark.parametrize("text,want", [("role: client\nrole: server\n", "line 2"),
                                       ("role: [client\n", "line"),
                                       ("", "role"), ("- a\n- b\n", "mapping")])
def test_yaml_problems(text, want):
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    assert want in str(exc.value)


def test_unknown_key_warns_with_its_path():
    c = load(with_(CLIENT, "transport.kcp.mtuu", 1200))
    assert any("transport.kcp.mtuu" in w for w in c.warnings)


def _paqet(*args, input=None):
    return subprocess.run([sys.executable, "-m", "paqet", *args], capture_output=True, text=True,
                          timeout=60, input=input)


def test_cli_bad_config_exit_2_one_line(tmp_path):
    src = open(os.path.join(ROOT, "examples", "client.yaml")).read()
    p = tmp_path / "c.yaml"
    p.write_text(src.replace("# mtu: 1350", "mtu: 20"))
    r = _paqet("run", "-c", str(p))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "transport.kcp.mtu" in lines[0] and "50-1500" in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_misspelt_key_warns(tmp_path):
    src = open(os.path.join(ROOT, "examples", "client.yaml")).read()
    p = tmp_path / "c.yaml"
    p.write_text(src.replace('    mode: "fast"', '    mod: "fast"'))
    r = _paqet("run", "--check", "-c", str(p))
    assert r.returncode == 0
    assert "transport.kcp.mod" in r.stdout + r.stderr


@pytest.mark.parametrize("args", [["run", "-c", "/nonexistent/x.yaml"], ["ping", "-c", "/nonexistent"],
                                  ["dump", "-c", "/nonexistent"]])
def test_cli_missing_file(args):
    r = _paqet(*args)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_cli_role_mismatch():
    r = _paqet("dump", "-c", os.path.join(ROOT, "examples", "client.yaml"))
    assert r.returncode == 2 and "server" in r.stderr


def test_secret_is_64_hex():
    a, b = _paqet("secret").stdout.strip(), _paqet("secret").stdout.strip()
    assert len(a) == 64 and int(a, 16) >= 0 and a != b


@pytest.mark.parametrize("cmd", ["run", "secret", "version", "ping", "dump"])
def test_help(cmd):
    r = _paqet(cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_version():
    r = _paqet("version")
    assert r.returncode == 0 and "v1.0.0-alpha.21" in r.stdout and r.stdout.startswith("Version:")
