"""Key derivation, every cipher, FEC and whole recorded sessions, byte for byte against the
Go implementation's vectors."""

import json
import os

import pytest

from paqet.wire import crypto
from paqet.wire.datagram import DatagramCodec
from paqet.wire import _crypto_nettle, _fec_isal
from paqet.wire.fec import FecDecoder, FecEncoder

# both GF paths: ISA-L (when libisal2 is installed) and bytes.translate + numpy
ACCEL = [pytest.param(True, id="isal", marks=pytest.mark.skipif(
    not _fec_isal.available, reason="libisal2 not installed (apt-get install libisal2)")),
    pytest.param(False, id="python")]

VEC = os.path.join(os.path.dirname(__file__), "..", "..", "vectors")


def load(name):
    return json.load(open(os.path.join(VEC, name)))


KDF = load("kdf.json")
CIPHERS = load("ciphers.json")
FEC = load("fec.json")
SESSIONS = load("sessions.json")["sessions"]


@pytest.mark.parametrize("k", KDF["keys"], ids=lambda k: k["key_utf8"][:16])
def test_kdf(k):
    derived = crypto.derive_key(k["key"])
    assert derived.hex() == k["derived"]
    for pb in k["per_block"]:
        assert crypto.block_key(pb["block"], derived).hex() == pb["block_key"]


@pytest.mark.parametrize("accel", [True, False], ids=["accel", "python"])
@pytest.mark.parametrize("c", CIPHERS["ciphers"], ids=lambda c: c["block"])
def test_cipher_vectors(c, accel):
    derived = crypto.derive_key(CIPHERS["key_string"])
    assert crypto.block_key(c["block"], derived).hex() == c["key"]
    blk = crypto.make_block(c["block"], derived, accel)
    if not accel:
        assert not isinstance(blk, _crypto_nettle.NettleCFB)
    for v in c["vectors"]:
        pt = bytes.fromhex(v["plaintext"])
        if blk is None:
            assert v["ciphertext"] == v["plaintext"]
        elif c["mode"] == "aead":
            nonce = bytes.fromhex(v["nonce"])
            assert (nonce + blk.aead.encrypt(nonce, pt, None)).hex() == v["wire"]
        else:
            ct = blk.encrypt(pt)
            assert ct.hex() == v["ciphertext"]
            assert blk.decrypt(ct) == pt


@pytest.mark.parametrize("c", CIPHERS["ciphers"], ids=lambda c: c["block"])
def test_datagram_example(c):
    ex = c["datagram_example"]
    codec = DatagramCodec(c["block"], CIPHERS["key_string"])
    kcp = bytes.fromhex(ex["kcp_payload"])
    nonce = bytes.fromhex(ex["nonce"]) if "nonce" in ex else None
    wire = codec.seal(kcp, nonce)
    assert wire.hex() == ex["wire"]
    assert codec.decode(wire) == [(kcp, True)]


@pytest.mark.parametrize("case", FEC["cases"], ids=lambda c: f"{c['data_shards']}/{c['parity_shards']}")
@pytest.mark.parametrize("accel", ACCEL)
def test_fec_encoder_matches(case, accel):
    d, p = int(case["data_shards"]), int(case["parity_shards"])
    enc = FecEncoder(d, p, accel)
    assert (enc.rs._isal is not None) == accel
    out = []
    for i, inp in enumerate(case["inputs"]):
        out.extend(enc.encode(bytes.fromhex(inp["kcp"]), 1000 + i))
    assert [x.hex() for x in out] == [e["wire"] for e in case["emitted"]]


@pytest.mark.parametrize("case", FEC["cases"], ids=lambda c: f"{c['data_shards']}/{c['parity_shards']}")
@pytest.mark.parametrize("accel", ACCEL)
def test_fec_decoder_recovers_as_kcp_go(case, accel):
    d, p = int(case["data_shards"]), int(case["parity_shards"])
    dec = FecDecoder(d, p, accel)
    assert (dec.rs._isal is not None) == accel
    dropped = set(case["decode"]["dropped_seqids"])
    got = []
    for e in case["emitted"]:
        if e["seqid"] in dropped:
            continue
        for r in dec.decode(bytes.fromhex(e["wire"])):
            got.append((e["seqid"], r.hex()))
    want = [(rec["after_feeding_seqid"], r["kcp"]) for rec in case["decode"]["recoveries"]
            for r in rec["recovered"]]
    assert got == want
    assert want


@pytest.mark.parametrize("sess", SESSIONS, ids=lambda s: s["name"])
def test_sessions_decrypt(sess):
    codec = DatagramCodec(sess["block"], sess["key_string"], dshard=int(sess["data_shards"] or 0),
                          pshard=int(sess["parity_shards"] or 0))
    assert codec.overhead == int(sess["datagram_header_size"]) + (16 if sess["block"] == "aes-128-gcm" else 0)
    n = 0
    for dg in sess["datagrams"]:
        out = codec.decode(bytes.fromhex(dg["wire"]))
        plain = bytes.fromhex(dg["plain"])
        if dg.get("kcp_segments"):
            want = plain[8:] if "fec_seqid" in dg else plain
            assert out and out[0] == (want, True)
            n += 1
    assert n > 5
    assert codec.stats.crc_errors == codec.stats.auth_errors == 0
