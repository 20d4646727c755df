"""The atheris targets in this directory, run without atheris in the default suite: each
target's seeds plus a few hundred random and mutated inputs (a fixed random seed, so a
failure reproduces). The long coverage-guided runs are scripts/fuzz.sh."""

import importlib
import os
import random
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TARGETS = sorted(f[5:-3] for f in os.listdir(HERE) if f.startswith("fuzz_") and f.endswith(".py"))


def test_every_parser_has_a_target():
    assert set(TARGETS) >= {"frame", "datagram", "fec", "kcp", "smux", "appmsg", "gob",
                            "socks5", "config"}


def _mutations(rng: random.Random, seeds: list[bytes], n: int):
    for _ in range(n):
        s = bytearray(rng.choice(seeds))
        how = rng.randrange(4)
        if how == 0 and s:
            for _ in range(rng.randint(1, 4)):
                s[rng.randrange(len(s))] = rng.randrange(256)
        elif how == 1:
            del s[rng.randrange(len(s) + 1):]
        elif how == 2:
            s += rng.randbytes(rng.randrange(40))
        else:
            s = bytearray(rng.randbytes(rng.randrange(300)))
        yield bytes(s)


@pytest.mark.parametrize("name", TARGETS)
def test_target_holds_on_seeds_and_mutations(name):
    mod = importlib.import_module(f"fuzz_{name}")
    seeds = mod.seeds()
    assert seeds
    for s in seeds:
        mod.one_input(s)
    rng = random.Random(name)
    for data in _mutations(rng, seeds, 300):
        mod.one_input(data)
