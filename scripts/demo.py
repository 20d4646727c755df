"""A complete paqet demo on this machine: two network namespaces joined by a veth, our
server in one, our client in the other, an HTTP server behind the tunnel; fetch a page and
a 50 MB file through the SOCKS5 port, print what came back and the throughput, clean up."""

import hashlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import netlab  # noqa: E402
from paqetlab import (PY, Paqet, client_config, curl, http_server, make_blob,  # noqa: E402
                      server_config, tempdir, wait_port, write_config)


def step(msg):
    print(f"[demo] {msg}", flush=True)


def main() -> int:
    reason = netlab.available()
    if reason:
        print(f"demo: cannot run here: {reason}", file=sys.stderr)
        return 1
    with netlab.NetLab() as lab, tempdir() as d:
        step("creating namespaces: client 198.18.0.1 <-veth-> server 198.18.0.2")
        topo = lab.two_hosts()
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("<html><body><h1>Hello through paqet</h1></body></html>\n")
        digest = make_blob(d, "blob", 50 << 20)
        http_server(lab, topo.server, d)
        step("starting paqet server (raw TCP frames on port 9999, fast3, aes)")
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        if not srv.wait_log("listening for packets"):
            print(srv.log(), file=sys.stderr)
            return 1
        step("paqet check on the client's configuration (one line per check, a fix per problem)")
        check_cfg = write_config(os.path.join(d, "check.yaml"), client_config(topo))
        r = lab.run(topo.client, PY, "-m", "paqet", "check", "-c", check_cfg, check=False)
        print(r.stdout + r.stderr, end="", flush=True)
        step("starting paqet client (SOCKS5 on 127.0.0.1:1080 in the client namespace)")
        cli = Paqet(lab, topo.client, client_config(topo), "client", d)
        if not wait_port(lab, topo.client, 1080) or not wait_port(lab, topo.server, 8000, host="198.18.0.2"):
            print(cli.log(), file=sys.stderr)
            return 1
        page = os.path.join(d, "page")
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/index.html", out=page)
        with open(page) as f:
            step(f"GET /index.html through SOCKS5 -> HTTP {r.stdout.split()[0]}: {f.read().strip()}")
        got = os.path.join(d, "got")
        t0 = time.monotonic()
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob", out=got)
        dt = time.monotonic() - t0
        with open(got, "rb") as f:
            ok = hashlib.sha256(f.read()).hexdigest() == digest
        size = os.path.getsize(got)
        step(f"GET /blob: {size / 1e6:.1f} MB in {dt:.2f} s = {size / dt / 1e6:.1f} MB/s, "
             f"sha256 {'matches' if ok else 'DIFFERS'}")
        cli.stop()
        srv.stop()
        step("stopped client and server; namespaces and firewall rules are being removed")
        return 0 if ok and r.stdout.startswith("200") else 1


if __name__ == "__main__":
    raise SystemExit(main())
