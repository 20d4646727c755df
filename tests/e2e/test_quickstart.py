"""docs/quickstart.md, followed as a new user would: its marked code blocks, in order, on two
"hosts" (network namespaces: client - router - server, default routes, nothing configured
for paqet), each host with its own home directory and its own clean `git clone` of this
repository, ending with a page fetched through the tunnel.

What is substituted: only the documented placeholders (REPO_URL: this checkout; SERVER_IP:
the server namespace's address; YOUR_KEY: what the doc's own `paqet secret` block printed),
and one line of the install block, `./scripts/setup.sh`: it would install Debian
packages and pip-install paqet with all its dependencies into the clone's `.venv`, which on
this machine is slow, needs the package index, and is what `scripts/test.sh` and
`scripts/demo.sh` already run. In its place the test makes the `.venv/bin/paqet` that
setup.sh would make, but running the shared venv's interpreter on the clone's own `src`
(so the code under test is the clean clone's); setup.sh itself is checked for syntax here,
and tests/unit/packaging builds the wheel from the same files.

Isolation: every block runs under `ip netns exec`, which gives it a private mount
namespace; there `/usr/local/bin` is replaced by the host's own directory (the doc's
`ln -s ... /usr/local/bin/paqet` lands there, plus a `sudo` that just runs the command, as
the test is root), HOME is the host's directory, and the environment is a login-like one
(no PYTHONPATH). `cd` and `export` carry over between a host's blocks, as in one terminal.
Background blocks (the long-running commands) are started with their last line exec'd, so
the PID the lab stops is the command itself.
"""

import os
import re
import shlex
import subprocess
import sys
import time

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "docs", "quickstart.md")
SETUP_LINE = "./scripts/setup.sh"
MARK = re.compile(r"^<!-- qs: (.*?) -->\s*$")


def blocks(path=DOC) -> list[dict]:
    """The marked fenced blocks: [{host, code, lang, and the marker's other attributes}]."""
    lines = open(path).read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        attrs = {}
        for word in shlex.split(m.group(1)):
            k, _, v = word.partition("=")
            attrs[k] = v if v else True
        j = i + 1
        assert lines[j].startswith("```"), f"marker at line {i + 1} is not followed by a code block"
        k = j + 1
        while not lines[k].startswith("```"):
            k += 1
        attrs.update(lang=lines[j][3:].strip(), code="\n".join(lines[j + 1:k]) + "\n")
        out.append(attrs)
        i = k + 1
    return out


def test_the_doc_is_marked_up_as_the_test_expects():
    bs = blocks()
    assert [b["host"] for b in bs][:2] == ["both", "server"]
    assert sum(1 for b in bs if "install" in b) == 1 and SETUP_LINE in bs[0]["code"]
    assert {b.get("file") for b in bs} >= {"server.yaml", "client.yaml"}
    assert bs[-1].get("expect") and "curl" in bs[-1]["code"]
    text = open(DOC).read()
    for placeholder in ("REPO_URL", "SERVER_IP", "YOUR_KEY"):  # documented where used
        assert f"`{placeholder}`" in text.split("## 1.")[0]
    r = subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", "setup.sh")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(os.path.join(ROOT, "scripts", "setup.sh"), os.X_OK)


class Host:
    def __init__(self, lab, ns: str, home: str) -> None:
        self.lab, self.ns, self.home = lab, ns, home
        self.bin = os.path.join(home, ".usr-local-bin")
        self.state = os.path.join(home, ".qs-state")
        os.makedirs(self.bin)
        os.makedirs(self.state)
        with open(os.path.join(self.bin, "sudo"), "w") as f:
            f.write('#!/bin/sh\nexec "$@"\n')  # we are root already
        os.chmod(os.path.join(self.bin, "sudo"), 0o755)
        self.logs: list[str] = []

    def prelude(self) -> str:
        h = shlex.quote(self.home)
        return "\n".join([
            "set -eu",
            f"mount --bind {shlex.quote(self.bin)} /usr/local/bin",
            f"export HOME={h} PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "unset PYTHONPATH VIRTUAL_ENV PYTHONHOME",
            f"if [ -f {h}/.qs-state/env ]; then . {h}/.qs-state/env; fi",
            f"cd \"$(cat {h}/.qs-state/cwd 2>/dev/null || echo {h})\"",
        ]) + "\n"

    def save_state(self) -> str:
        h = shlex.quote(self.home)
        return f"\npwd > {h}/.qs-state/cwd\nexport -p > {h}/.qs-state/env\n"

    def run(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
        script = self.prelude() + code + self.save_state()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        r = subprocess.run(["ip", "netns", "exec", self.ns, "bash", "-c", script],
                           capture_output=True, text=True, timeout=timeout, env=env)
        assert r.returncode == 0, f"in {self.ns}:\n{code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        return r

    def start(self, code: str, name: str):
        lines = [ln for ln in code.strip().splitlines() if ln.strip()]
        script = self.prelude() + "\n".join(lines[:-1]) + "\nexec " + lines[-1] + "\n"
        log = os.path.join(self.home, f"{name}.log")
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(log, "w") as f:
            proc = self.lab.popen(self.ns, ["bash", "-c", script], stdout=f,
                                  stderr=subprocess.STDOUT, env=env)
        return proc, log

    def cwd(self) -> str:
        with open(os.path.join(self.state, "cwd")) as f:
            return f.read().strip()


def fake_setup() -> str:
    """What replaces `./scripts/setup.sh` (run in the clone's directory): the
    .venv/bin/paqet setup.sh would install, on the shared interpreter and the clone's src."""
    return (f"mkdir -p .venv/bin && printf '%s\\n' '#!/bin/sh' "
            f"\"PYTHONPATH=\\\"$PWD/src\\\" exec {shlex.quote(sys.executable)} -m paqet \\\"\\$@\\\"\" "
            "> .venv/bin/paqet && chmod +x .venv/bin/paqet")


def test_quickstart(tmp_path):
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    bs = blocks()
    os.chmod(tmp_path, 0o755)
    with netlab.NetLab() as lab:
        topo = lab.routed()
        hosts = {"server": Host(lab, topo.server, str(tmp_path / "server-home")),
                 "client": Host(lab, topo.client, str(tmp_path / "client-home"))}
        values = {"REPO_URL": ROOT, "SERVER_IP": topo.server_ip4}
        procs = []
        for n, b in enumerate(bs):
            code = b["code"]
            for k, v in values.items():
                code = code.replace(k, v)
            targets = ["server", "client"] if b["host"] == "both" else [b["host"]]
            for name in targets:
                host = hosts[name]
                if "install" in b:
                    assert SETUP_LINE in code
                    code_here = code.replace(SETUP_LINE, fake_setup())
                    r = host.run(code_here)
                    assert "Version:" in r.stdout, r.stdout
                    clone = host.cwd()
                    assert clone.endswith("/paqet-py") and os.path.isdir(os.path.join(clone, ".git"))
                    assert os.path.realpath(os.path.join(host.bin, "paqet")) == \
                        os.path.join(clone, ".venv", "bin", "paqet")
                    # the code that runs is the clean clone's, not this checkout's
                    r = host.run('sh -x "$(command -v paqet)" version 2>&1 >/dev/null')
                    assert f"PYTHONPATH={clone}/src" in r.stdout, r.stdout
                elif "file" in b:
                    assert "YOUR_KEY" not in code, "the key placeholder was not filled in"
                    with open(os.path.join(host.cwd(), b["file"]), "w") as f:
                        f.write(code)
                elif "background" in b:
                    proc, log = host.start(code, f"bg{n}")
                    procs.append((proc, log))
                    kind, _, what = b["wait"].partition(":")
                    if kind == "port":
                        ok = wait_port(lab, host.ns, int(what), timeout=20)
                    else:
                        end = time.monotonic() + 20
                        ok = False
                        while time.monotonic() < end and proc.poll() is None:
                            if what in open(log).read():
                                ok = True
                                break
                            time.sleep(0.1)
                    assert ok, f"{code} did not get ready:\n{open(log).read()}"
                else:
                    r = host.run(code)
                    print(f"--- {name}:\n{code}{r.stdout}")
                    if "capture" in b:
                        key = r.stdout.strip().splitlines()[-1]
                        assert re.fullmatch(r"[0-9a-f]{64}", key), r.stdout
                        values[b["capture"]] = key
                    if "check -c" in code:
                        assert r.stdout.strip().endswith("all checks passed"), r.stdout
                    if "expect" in b:
                        assert b["expect"] in r.stdout, r.stdout + r.stderr
        # it was the tunnel: the client's paqet carried the request, the server's dialed it
        server_log, client_log = open(procs[0][1]).read(), open(procs[1][1]).read()
        assert "listening for packets" in server_log
        assert f"connection 1 to {topo.server_ip4}:9999 up" in client_log, client_log
        for proc, log in procs:
            assert proc.poll() is None, f"exited early:\n{open(log).read()}"
