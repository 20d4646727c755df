"""`paqet` command line: run, secret, version, ping, dump (upstream's commands and flags),
check and stats (ours)."""

from __future__ import annotations

import argparse

from paqet import logs
from paqet.cli.exits import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME

CONFIG_HELP = 'Path to the configuration file (default "config.yaml")'
CONFIG_HELP_DUMP = 'Path to the configuration file. (default "config.yaml")'  # upstream's period


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paqet",
        description="paqet is a bidirectional packet-level proxy using KCP and raw socket "
                    "transport with encryption.")
    sub = p.add_subparsers(dest="command", metavar="command")
    r = sub.add_parser("run", help="Runs the client or server based on the config file",
                       description="The 'run' command reads the specified YAML configuration file.")
    r.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    r.add_argument("--check", action="store_true",
                   help="only validate the configuration and print the effective settings")
    sub.add_parser("secret", help="Generates a secure, random 32-byte secret key",
                   description="This command generates a cryptographically secure 32-byte (256-bit) "
                               "key and prints it. Use this key for the 'transport.kcp.key' field "
                               "in your config.yaml.")
    sub.add_parser("version", help="Prints the version information")
    pg = sub.add_parser("ping", help="Measures round trips (PPING/PPONG) through the tunnel",
                        description="Sends PPING messages through a real tunnel session to the "
                                    "server and prints RTT statistics like ping(8).")
    pg.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    pg.add_argument("--payload", default="PING",
                    help="upstream's flag; with --raw, the payload of the single raw packet")
    pg.add_argument("-n", "--count", type=int, default=4, help="number of round trips (default 4)")
    pg.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between pings")
    pg.add_argument("-W", "--timeout", type=float, default=3.0, help="seconds to wait per reply")
    pg.add_argument("--raw", action="store_true",
                    help="upstream's behaviour: send one raw TCP packet with --payload and exit")
    d = sub.add_parser("dump", help="A raw packet dumper that logs TCP payloads for a given port")
    d.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP_DUMP)
    d.add_argument("--decode", action="store_true",
                   help="decrypt datagrams with the configured key and show KCP headers")
    d.add_argument("--count", type=int, default=0, help="stop after this many packets (0 = never)")
    ck = sub.add_parser("check", help="Checks that this host can run the configuration (ours)",
                        description="Validates the configuration, shows the detected interface, "
                                    "addresses and next-hop MAC, checks privileges, the raw "
                                    "socket and the firewall and, for a client, pings the "
                                    "server through the tunnel; prints a fix for each problem. "
                                    "Exit status 0 when every check passes, 1 otherwise.")
    ck.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    ck.add_argument("-n", "--count", type=int, default=3,
                    help="PPING round trips for the tunnel check (default 3)")
    ck.add_argument("-W", "--timeout", type=float, default=2.0,
                    help="seconds to wait per reply (default 2)")
    sa = sub.add_parser("stats", help="Shows live statistics of a running instance (ours)",
                        description="Reads the statistics of the `paqet run` started with the "
                                    "same configuration from its control socket (stats.socket; "
                                    "root only) and prints them: per session RTT, "
                                    "retransmissions, loss estimate, FEC recoveries, throughput, "
                                    "streams and drops, and process totals. Exit status 1 when "
                                    "no instance answers.")
    sa.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    sa.add_argument("--socket", default="", metavar="PATH",
                    help="the control socket to read (default: derived from the config)")
    sa.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    sa.add_argument("--top", type=int, default=None, metavar="N",
                    help="list the N busiest sessions (default 50; with --json all)")
    sa.add_argument("-W", "--timeout", type=float, default=5.0,
                    help="seconds to wait for the answer (default 5)")
    h = sub.add_parser("help", help="Help about any command",
                       description="Help provides help for any command in the application.")
    h.add_argument("topic", nargs="?", metavar="command", help="the command to describe")
    for sp in sub.choices.values():
        if sp is not h:  # upstream accepts and ignores extra positional arguments
            sp.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    import sys
    try:
        rc = _dispatch(argv)
        sys.stdout.flush()  # here, not at exit, where a broken pipe cannot be caught
        return rc
    except BrokenPipeError:
        # stdout went away (`paqet run --check ... | head -1`): stop quietly, as a C tool
        # killed by SIGPIPE would, without a traceback or a second error at exit
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if args.command == "help":
        if args.topic is None:
            parser.print_help()
            return EXIT_OK
        return _dispatch([args.topic, "--help"])
    if args.command == "secret":
        from paqet.cli.secret import run
        return run()
    if args.command == "version":
        from paqet.cli.version import run
        return run()
    logs.setup("info")
    try:
        if args.command == "run":
            from paqet.cli.run import run
            return run(args)
        if args.command == "ping":
            from paqet.cli.ping import run
            return run(args)
        if args.command == "dump":
            from paqet.cli.dump import run
            return run(args)
        if args.command == "check":
            from paqet.cli.check import run
            return run(args)
        if args.command == "stats":
            from paqet.cli.stats import run
            return run(args)
    except KeyboardInterrupt:
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
