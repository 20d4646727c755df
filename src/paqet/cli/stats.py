"""`paqet stats -c FILE` (or `--socket PATH`): the live statistics of a running instance,
read over its control socket (control.py), as a table or (`--json`) as the snapshot itself."""

from __future__ import annotations

import json
import logging
import sys

from paqet.cli.exits import EXIT_OK, EXIT_RUNTIME, load_or_exit


def run(args) -> int:
    from paqet.control import ControlError, query, socket_path
    path = args.socket
    if not path:
        # the file's warnings are `paqet run`'s business; keep --json output clean
        logging.getLogger("paqet.config").setLevel(logging.ERROR)
        cfg = load_or_exit(args.config)
        path = socket_path(cfg)
        if path is None:
            print(f"paqet: stats.socket is off in {args.config}: no control socket to read",
                  file=sys.stderr)
            return EXIT_RUNTIME
    try:
        top = args.top if args.top is not None else (None if args.json else 50)
        snap = query(path, timeout=args.timeout, max_sessions=top)
    except ControlError as exc:
        print(f"paqet: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        from paqet.tunnel.stats import format_table
        print(format_table(snap))
    return EXIT_OK
