"""The command line: exit codes (2 config/usage, 1 runtime, 0 success), one-line errors without
tracebacks, upstream's commands, flags and help texts; and the logging module."""

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from paqet import logs

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def _paqet(*args, input=None):
    """The CLI as a user runs it: a fresh interpreter (`python -m paqet`)."""
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


@pytest.mark.parametrize("cmd", ["run", "secret", "version", "ping", "dump", "check"])
def test_help(cmd):
    r = _paqet(cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_version():
    r = _paqet("version")
    assert r.returncode == 0 and "v1.0.0-alpha.21" in r.stdout and r.stdout.startswith("Version:")


def test_help_command_and_bare_paqet():
    r = _paqet("help", "run")
    assert r.returncode == 0 and "The 'run' command reads the specified YAML" in r.stdout
    assert 'default "config.yaml"' in r.stdout
    r = _paqet()
    assert r.returncode == 0
    for cmd in ("run", "secret", "version", "ping", "dump", "help"):
        assert re.search(rf"^\s+{cmd}\s", r.stdout, re.M)
    assert "bidirectional packet-level proxy" in r.stdout


def test_usage_errors_exit_2():
    for args in (["bogus"], ["run", "--bogus"], ["ping", "-n", "x"]):
        r = _paqet(*args)
        assert r.returncode == 2 and "usage:" in r.stderr and "Traceback" not in r.stderr


def test_extra_positional_arguments_are_ignored():
    r = _paqet("version", "extra")
    assert r.returncode == 0 and r.stdout.startswith("Version:")


def test_version_layout():
    lines = _paqet("version").stdout.splitlines()
    labels = [ln[:12] for ln in lines]
    assert labels == ["Version:    ", "Git Tag:    ", "Git Commit: ", "Build Time: ", "Python:     ",
                      "Platform:   "]
    import paqet
    assert paqet.__version__ in lines[0] and paqet.UPSTREAM_VERSION in lines[0]


def test_secret_comes_from_os_csprng(monkeypatch, capsys):
    import secrets as secrets_mod
    from paqet.cli import secret
    calls = []

    def fake(n):
        calls.append(n)
        return bytes(range(n))
    monkeypatch.setattr(secrets_mod, "token_bytes", fake)
    assert secret.run() == 0
    assert calls == [32] and capsys.readouterr().out == bytes(range(32)).hex() + "\n"


def test_run_check_prints_effective_settings():
    r = _paqet("run", "--check", "-c", os.path.join(ROOT, "examples", "client.yaml"))
    assert r.returncode == 0
    assert "valid client configuration" in r.stdout and "interval 30 ms" in r.stdout


def test_run_check_server_example():
    r = _paqet("run", "--check", "-c", os.path.join(ROOT, "examples", "server.yaml"))
    assert r.returncode == 0 and "valid server configuration" in r.stdout and "port 9999" in r.stdout


# -- logging ----------------------------------------------------------------------------------
@pytest.fixture
def logbuf():
    lg = logging.getLogger("paqet")
    saved = (lg.handlers[:], lg.level, lg.propagate, logs._handler)
    buf = io.StringIO()
    yield buf
    lg.handlers[:], lg.level, lg.propagate, logs._handler = saved


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARN|ERROR|FATAL)\] ")


def test_log_line_format_and_levels(logbuf):
    logs.setup("warn", logbuf)
    lg = logging.getLogger("paqet.test")
    lg.debug("d")
    lg.info("i")
    lg.warning("w %d", 1)
    lg.error("e\x01\x7f")
    lines = logbuf.getvalue().splitlines()
    assert len(lines) == 2
    assert all(LINE.match(ln) for ln in lines)
    assert lines[0].endswith("[WARN] w 1") and lines[1].endswith("[ERROR] e\\x01\\x7f")


@pytest.mark.parametrize("level,shown", [("debug", 5), ("info", 4), ("warn", 3), ("error", 2),
                                         ("fatal", 1), ("none", 0)])
def test_log_thresholds(logbuf, level, shown):
    logs.setup(level, logbuf)
    lg = logging.getLogger("paqet.test")
    for f in (lg.debug, lg.info, lg.warning, lg.error, lg.critical):
        f("x")
    assert len(logbuf.getvalue().splitlines()) == shown


def test_noise_filter_drops_benign_errors_above_debug(logbuf):
    logs.setup("info", logbuf)
    lg = logging.getLogger("paqet.test")
    lg.error("failed to read protocol message: %s", EOFError())
    lg.error("relay failed: %s", ConnectionResetError(104, "reset"))
    lg.error("write failed: %s", OSError(32, "broken pipe"))
    lg.error("real problem: %s", ValueError("x"))
    try:
        raise TimeoutError
    except TimeoutError:
        lg.error("timed out", exc_info=True)
    out = logbuf.getvalue()
    assert out.count("\n") == 1 and "real problem" in out
    logs.setup("debug", logbuf)
    lg.error("failed to read protocol message: %s", EOFError())
    assert "failed to read protocol message" in logbuf.getvalue()


def test_noise_filter_knows_registered_types(logbuf):
    class Closed(ConnectionError):
        pass
    logs.setup("info", logbuf)
    logging.getLogger("paqet.test").info("a %s", Closed())
    assert "a " in logbuf.getvalue()
    logs.add_benign(Closed)
    logging.getLogger("paqet.test").info("b %s", Closed())
    assert "b " not in logbuf.getvalue()


def test_closed_stdout_stops_quietly():
    """`paqet run --check ... | head -1`: the reader is gone before paqet writes; no
    traceback, exit 1 (scripts/demo.sh once failed on this under `set -o pipefail`)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the usual case
    r_end, w_end = os.pipe()
    os.close(r_end)
    try:
        p = subprocess.run([sys.executable, "-m", "paqet", "run", "--check", "-c",
                            os.path.join(ROOT, "examples", "server.yaml")],
                           stdout=w_end, stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    finally:
        os.close(w_end)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr


def test_run_check_lists_the_users(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("role: server\nlisten: {addr: ':9999'}\ntransport: {protocol: kcp, kcp: {key: k}}\n"
                 "users:\n  - {name: alice, key: ka, max_sessions: 2, daily_quota: 1GiB}\n"
                 "  - {name: bob, key: kb}\n")
    r = _paqet("run", "--check", "-c", str(p))
    assert r.returncode == 0, r.stderr
    assert ("  users: alice (at most 2 sessions, 1.0 GiB a day), bob; and the unnamed user of "
            "transport.kcp.key") in r.stdout
