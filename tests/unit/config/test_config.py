"""Configuration: upstream's defaults key by key, and a table of bad configs, each of which
must name its YAML key path in one line and exit with status 2."""

import copy
import logging
import os

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
    (SERVER, "network.ipv6", {"addr": "[2001:2::2]:9998"}, "network.ipv6.addr"),
    (SERVER, "network.ipv4.addr", "198.18.0.2:99999", "network.ipv4.addr"),
    (SERVER, "listen.addr", "198.18.0.2", "listen.addr"),
    (SERVER, "role", DELETE, "role"),
    (SERVER, "role", "Server", "role"),
    (with_(CLIENT, "transport.kcp.key", ""), "transport.kcp.block", "aes-128-gcm", "transport.kcp.key"),
    (with_(CLIENT, "transport.kcp.key", DELETE), "transport.kcp.block", "sm4", "transport.kcp.key"),
    (CLIENT, "network.ipv6", {"addr": "198.18.0.1:0"}, "network.ipv6.addr"),
    (CLIENT, "network.ipv6", {"addr": "[2001:2::1]:0", "router_mac": "02-00-00-00-00"}, "network.ipv6.router_mac"),
    (CLIENT, "network.ipv4.router_mac", "02:00:00:00:00:0g", "network.ipv4.router_mac"),
    (CLIENT, "forward", [{"listen": "127.0.0.1:0", "target": "198.18.0.9:80", "protocol": "tcp"}], "forward[0].listen"),
    (CLIENT, "forward", [{"listen": "127.0.0.1:8080", "target": "198.18.0.9:80"}], "forward[0].protocol"),
    (CLIENT, "forward", [{"listen": "127.0.0.1:8080", "target": "198.18.0.9:0", "protocol": "udp"}], "forward[0].target"),
    (CLIENT, "transport", "kcp", "transport"),
    (CLIENT, "network", ["eth0"], "network"),
    (CLIENT, "log", "debug", "log"),
    (CLIENT, "transport.kcp.nodelay", 2, "transport.kcp.nodelay"),
    (CLIENT, "transport.kcp.interval", 6000, "transport.kcp.interval"),
    (CLIENT, "transport.kcp.dshard", 300, "transport.kcp.dshard"),
    (CLIENT, "transport.kcp.smuxkalive", "2s", "transport.kcp.smuxkalive"),
    (CLIENT, "transport.kcp.acknodelay", 1, "transport.kcp.acknodelay"),
    (CLIENT, "socks5[0].username", ["a"], "socks5[0].username"),
    (CLIENT, "socks5[0].wait_dial", "yes", "socks5[0].wait_dial"),
    (CLIENT, "socks5[0].wait_dial", 1, "socks5[0].wait_dial"),
    (CLIENT, "http", [{"listen": "127.0.0.1:8080", "wait_dial": "true"}], "http[0].wait_dial"),
    (CLIENT, "network.tcp.local_flag", "PA", "network.tcp.local_flag"),
    (CLIENT, "network.tcp.remote_flag", ["PA", "pa"], "network.tcp.remote_flag[1]"),
    (CLIENT, "network.driver", "dpdk", "network.driver"),
    (CLIENT, "network.tcp.mode", "stateful", "network.tcp.mode"),
    (with_(CLIENT, "network.driver", "udp"), "network.tcp.mode", "handshake", "network.tcp.mode"),
    (SERVER, "network.tcp.keepalive", -1, "network.tcp.keepalive"),
]


@pytest.fixture
def quiet_paqet_logger():
    """main() routes the `paqet` logger to the captured stdout; put it back afterwards."""
    from paqet import logs
    lg = logging.getLogger("paqet")
    saved = (lg.handlers[:], lg.level, lg.propagate, logs._handler)
    yield
    lg.handlers[:], lg.level, lg.propagate, logs._handler = saved


@pytest.mark.parametrize("base,path,value,want", BAD, ids=[f"{b[1]}={b[2]!r}"[:60] for b in BAD])
def test_bad_config_names_its_key(base, path, value, want, tmp_path, capsys, quiet_paqet_logger):
    bad = with_(base, path, value)
    with pytest.raises(ConfigError) as exc:
        load(bad)
    assert exc.value.path == want
    line = str(exc.value)
    assert "\n" not in line and line.startswith(want + ":")
    # the same file through the CLI: one line on stderr naming the key, exit status 2
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    from paqet.cli.main import main
    with pytest.raises(SystemExit) as ex:
        main(["run", "--check", "-c", str(f)])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"paqet: {want}: ")


def test_bad_table_is_big_enough():
    assert len(BAD) >= 30 and len({b[3] for b in BAD}) >= 30


def test_range_message_says_what_is_allowed():
    with pytest.raises(ConfigError) as exc:
        load(with_(CLIENT, "transport.kcp.mtu", 20))
    assert str(exc.value) == "transport.kcp.mtu: invalid value 20: expected `int` >= 50 (allowed: 50-1500)"
    with pytest.raises(ConfigError) as exc:
        load(with_(CLIENT, "log.level", "verbose"))
    assert str(exc.value).endswith("(allowed: none, debug, info, warn, error, fatal)")


def test_long_values_are_shortened():
    with pytest.raises(ConfigError) as exc:
        load(with_(CLIENT, "network.tcp.remote_flag", ["PA"] * 65))
    assert len(str(exc.value)) < 200


def test_block_none_needs_no_key():
    for block in ("none", "null"):
        c = load(with_(with_(CLIENT, "transport.kcp.key", DELETE), "transport.kcp.block", block))
        assert c.transport.kcp.block == block and c.transport.kcp.key == ""


def test_network_addresses_may_be_omitted():
    c = load(with_(CLIENT, "network", {}))
    assert c.network.interface == "" and c.network.ipv4 is None and c.local_port == 0
    s = load(with_(SERVER, "network", {}))
    assert s.local_port == 9999  # listen.addr's port when no network address is given
    assert not s.warnings


def test_server_port_mismatch_warns():
    s = load(with_(SERVER, "listen.addr", ":8888"))
    assert s.local_port == 9999
    assert any("listen.addr port (8888)" in w and "network.ipv4.addr port (9999)" in w
               for w in s.warnings)


def test_tcp_mode_key():
    """network.tcp.mode (beyond upstream): stateless by default; handshake on either side;
    a handshake client's flag lists are not used, which it says."""
    assert load(CLIENT).network.tcp.mode == "stateless"
    assert load(CLIENT).network.tcp.keepalive == 15.0
    s = load(with_(with_(SERVER, "network.tcp.mode", "handshake"), "network.tcp.keepalive", 0))
    assert s.network.tcp.mode == "handshake" and s.network.tcp.keepalive == 0 and not s.warnings
    c = load(with_(with_(CLIENT, "network.tcp.mode", "handshake"), "network.tcp.local_flag", ["S"]))
    assert any("local_flag and remote_flag are not used" in w for w in c.warnings)
    assert not load(with_(CLIENT, "network.tcp.mode", "handshake")).warnings
    with pytest.raises(ConfigError, match="allowed: stateless, handshake"):
        load(with_(CLIENT, "network.tcp.mode", "syn"))


def test_parsed_conveniences():
    c = load(with_(with_(CLIENT, "network.tcp.local_flag", ["S", "PA", "FSRPAUECN", ""]),
                   "network.tcp.remote_flag", ["A"]))
    assert c.local_flags == [0x02, 0x18, 0x1FF, 0] and c.remote_flags == [0x10]
    assert c.socks5[0].listen == "127.0.0.1:1080" and c.server.addr == "198.18.0.2:9999"
    assert c.network.ipv4.addr == "198.18.0.1:0" and c.transport.dialect == "auto"
    assert c.network.firewall == "managed"
    m = load(with_(CLIENT, "transport.kcp", {"key": "k", "mode": "manual", "nodelay": 1, "interval": 15,
                                             "resend": 3, "nocongestion": 1, "wdelay": True,
                                             "acknodelay": True}))
    assert m.transport.kcp.effective_mode() == (1, 15, 3, 1, True, True)


def test_ipv6_port_is_the_local_port():
    c = load(with_(CLIENT, "network.ipv6", {"addr": "[2001:2::1]:0"}))
    assert c.local_port == 0
    s = load(with_(SERVER, "network.ipv6", {"addr": "[2001:2::2]:9999"}))
    assert s.local_port == 9999


def test_empty_lists_and_nulls_mean_default():
    c = load(with_(with_(with_(CLIENT, "network.tcp.local_flag", []), "transport.conn", None),
                   "transport.kcp.mode", ""))
    assert c.network.tcp.local_flag == ["PA"] and c.transport.conn == 1
    assert c.transport.kcp.mode == "fast"


def test_null_means_default():
    c = load(with_(with_(with_(CLIENT, "transport.kcp.wdelay", None), "transport.kcp.key", "k"),
                   "network.tcp", None))
    assert c.transport.kcp.wdelay is False and c.network.tcp.local_flag == ["PA"]


def test_old_keys_only_warn():
    c = load(with_(with_(CLIENT, "transport.tcpbuf", 4096), "transport.udpbuf", 4096))
    assert {w.split("'")[1] for w in c.warnings} >= {"transport.tcpbuf", "transport.udpbuf"}


def test_unknown_key_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="paqet.config"):
        load(with_(CLIENT, "socks5", [{"listen": "127.0.0.1:1080", "pasword": "x"}]))
    assert "socks5[0].pasword" in caplog.text


def test_conn_with_fixed_port():
    d = with_(with_(CLIENT, "network.ipv4.addr", "198.18.0.1:5000"), "transport.conn", 2)
    with pytest.raises(ConfigError) as exc:
        load(d)
    assert exc.value.path == "transport.conn"


@pytest.mark.parametrize("text,want", [("role: client\nrole: server\n", "line 2"),
                                       ("role: [client\n", "line 2, column 1"),
                                       ("role: client\n  transport: x\n", "line 2, column 12"),
                                       ("role: client\ntransport:\n\tkcp: {}\n", "line 3, column 1"),
                                       ("", "role"), ("- a\n- b\n", "mapping")])
def test_yaml_problems(text, want):
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    assert want in str(exc.value)


def test_unknown_key_warns_with_its_path():
    c = load(with_(CLIENT, "transport.kcp.mtuu", 1200))
    assert any("transport.kcp.mtuu" in w for w in c.warnings)


def test_stream_limits_defaults_ranges_and_params():
    from paqet.runtime import tunnel_params
    from paqet.tunnel.params import TunnelParams
    lim = load(SERVER).limits
    assert (lim.max_streams, lim.session_send_buffer, lim.request_timeout, lim.idle_timeout,
            lim.udp_idle_timeout) == (1024, 8 << 20, 10.0, 7200.0, 60.0)
    cfg = load(with_(SERVER, "limits", {"max_streams": 3, "session_send_buffer": 1 << 20,
                                        "request_timeout": 2.5, "idle_timeout": 0,
                                        "udp_idle_timeout": 5}))
    for p in (tunnel_params(cfg), TunnelParams.from_config(cfg)):
        assert (p.max_streams, p.send_buffer, p.request_timeout, p.idle_timeout,
                p.udp_idle_timeout) == (3, 1 << 20, 2.5, 0, 5)
    for key, bad in (("max_streams", 0), ("session_send_buffer", 1000), ("request_timeout", 0),
                     ("idle_timeout", -1), ("udp_idle_timeout", 0)):
        with pytest.raises(ConfigError) as exc:
            load(with_(SERVER, f"limits.{key}", bad))
        assert f"limits.{key}" in str(exc.value)


@pytest.mark.parametrize("text,want", [("role: client\nlog:\n  level: \x0c\n", "line 3, column 10"),
                                       ("a: \x00b", "line 1, column 4"), ("\ufffe", "#xfffe")])
def test_disallowed_character_is_one_line_with_its_place(text, want):
    """Found by tests/fuzz/fuzz_config.py: PyYAML's reader error was two lines naming
    "<unicode string>"."""
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    msg = str(exc.value)
    assert "\n" not in msg and "unicode string" not in msg
    assert want in msg and "control characters are not allowed" in msg


@pytest.mark.parametrize("text", ["role: server\n? {a: 1}\n: x\n", "role: server\n[a, b]: 1\n",
                                  "role: server\nlog: {? [x]: 1}\n"])
def test_mapping_or_list_as_key_is_a_config_error(text):
    """Found by tests/fuzz/fuzz_config.py: the duplicate-key check hashed every key, so a
    YAML complex key (a mapping or list) ended as TypeError, a traceback for the user."""
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    assert "unhashable key" in str(exc.value) and "\n" not in str(exc.value)


def test_error_quoting_a_multi_line_value_stays_one_line():
    """Found by tests/fuzz/fuzz_config.py: a multi-line YAML scalar quoted in an error
    message (here an invalid TCP flag string) put its line break into the one-line error."""
    with pytest.raises(ConfigError) as exc:
        load(with_(SERVER, "network.tcp.local_flag", ["Pe x\ny"]))
    msg = str(exc.value)
    assert "\n" not in msg and "network.tcp.local_flag" in msg and "x\\ny" in msg


def test_congestion_and_windows_that_follow_the_path():
    from paqet.tunnel.params import TunnelParams
    cfg = load(CLIENT)
    k = cfg.transport.kcp
    assert k.congestion == "bbr"
    # left out: upstream's values, marked as defaulted (they then follow the path)
    assert (k.rcvwnd, k.sndwnd, k.smuxbuf, k.streambuf) == (512, 128, 4194304, 2097152)
    assert set(cfg.defaulted) == {"transport.kcp.rcvwnd", "transport.kcp.sndwnd",
                                  "transport.kcp.smuxbuf", "transport.kcp.streambuf"}
    p = TunnelParams.from_config(cfg)
    assert p.congestion == "bbr" and p.auto_rcvwnd and p.auto_sndwnd and p.auto_smux
    assert p.recv_buffer == 16 << 20
    # explicit values stay fixed; 0 means the default (upstream's rule) and so follows
    cfg = load(with_(with_(CLIENT, "transport.kcp.rcvwnd", 2048), "transport.kcp.sndwnd", 0))
    p = TunnelParams.from_config(cfg)
    assert p.rcvwnd == 2048 and not p.auto_rcvwnd and p.auto_sndwnd
    # kcp-go's behaviour: nothing follows the path
    p = TunnelParams.from_config(load(with_(CLIENT, "transport.kcp.congestion", "kcp")))
    assert p.congestion == "kcp" and not (p.auto_rcvwnd or p.auto_sndwnd or p.auto_smux)
    p = TunnelParams.from_config(load(with_(CLIENT, "limits.session_receive_buffer", 1 << 20)))
    assert p.recv_buffer == 1 << 20


@pytest.mark.parametrize("path,value", [("transport.kcp.congestion", "cubic"),
                                        ("limits.session_receive_buffer", 1000)])
def test_congestion_keys_reject_bad_values(path, value):
    with pytest.raises(ConfigError) as e:
        load(with_(CLIENT, path, value))
    assert e.value.path == path


@pytest.mark.parametrize("fam,addr", [("ipv4", ":9999"), ("ipv6", ":9999"), ("ipv6", "[]:9999")])
def test_empty_ip_means_detect(fam, addr, monkeypatch):
    """network.ipv4.addr ":9999": the port is taken, the IP left to detection (it was
    refused as "'' in ':9999' is not an IP address")."""
    d = with_(with_(SERVER, "network", {}), f"network.{fam}", {"addr": addr})
    s = load(d)
    assert s.local_port == 9999 and not s.warnings
    from paqet.net import autodetect
    from paqet.runtime import Network
    seen = []

    def fake_detect(server_ip, **kw):
        seen.append(kw.get("local_ip"))
        return autodetect.NetworkChoice("eth9", 9, ip4="198.18.0.2", ip6="2001:2::2")
    monkeypatch.setattr(autodetect, "detect", fake_detect)
    net = Network(s, None)
    assert seen == [None]  # no "" handed on as an address to look for
    assert (net.interface, net.ip4, net.ip6) == ("eth9", "198.18.0.2", "2001:2::2")


def test_an_ip_of_the_wrong_family_still_refused():
    with pytest.raises(ConfigError) as e:
        load(with_(SERVER, "network.ipv4.addr", "[2001:2::2]:9999"))
    assert e.value.path == "network.ipv4.addr" and "not an IPv4 address" in str(e.value)


def _users(users, **kcp):
    d = with_(SERVER, "users", users)
    k = d["transport"]["kcp"]
    k.pop("key")
    k.update(kcp)
    return d


def test_users_make_the_kcp_key_optional_and_sizes_are_read():
    s = load(_users([{"name": "alice", "key": "ka", "max_sessions": 3, "rate_limit": "8Mbit",
                      "daily_quota": "2GiB"}, {"name": "bob", "key": "kb"}]))
    a, b = s.users
    assert (a.name, a.key, a.max_sessions, a.rate_limit, a.daily_quota) == \
        ("alice", "ka", 3, 1_000_000, 2 << 30)
    assert (b.rate_limit, b.daily_quota, s.transport.kcp.key) == (0, 0, "")
    with pytest.raises(ConfigError) as e:
        load(with_(SERVER, "transport.kcp.key", DELETE))
    assert e.value.path == "transport.kcp.key" and "users:" in str(e.value)


@pytest.mark.parametrize("users,kcp,path,words", [
    ([{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}], {}, "users[1].name", "also users[0]"),
    ([{"name": "a", "key": "k1"}, {"name": "b", "key": "k1"}], {}, "users[1].key", "same key as users[0]"),
    ([{"name": "a", "key": "k"}], {"key": "k"}, "users[0].key", "transport.kcp.key"),
    ([{"name": "a"}], {}, "users[0].key", "required"),
    ([{"name": "a b", "key": "k"}], {}, "users[0].name", "letters, digits"),
    ([{"name": "a", "key": "k", "daily_quota": "lots"}], {}, "users[0].daily_quota", "invalid size"),
    ([{"name": "a", "key": "k", "rate_limit": "5 parsecs"}], {}, "users[0].rate_limit", "kbit"),
    ([{"name": "a", "key": "k", "key_file": "f"}], {}, "users[0].key_file", "not both"),
    ([{"name": "a", "key_file": "/nonexistent/key"}], {}, "users[0].key_file", "cannot read"),
    ([{"name": "a", "key": "k"}], {"block": "none"}, "users", "cannot be told apart"),
])
def test_bad_users_name_their_key(users, kcp, path, words):
    with pytest.raises(ConfigError) as e:
        load(_users(users, **kcp))
    assert e.value.path == path and words in str(e.value), str(e.value)


def test_a_client_has_no_users():
    with pytest.raises(ConfigError) as e:
        load(with_(CLIENT, "users", [{"name": "a", "key": "k"}]))
    assert e.value.path == "users"


def test_key_file_relative_to_the_config(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice.key").write_text("secret-of-alice\nignored\n")
    cfg = tmp_path / "server.yaml"
    cfg.write_text(yaml.safe_dump(_users([{"name": "alice", "key_file": "keys/alice.key"}])))
    assert load_config(str(cfg)).users[0].key == "secret-of-alice"
    (tmp_path / "keys" / "alice.key").write_text("\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    assert e.value.path == "users[0].key_file" and "no key" in str(e.value)

def test_wait_dial_is_per_listener_and_off_by_default():
    cfg = load(with_(with_(CLIENT, "socks5", [{"listen": "127.0.0.1:1080"},
                                              {"listen": "127.0.0.1:1081", "wait_dial": True}]),
                     "http", [{"listen": "127.0.0.1:8080", "wait_dial": True}]))
    assert [s.wait_dial for s in cfg.socks5] == [False, True]
    assert cfg.http[0].wait_dial is True


def test_handshake_syn_keys_are_the_users_keys():
    """network.tcp.mode handshake with users: a SYN token made with any user's key opens a
    flow (runtime.syn_keys feeds the backend; a reload feeds it again)."""
    from paqet.runtime import syn_keys
    d = with_(SERVER, "users", [{"name": "ann", "key": "k-ann"}, {"name": "bob", "key": "k-bob"}])
    assert syn_keys(load(d)) == ["k", "k-ann", "k-bob"]
    d = with_(d, "transport.kcp.key", "")
    assert syn_keys(load(d)) == ["k-ann", "k-bob"]
    assert syn_keys(load(CLIENT)) == ["k"]
