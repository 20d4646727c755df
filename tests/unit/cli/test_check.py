"""`paqet check` judging with every probe stubbed: which checks pass, fail or are skipped,
the fix line of each problem, the exit status; and the manual-rule detection on real
`nft list ruleset` / `iptables -S` texts."""

import errno
import os
import types

import pytest

from paqet.cli import check
from paqet.cli.check import Checker, PingOutcome, Probes, rules_in_place
from paqet.net.autodetect import NetworkChoice
from paqet.runtime import StartupError

CLIENT = """role: client
socks5: [{listen: "127.0.0.1:1080"}]
server: {addr: "198.18.0.2:9999"}
network: {firewall: FW}
transport: {protocol: kcp, kcp: {key: k}}
"""
SERVER = """role: server
listen: {addr: ":9999"}
network: {interface: eth9, ipv4: {addr: "198.18.0.2:9999"}, firewall: FW}
transport: {protocol: kcp, kcp: {key: k}}
"""


class Stub(Probes):
    """A healthy root host where the server answers; attributes switch problems on."""

    def __init__(self, **kw):
        self.uid = 0
        self.caps = 0
        self.sock_err = None
        self.tools = {"nft", "iptables", "ip6tables"}
        self.net_error = None
        self.outcome = PingOutcome(sent=3, rtts=[1.0, 2.0, 3.0], heard=True, dialect="alpha21")
        self.ruleset = ""
        self.tables = []
        self.pinged = 0
        self.bind_errors = {}   # port -> OSError
        self.holders = {}       # port -> [(pid, cmdline)]
        self.by_mode = {}       # tcp_mode given to ping -> outcome (else self.outcome)
        self.modes = []
        self.__dict__.update(kw)

    def euid(self):
        return self.uid

    def effective_caps(self):
        return self.caps

    def interface_exists(self, name):
        return name in ("eth9",)

    def interface_addresses(self, name):
        return ["198.18.0.1", "198.18.0.2"]

    def resolve(self, host, port):
        return host, port

    def network(self, cfg, server_ip):
        if self.net_error:
            raise StartupError(self.net_error)
        choice = NetworkChoice(interface="eth9", ifindex=2, ip4="198.18.0.1",
                               gateway="198.18.0.254", gateway_mac4=b"\x02" * 6,
                               reason="route to 198.18.0.2 leaves by eth9")
        return types.SimpleNamespace(driver="afpacket", interface="eth9", ip4="198.18.0.1",
                                     ip6=None, router_mac4=b"\x02" * 6, router_mac6=None,
                                     choice=choice if server_ip else None)

    def raw_socket(self, interface):
        return self.sock_err

    def which(self, tool):
        return f"/usr/sbin/{tool}" if tool in self.tools else None

    def command(self, *cmd):
        if cmd[:3] == ("nft", "list", "ruleset"):
            return 0, self.ruleset
        return 0, ""

    def paqet_tables(self):
        return self.tables

    def bind(self, proto, host, port):
        return self.bind_errors.get(port)

    def port_holders(self, proto, port):
        return self.holders.get(port, [])

    def ping(self, cfg, server, net, count, interval, timeout, tcp_mode=None):
        self.pinged += 1
        self.modes.append(tcp_mode)
        return self.by_mode.get(tcp_mode, self.outcome)


def run(tmp_path, probes, text=CLIENT, fw="managed"):
    p = tmp_path / "c.yaml"
    p.write_text(text.replace("FW", fw))
    c = Checker(str(p), probes)
    c.run()
    return c, {r.name: r for r in c.results if r.status != "warn"}


def test_all_good_client(tmp_path):
    c, r = run(tmp_path, Stub())
    assert [x.name for x in c.results] == ["config", "network", "privileges", "raw socket",
                                           "firewall", "ports", "tunnel", "tcp mode"]
    assert all(x.status == "ok" and not x.fix for x in c.results) and not c.failed
    assert "next hop 198.18.0.254 at 02:02:02:02:02:02" in r["network"].detail
    assert "3/3 PPONG" in r["tunnel"].detail and "1.000/2.000/3.000" in r["tunnel"].detail


def test_config_error_is_the_only_result(tmp_path):
    c, r = run(tmp_path, Stub(), CLIENT.replace("key: k", "key: k, mtu: 20"))
    assert [x.name for x in c.results] == ["config"] and c.failed
    assert "transport.kcp.mtu" in r["config"].detail and "50-1500" in r["config"].detail
    assert "transport.kcp.mtu" in r["config"].fix


def test_missing_file(tmp_path):
    c = Checker(str(tmp_path / "nope.yaml"), Stub())
    c.run()
    assert c.failed and "-c FILE" in c.results[0].fix


def test_unprivileged_without_caps(tmp_path):
    probes = Stub(uid=1000, sock_err=PermissionError(errno.EPERM, "Operation not permitted"))
    c, r = run(tmp_path, probes)
    assert r["privileges"].status == "fail"
    assert "setcap cap_net_raw,cap_net_admin+ep" in r["privileges"].fix
    assert os.path.realpath(__import__("sys").executable) in r["privileges"].fix
    assert r["raw socket"].status == "fail" and "CAP_NET_RAW" in r["raw socket"].fix
    assert r["firewall"].status == "skip" and r["tunnel"].status == "skip"
    assert probes.pinged == 0


def test_capabilities_instead_of_root(tmp_path):
    caps = 1 << check.CAP_NET_RAW | 1 << check.CAP_NET_ADMIN
    c, r = run(tmp_path, Stub(uid=1000, caps=caps))
    assert r["privileges"].status == "ok" and "CAP_NET_ADMIN and CAP_NET_RAW" in r["privileges"].detail
    assert not c.failed
    # without CAP_NET_ADMIN the managed firewall cannot be installed
    c, r = run(tmp_path, Stub(uid=1000, caps=1 << check.CAP_NET_RAW))
    assert r["privileges"].status == "fail" and "CAP_NET_ADMIN" in r["privileges"].detail


def test_network_detection_failure(tmp_path):
    err = ("network auto-detection failed: cannot find the MAC address of 198.18.0.2 on eth9: "
           "no ARP/ND answer within 3 s; set network.ipv4.router_mac")
    probes = Stub(net_error=err)
    c, r = run(tmp_path, probes)
    assert r["network"].status == "fail" and "server.addr" in r["network"].fix
    assert "router_mac" in r["network"].fix
    assert r["tunnel"].status == "skip" and probes.pinged == 0
    probes = Stub(net_error="network auto-detection failed: no route to the server 198.18.0.2")
    c, r = run(tmp_path, probes)
    assert "ip route get 198.18.0.2" in r["network"].fix


def test_configured_interface_missing(tmp_path):
    text = CLIENT.replace("network: {", "network: {interface: eth7, ")
    c, r = run(tmp_path, Stub(), text)
    assert r["network"].status == "fail" and "eth7" in r["network"].detail
    assert "ip link" in r["network"].fix


def test_raw_socket_other_error(tmp_path):
    c, r = run(tmp_path, Stub(sock_err=OSError(errno.ENETDOWN, "Network is down")))
    assert r["raw socket"].status == "fail" and "ip link set dev eth9 up" in r["raw socket"].fix
    assert r["tunnel"].status == "skip"


def test_no_firewall_tool(tmp_path):
    c, r = run(tmp_path, Stub(tools=set()))
    assert r["firewall"].status == "fail" and "nftables" in r["firewall"].fix


def test_stale_managed_table_is_a_warning(tmp_path):
    c, _ = run(tmp_path, Stub(tables=[("paqet_5555_77", True)]))
    warn = [x for x in c.results if x.status == "warn"]
    assert len(warn) == 1 and "paqet_5555_77" in warn[0].detail and not c.failed


@pytest.mark.parametrize("heard, words", [(False, ["transport.kcp.key", "paqet run"]),
                                          (True, ["transport.dialect"])])
def test_tunnel_without_answer(tmp_path, heard, words):
    probes = Stub(outcome=PingOutcome(sent=3, rtts=[], heard=heard, dialect="alpha21"))
    c, r = run(tmp_path, probes)
    assert r["tunnel"].status == "fail" and c.failed
    assert all(w in r["tunnel"].fix for w in words), r["tunnel"].fix


NONE = PingOutcome(sent=2, rtts=[], heard=False, dialect="alpha21")
GOOD = PingOutcome(sent=2, rtts=[1.0, 1.0], heard=True, dialect="alpha21")


@pytest.mark.parametrize("mode, configured, other, tunnel, tcp, words", [
    # a strict stateful firewall on the path, the server in handshake mode
    ("stateless", NONE, GOOD, "fail", None, ["set network.tcp.mode: handshake", "stateful"]),
    ("handshake", GOOD, NONE, "ok", "ok", ["needs network.tcp.mode handshake"]),
    # no stateful firewall, the server in handshake mode
    ("stateless", GOOD, GOOD, "ok", "ok", ["needs no handshake"]),
    ("handshake", GOOD, GOOD, "ok", "ok", ["not needed"]),
    # no stateful firewall, the server stateless
    ("stateless", GOOD, NONE, "ok", "ok", ["its network.tcp.mode is stateless"]),
    ("handshake", NONE, GOOD, "fail", None, ["handshake on the server too"]),
    # nothing answers at all
    ("stateless", NONE, NONE, "fail", "skip", ["neither"]),
])
def test_tcp_mode_tells_whether_the_path_needs_handshake(tmp_path, mode, configured, other,
                                                          tunnel, tcp, words):
    """The tunnel check runs in the configured network.tcp.mode, then in the other one:
    the pair says whether a stateful firewall needs handshake, or the server lacks it."""
    other_mode = "handshake" if mode == "stateless" else "stateless"
    probes = Stub(outcome=configured, by_mode={other_mode: other})
    text = CLIENT.replace("firewall: FW", f"firewall: FW, tcp: {{mode: {mode}}}")
    c, r = run(tmp_path, probes, text)
    assert probes.modes == [None, other_mode]
    if tcp is None:
        assert "tcp mode" not in r
    assert r["tunnel"].status == tunnel and (r["tcp mode"].status if tcp else None) == tcp
    said = (r["tcp mode"].detail if tcp else "") + r["tunnel"].detail + r["tunnel"].fix
    assert all(w in said for w in words), said
    assert c.failed == (tunnel == "fail")


def test_tunnel_session_cannot_start(tmp_path):
    probes = Stub(outcome=PingOutcome(error="cannot add the firewall rules"))
    c, r = run(tmp_path, probes)
    assert r["tunnel"].status == "fail" and "firewall" in r["tunnel"].detail


def test_server_has_no_tunnel_check(tmp_path):
    probes = Stub()
    c, r = run(tmp_path, probes, SERVER)
    assert "tunnel" not in r and not c.failed and probes.pinged == 0


# real texts: `nft list ruleset` with iptables-nft rules and a paqet table, `iptables -S`
NFT_IPT = """table ip raw {
	chain PREROUTING {
		type filter hook prerouting priority raw; policy accept;
		tcp dport 9999 counter packets 0 bytes 0 notrack
	}

	chain OUTPUT {
		type filter hook output priority raw; policy accept;
		tcp sport 9999 counter packets 0 bytes 0 notrack
	}
}
table ip mangle {
	chain OUTPUT {
		type route hook output priority mangle; policy accept;
		tcp flags & rst == rst tcp sport 9999 counter packets 0 bytes 0 drop
	}
}
table ip6 raw {
	chain PREROUTING {
		type filter hook prerouting priority raw; policy accept;
		tcp dport 9999 counter packets 0 bytes 0 notrack
	}
}
table inet paqet_7777_1 {
	comment "paqet pid=1 pidns=1 start=1"
	set ports {
		type inet_service
		elements = { 7000, 7777 }
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		tcp dport @ports notrack
	}

	chain output {
		type filter hook output priority raw; policy accept;
		tcp sport @ports notrack
	}

	chain rst {
		type filter hook output priority mangle; policy accept;
		tcp sport @ports tcp flags & rst == rst counter packets 0 bytes 0 drop
	}
}
"""
IPT_S = """-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-A PREROUTING -p tcp -m tcp --dport 9999 -j NOTRACK
-A OUTPUT -p tcp -m tcp --sport 9999 -j NOTRACK
-P OUTPUT ACCEPT
-A OUTPUT -p tcp -m tcp --sport 9999 --tcp-flags RST RST -j DROP
"""


def test_rules_in_place_nft_text():
    f = rules_in_place(9999, NFT_IPT)
    assert all(f[("v4", k)] for k in ("notrack-in", "notrack-out", "rst-drop"))
    assert f[("v6", "notrack-in")] and not f[("v6", "notrack-out")] and not f[("v6", "rst-drop")]
    f = rules_in_place(7777, NFT_IPT)  # through the named set, both families (inet)
    assert all(f.values())
    assert not any(rules_in_place(7001, NFT_IPT).values())


def test_rules_in_place_iptables_text():
    f = rules_in_place(9999, ipt4=IPT_S)
    assert all(f[("v4", k)] for k in ("notrack-in", "notrack-out", "rst-drop"))
    assert not any(f[("v6", k)] for k in ("notrack-in", "notrack-out", "rst-drop"))
    assert not any(rules_in_place(999, ipt4=IPT_S).values())  # 999 is not 9999


def test_manual_firewall_missing_rules_and_fix(tmp_path):
    c, r = run(tmp_path, Stub(), SERVER, fw="manual")
    assert r["firewall"].status == "fail" and "3 of the rules" in r["firewall"].detail
    assert r["firewall"].fix.count("iptables -t") == 3 and "--dport 9999" in r["firewall"].fix
    c, r = run(tmp_path, Stub(ruleset=NFT_IPT), SERVER, fw="manual")
    assert r["firewall"].status == "ok" and not c.failed


def test_manual_firewall_random_client_port(tmp_path):
    c, r = run(tmp_path, Stub(), CLIENT, fw="manual")
    assert r["firewall"].status == "fail" and "transport.conn: 1" in r["firewall"].fix


def test_cli_exit_status_and_output(tmp_path, monkeypatch, capsys):
    from paqet.cli.main import main
    p = tmp_path / "c.yaml"
    p.write_text(CLIENT.replace("FW", "managed"))
    monkeypatch.setattr(check, "Probes", Stub)
    assert main(["check", "-c", str(p)]) == 0
    out = capsys.readouterr().out
    assert out.count("[ OK ]") == 8 and out.strip().endswith("all checks passed")
    monkeypatch.setattr(check, "Probes", lambda: Stub(uid=1000))
    assert main(["check", "-c", str(p)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] privileges:" in out and "       fix: run as root" in out
    assert "problem(s) found" in out


def test_client_listen_address_in_use(tmp_path):
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    c, r = run(tmp_path, Stub(bind_errors={1080: busy},
                              holders={1080: [(4242, "/usr/sbin/danted -f x")]}))
    assert r["ports"].status == "fail" and "danted (pid 4242)" in r["ports"].detail
    assert "socks5[0].listen" in r["ports"].fix and c.failed
    # held by a running paqet (this configuration's client, most likely): a warning only
    c, _ = run(tmp_path, Stub(bind_errors={1080: busy},
                              holders={1080: [(77, "/x/python -m paqet run -c c.yaml")]}))
    warn = [x for x in c.results if x.name == "ports"]
    assert len(warn) == 1 and warn[0].status == "warn" and "pid 77" in warn[0].detail
    assert not c.failed


@pytest.mark.parametrize("cmd, is_paqet", [
    ("/x/python -m paqet run -c c.yaml", True),
    ("/usr/bin/python3 /usr/local/bin/paqet run -c c.yaml", True),  # the console script
    ("/opt/paqet run -c c.yaml", True),
    # found by CI in a clone under .../paqet/: a listener run by the checkout's python
    ("/tmp/t/paqet/.venv/bin/python -c import socket 127.0.0.1 1081", False),
    ("/srv/paqet-tools/danted -f x", False),
])
def test_a_port_holder_is_paqet_only_when_it_runs_paqet(tmp_path, cmd, is_paqet):
    assert check._is_paqet(cmd) is is_paqet
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    c, _ = run(tmp_path, Stub(bind_errors={1080: busy}, holders={1080: [(5, cmd)]}))
    assert [x.status for x in c.results if x.name == "ports"] == ["warn" if is_paqet else "fail"]


@pytest.mark.parametrize("err, words", [(errno.EADDRNOTAVAIL, "127.0.0.1:1080"),
                                        (errno.EACCES, "above 1023")])
def test_client_listen_address_other_errors(tmp_path, err, words):
    c, r = run(tmp_path, Stub(bind_errors={1080: OSError(err, "x")}))
    assert r["ports"].status == "fail" and words in r["ports"].fix


def test_server_port_shared_with_a_kernel_listener(tmp_path):
    c, r = run(tmp_path, Stub(holders={9999: [(99, "nginx: master process")]}), SERVER)
    assert r["ports"].status == "fail" and "nginx (pid 99)" in r["ports"].detail
    assert "listen.addr" in r["ports"].fix
    c, r = run(tmp_path, Stub(), SERVER)
    assert r["ports"].status == "ok" and not c.failed


def test_udp_driver_needs_no_privileges_raw_socket_or_firewall(tmp_path):
    class Udp(Stub):
        def network(self, cfg, server_ip):
            return types.SimpleNamespace(driver="udp", interface=None, ip4=None, ip6=None,
                                         router_mac4=None, router_mac6=None, choice=None)
    text = CLIENT.replace("network: {", "network: {driver: udp, ")
    probes = Udp(uid=1000, sock_err=PermissionError(errno.EPERM, "x"), tools=set())
    c, r = run(tmp_path, probes, text)
    assert not c.failed and probes.pinged == 1
    for name in ("privileges", "raw socket", "firewall"):
        assert r[name].status == "ok" and "not needed" in r[name].detail


def test_loader_warnings_are_check_lines_not_log_lines(tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="paqet.config")
    text = CLIENT.replace("kcp: {key: k}", "kcp: {key: k, mod: fast}")
    c, _ = run(tmp_path, Stub(), text)
    warn = [x for x in c.results if x.status == "warn"]
    assert len(warn) == 1 and "transport.kcp.mod" in warn[0].detail and not c.failed
    assert not [r for r in caplog.records if r.name == "paqet.config"], caplog.records
    assert logging.getLogger("paqet.config").level == logging.INFO  # restored


class BackupStub(Stub):
    """The first server answers; backups answer as `answers` says (address -> bool)."""

    def ping(self, cfg, server, net, count, interval, timeout, tcp_mode=None):
        self.pinged += 1
        if server[0] == "198.18.0.2" or self.answers.get(server[0]):
            return self.outcome
        return PingOutcome(sent=3, rtts=[], heard=False, dialect="alpha21")


def test_backups_and_http_listeners(tmp_path):
    text = CLIENT.replace('server: {addr: "198.18.0.2:9999"}',
                          'server: {addr: "198.18.0.2:9999", backup: '
                          '["198.18.4.2:9999", "198.18.5.2:9999"]}\n'
                          'http: [{listen: "127.0.0.1:8080"}]')
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    probes = BackupStub(answers={"198.18.4.2": True}, bind_errors={8080: busy})
    c, r = run(tmp_path, probes, text=text)
    assert probes.pinged == 4  # the first server (both TCP modes) and each backup
    assert r["tunnel"].status == "ok"
    backups = [x for x in c.results if x.name == "backup"]
    assert [b.status for b in backups] == ["ok", "warn"]
    assert "server.backup[0] 198.18.4.2:9999: 3/3 PPONG" in backups[0].detail
    assert "server.backup[1] 198.18.5.2:9999" in backups[1].detail
    assert "198.18.5.2" in backups[1].fix
    # the HTTP listener's address is checked like the SOCKS5 one
    assert r["ports"].status == "fail" and "http[0].listen" in r["ports"].fix
