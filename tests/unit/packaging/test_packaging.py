"""packaging/: the systemd unit passes `systemd-analyze verify` (with ExecStart pointed at
this environment's paqet) and its ExecStart is a valid `paqet run` command line with the
capabilities raw sockets and nftables need; the Containerfile copies only paths that exist,
that subset builds a paqet wheel, its command parses, and the documented `docker run` line
has the host network and both capabilities."""

import configparser
import os
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest

from paqet.cli.main import build_parser

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
UNIT = os.path.join(ROOT, "packaging", "paqet.service")
CONTAINERFILE = os.path.join(ROOT, "packaging", "Containerfile")


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # systemd keys are case-sensitive
    with open(UNIT) as f:
        cp.read_file(f)
    return cp


def test_unit_execstart_is_a_valid_paqet_run():
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert os.path.basename(argv[0]) == "paqet" and os.path.isabs(argv[0])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == "/etc/paqet/config.yaml" and not args.extra
    assert not args.check


def test_unit_capabilities_and_hardening_allow_raw_sockets_and_nftables():
    s = unit()["Service"]
    assert set(s["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(s["CapabilityBoundingSet"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert s["Restart"] == "on-failure"
    fams = set(s["RestrictAddressFamilies"].split())
    assert {"AF_PACKET", "AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"} <= fams
    assert "PrivateNetwork" not in s and "IPAddressDeny" not in s  # the host network, as is
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    here = os.path.join(os.path.dirname(sys.executable), "paqet")
    if not os.access(here, os.X_OK):
        pytest.skip("no paqet console script next to this interpreter")
    text = open(UNIT).read().replace("ExecStart=/usr/local/bin/paqet ", f"ExecStart={here} ")
    assert here in text
    path = tmp_path / "paqet.service"
    path.write_text(text)
    r = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    # unknown keys and bad values are only warnings (exit 0): none may appear
    assert "paqet.service" not in out, out


def containerfile() -> list[list[str]]:
    """Instructions as lists of words (continuation lines joined, comments dropped)."""
    out, cur = [], ""
    for line in open(CONTAINERFILE):
        line = line.rstrip("\n")
        if line.lstrip().startswith("#") or not line.strip():
            continue
        cur += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            out.append(cur.split())
            cur = ""
    return out


def test_containerfile_copies_existing_paths_and_they_build_a_wheel(tmp_path):
    copies = [w for w in containerfile() if w[0] == "COPY" and not w[1].startswith("--from")]
    srcs = [s for w in copies for s in w[1:-1]]
    assert "pyproject.toml" in srcs and "src" in srcs
    for s in srcs:
        assert os.path.exists(os.path.join(ROOT, s)), s
    ctx = tmp_path / "ctx"  # only what the build stage copies, as `docker build` would
    ctx.mkdir()
    for s in srcs:
        src = os.path.join(ROOT, s)
        if os.path.isdir(src):
            # as a clean checkout has it: no build products of an editable install
            shutil.copytree(src, ctx / s, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__",
                                                                        "*.so"))
        else:
            shutil.copy(src, ctx / s)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "--wheel-dir", str(tmp_path / "w"), str(ctx)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    wheels = os.listdir(tmp_path / "w")
    assert len(wheels) == 1 and wheels[0].startswith("paqet-")
    names = zipfile.ZipFile(tmp_path / "w" / wheels[0]).namelist()
    assert "paqet/cli/main.py" in names and "paqet/cli/check.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    if shutil.which("gcc") or shutil.which("cc"):  # the optional extensions were built too
        for ext in ("paqet/wire/_cfb", "paqet/net/_ring"):
            assert any(n.startswith(ext) and n.endswith(".so") for n in names), (ext, names)


def test_containerfile_command_and_documented_run_line():
    ins = containerfile()
    entry = [w for w in ins if w[0] == "ENTRYPOINT"][-1]
    cmd = [w for w in ins if w[0] == "CMD"][-1]
    import json
    argv = json.loads(" ".join(entry[1:])) + json.loads(" ".join(cmd[1:]))
    assert argv[0] == "paqet"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == "/etc/paqet/config.yaml"
    text = open(CONTAINERFILE).read().replace("\\\n#", " ")
    run = next(ln for ln in text.splitlines() if "docker run" in ln)
    for flag in ("--network host", "--cap-add NET_RAW", "--cap-add NET_ADMIN"):
        assert flag in run, run
    assert "nftables" in " ".join(" ".join(w) for w in ins if w[0] == "RUN")
