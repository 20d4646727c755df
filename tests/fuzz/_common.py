"""Shared plumbing for the coverage-guided fuzz targets in this directory.

Every target module defines ``one_input(data: bytes)`` (the property: it returns normally for
any input and raises AssertionError or the stray exception otherwise) and ``seeds()`` (valid
inputs that give the fuzzer a start). Run as a script it hands ``one_input`` to atheris
(libFuzzer), with the paqet modules it imports instrumented for coverage; imported (by
tests/fuzz/test_targets.py) it is plain Python, so the default suite replays the seeds and
a few thousand random inputs through the very same code.

Usage: ``python tests/fuzz/fuzz_frame.py [libFuzzer flags] [CORPUS_DIR]``;
``python tests/fuzz/fuzz_frame.py --write-seeds DIR`` writes the seeds into DIR.
scripts/fuzz.sh drives all targets."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys


def instrumented(module_name: str, include: tuple[str, ...] = ("paqet",)):
    """Context for the target's paqet imports: atheris instrumentation of the modules named
    in `include` (and their submodules) when run as a script, nothing when imported. Modules
    imported before the context (e.g. ciphers, whose inner loops are no parser and only slow
    the run down when instrumented) stay uninstrumented."""
    if module_name != "__main__":
        return contextlib.nullcontext()
    import atheris
    return atheris.instrument_imports(include=list(include))


def chunks(data: bytes, sel: int) -> list[bytes]:
    """Splits data into pieces whose sizes follow from `sel` (1..32 bytes, or whole)."""
    step = (sel & 31) + 1 if sel & 32 else len(data) or 1
    return [data[i:i + step] for i in range(0, len(data), step)]


def records(data: bytes, limit: int = 64) -> list[bytes]:
    """Splits data into at most `limit` records: a length byte (0..255) then that many bytes."""
    out, i = [], 0
    while i < len(data) and len(out) < limit:
        n = data[i]
        out.append(data[i + 1:i + 1 + n])
        i += 1 + n
    return out


def pack_records(items: list[bytes]) -> bytes:
    out = bytearray()
    for it in items:
        it = it[:255]
        out += bytes((len(it),)) + it
    return bytes(out)


def main(one_input, seeds) -> None:
    args = sys.argv
    if len(args) == 3 and args[1] == "--write-seeds":
        os.makedirs(args[2], exist_ok=True)
        for s in seeds():
            name = hashlib.sha1(s).hexdigest()
            with open(os.path.join(args[2], name), "wb") as f:
                f.write(s)
        return
    import atheris
    atheris.Setup(args, one_input)
    atheris.Fuzz()
