"""Our client stack as a kcptun client (bench/wan.py's "paqet-kcptun" tunnel): KCP + smux over
plain UDP (the UDP backend, as tests/interop does) to a kcptun-server, with the tunnel
parameters a paqet client config gives (windows, mode, limits: TunnelParams.from_config)
and the key kcptun derives from its passphrase. Each TCP connection to --listen is one smux
stream; kcptun-server relays it to its own fixed target (no paqet header). SIGUSR1 writes
the session's counters (the names of `paqet stats --json` totals) to --stats-file.

    python bench/kcptun_client.py --config client.yaml --listen 127.0.0.1:8081 \\
        --remote 198.18.0.2:29900 --kcptun-key bench --stats-file /tmp/x.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "interop"))

import kcptun  # noqa: E402

from paqet.config import load_config  # noqa: E402
from paqet.net.udp import UdpBackend  # noqa: E402
from paqet.tunnel.endpoint import ClientTunnel  # noqa: E402
from paqet.tunnel.params import TunnelParams  # noqa: E402
from paqet.tunnel.relay import relay_tcp  # noqa: E402
from paqet.tunnel.stats import COUNTERS, counters  # noqa: E402

#: kcptun's smux keepalive: a NOP every 10 s, a 30 s timeout (ours: 2 s / 8 s)
KEEPALIVE_TIMEOUT_MS = 30000


async def main(a) -> None:
    cfg = load_config(a.config)
    params = dataclasses.replace(TunnelParams.from_config(cfg),
                                 key=kcptun.kcptun_key(a.kcptun_key),
                                 keepalive_timeout_ms=KEEPALIVE_TIMEOUT_MS)
    host, _, port = a.remote.rpartition(":")
    local_ip = cfg.network.ipv4.addr.rpartition(":")[0] if cfg.network.ipv4 else "0.0.0.0"
    state = {"tun": None, "closed": []}

    def tunnel():
        tun = state["tun"]
        if tun is None or tun.conn.closed:
            if tun is not None:
                state["closed"].append(counters(tun.conn))
                tun.close()
            tun = state["tun"] = ClientTunnel(UdpBackend(local_ip, 0), (host, int(port)),
                                              params)
        return tun

    async def handle(reader, writer):
        try:
            st = tunnel().conn.open_stream()
        except Exception as exc:
            print(f"kcptun_client: no stream: {exc}", flush=True)
            writer.close()
            return
        await relay_tcp(st, reader, writer)

    def dump():
        rows = list(state["closed"])
        if state["tun"] is not None:
            rows.append(counters(state["tun"].conn))
        tot = [sum(col) for col in zip(*rows)] if rows else [0] * len(COUNTERS)
        tmp = a.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(zip(COUNTERS, tot)), f)
        os.replace(tmp, a.stats_file)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if a.stats_file:
        loop.add_signal_handler(signal.SIGUSR1, dump)
    tunnel()
    lhost, _, lport = a.listen.rpartition(":")
    server = await asyncio.start_server(handle, lhost, int(lport))
    print(f"kcptun_client: {a.listen} -> kcptun-server {a.remote}", flush=True)
    await stop.wait()
    server.close()
    if state["tun"] is not None:
        state["tun"].close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a paqet client config (its kcp settings)")
    ap.add_argument("--listen", required=True, help="TCP host:port")
    ap.add_argument("--remote", required=True, help="kcptun-server's UDP host:port")
    ap.add_argument("--kcptun-key", default="it's a secrect", help="kcptun's --key")
    ap.add_argument("--stats-file", default="")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.run(main(args))
    except ImportError:
        asyncio.run(main(args))
