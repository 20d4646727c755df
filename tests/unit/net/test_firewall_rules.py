"""Rule text of the managed firewall and its ownership logic (no root: nothing is installed)."""

import os
import subprocess

import pytest

from paqet.net import firewall as fw


def test_nft_ruleset_has_the_three_rules_for_the_port():
    text = fw.nft_ruleset(9999, 1234, fw.owner_comment(os.getpid()))
    assert "table inet paqet_9999_1234 {" in text
    assert text.startswith("add table inet paqet_9999_1234\ndelete table inet paqet_9999_1234\n")
    assert "set ports { type inet_service; elements = { 9999 }; }" in text
    assert "hook prerouting priority raw" in text and "tcp dport @ports notrack" in text
    assert "hook output priority raw" in text and "tcp sport @ports notrack" in text
    assert "hook output priority mangle" in text
    assert "tcp sport @ports tcp flags & rst == rst counter drop" in text
    assert fw.nft_port_command("paqet_1_2", 40000, True) == [
        "nft", "add", "element", "inet", "paqet_1_2", "ports", "{ 40000 }"]
    assert fw.nft_port_command("paqet_1_2", 40000, False)[1] == "delete"
    assert f'comment "paqet pid={os.getpid()} pidns=' in text
    assert "policy accept" in text and "policy drop" not in text  # never blocks anything else


def test_nft_ruleset_syntax_is_accepted_by_nft_check_mode():
    if not fw.shutil.which("nft"):
        pytest.skip("nft not installed")
    # --check parses and evaluates without committing; unprivileged it may fail on the
    # netlink socket, which says nothing about the syntax: only syntax errors fail the test.
    r = subprocess.run(["nft", "--check", "-f", "-"], input=fw.nft_ruleset(40000, 7, "paqet pid=7 pidns=1 start=2"),
                       capture_output=True, text=True)
    assert "syntax error" not in r.stderr, r.stderr
    if os.geteuid() == 0:
        assert r.returncode == 0, r.stderr


def test_iptables_rules_and_manual_commands():
    rules = fw.iptables_rules(443, "PAQET_443_1")
    assert rules[0] == ["-t", "raw", "-A", "PAQET_443_1", "-p", "tcp", "--dport", "443", "-j", "NOTRACK"]
    assert rules[1] == ["-t", "raw", "-A", "PAQET_443_1", "-p", "tcp", "--sport", "443", "-j", "NOTRACK"]
    assert rules[2][-4:] == ["RST", "RST", "-j", "DROP"] and rules[2][1] == "mangle"
    manual = fw.manual_rules(9999)
    assert manual[:3] == [  # upstream README's rules, word for word
        "iptables -t raw -A PREROUTING -p tcp --dport 9999 -j NOTRACK",
        "iptables -t raw -A OUTPUT -p tcp --sport 9999 -j NOTRACK",
        "iptables -t mangle -A OUTPUT -p tcp --sport 9999 --tcp-flags RST RST -j DROP"]
    assert [m.replace("ip6tables", "iptables") for m in manual[3:]] == manual[:3]


@pytest.mark.parametrize("port", [0, -1, 65536, "80"])
def test_bad_ports_are_refused(port):
    with pytest.raises(ValueError):
        fw.nft_ruleset(port, 1)
    with pytest.raises(ValueError):
        fw.Firewall(port)


def test_names_fit_and_match_the_stale_patterns():
    assert fw.TABLE_RE.fullmatch(fw.nft_table_name(65535, 4194304))
    c = fw.chain_name(65535, 4194304)
    assert len(c) <= 28 and fw.CHAIN_RE.fullmatch(c)
    assert not fw.TABLE_RE.fullmatch("paqet_x") and not fw.TABLE_RE.fullmatch("filter")


def test_owner_identity_of_this_process():
    me = os.getpid()
    assert fw.start_time(me) is not None
    c = fw.owner_comment(me)
    assert not fw.owner_gone(me, c)          # we are alive
    assert fw.owner_gone(me, c.replace(f"start={fw.start_time(me)}", "start=1"))  # PID reused
    ns = fw.pid_namespace()
    other_ns = c.replace(f"pidns={ns}", f"pidns={ns + 1}")
    assert not fw.owner_gone(4194304, other_ns.replace(f"pid={me} ", "pid=4194304 "))  # not ours to judge
    assert fw.owner_gone(4194304, None)      # no such PID, no comment: gone
    assert not fw.owner_gone(me, None)


def test_start_time_of_a_name_with_spaces_and_parens(tmp_path, monkeypatch):
    stat = b"42 (a) b (c) S " + b" ".join(str(i).encode() for i in range(4, 30))
    real_open = open

    def fake_open(path, *a, **k):
        if path == "/proc/42/stat":
            p = tmp_path / "stat"
            p.write_bytes(stat)
            return real_open(p, *a, **k)
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    assert fw.start_time(42) == 22  # field 22 counted after the last ')'


def test_install_without_tools_gives_an_actionable_error(monkeypatch):
    monkeypatch.setattr(fw.shutil, "which", lambda name: None)
    monkeypatch.setattr(fw, "_stale_checked", True)
    f = fw.Firewall(9999, "server")
    with pytest.raises(fw.FirewallError) as e:
        f.install()
    assert "network.firewall: manual" in str(e.value) and "nft is not installed" in str(e.value)
    assert f not in fw._registry


def test_ports_of_one_process_share_a_table_and_remove_all(monkeypatch):
    calls = []

    def fake_run(cmd, input=None):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fw, "_run", fake_run)
    monkeypatch.setattr(fw.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(fw, "_stale_checked", True)
    me = os.getpid()
    a, b = fw.Firewall(5555, "client"), fw.Firewall(5555, "client")
    assert a.install() == "nft" and b.install() == "nft"
    assert calls == [["nft", "-f", "-"]]  # the same port again: nothing more to do
    c = fw.Firewall(5556)
    c.install()
    assert calls[-1] == ["nft", "add", "element", "inet", f"paqet_5555_{me}", "ports", "{ 5556 }"]
    assert c.table == f"paqet_5555_{me}"
    a.remove()
    assert len(calls) == 2  # b still needs port 5555
    b.remove()
    assert calls[-1][:3] == ["nft", "delete", "element"] and calls[-1][-1] == "{ 5555 }"
    c.remove()  # c is the last: the table goes
    assert calls[-1] == ["nft", "delete", "table", "inet", f"paqet_5555_{me}"]
    for port in (5557, 5558, 5559):
        fw.Firewall(port).install()
    n = len(calls)
    fw.remove_all()  # one call for the whole table, not one per port
    assert calls[n:] == [["nft", "delete", "table", "inet", f"paqet_5557_{me}"]]
    assert not fw._registry and not fw._nft_tables
    n = len(calls)
    fw.remove_all()  # idempotent
    a.remove()
    assert len(calls) == n
