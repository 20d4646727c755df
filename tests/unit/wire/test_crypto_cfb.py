"""CFB decryption shortcuts (one ECB/vectorised pass over the shifted ciphertext) agree with
the plain block-by-block CFB definition for every length, and the Nettle path (libnettle8)
gives the same bytes as the `cryptography`/`twofish` one."""

import pytest
from hypothesis import given, settings, strategies as st

from paqet.wire import _crypto_nettle
from paqet.wire.crypto import INITIAL_VECTOR, derive_key, make_block

KEY = derive_key("cfb-key")


@pytest.mark.parametrize("name", ["tea", "xtea"])
@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_vectorised_tea_decrypt_matches_per_block(name, data):
    blk = make_block(name, KEY)
    ct = blk.encrypt(data)
    fast = blk.decrypt(ct)
    many, blk.ecb_many = blk.ecb_many, None
    try:
        slow = blk.decrypt(ct)
    finally:
        blk.ecb_many = many
    assert fast == slow == data


@pytest.mark.parametrize("name", ["aes", "aes-128", "aes-192", "sm4", "blowfish", "cast5", "3des"])
@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_ecb_shift_decrypt_inverts_library_cfb(name, data):
    blk = make_block(name, KEY)
    assert blk.decrypt(blk.encrypt(data)) == data


NETTLE = ["aes", "aes-128", "aes-192", "twofish", "blowfish", "cast5", "3des"]
needs_nettle = pytest.mark.skipif(not _crypto_nettle.available,
                                  reason="libnettle8 not installed (apt-get install libnettle8)")


@needs_nettle
@pytest.mark.parametrize("name", NETTLE)
@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_nettle_cfb_equals_python_path(name, data):
    fast, slow = make_block(name, KEY), make_block(name, KEY, accel=False)
    assert isinstance(fast, _crypto_nettle.NettleCFB)
    assert not isinstance(slow, _crypto_nettle.NettleCFB)
    ct = fast.encrypt(data)
    assert ct == slow.encrypt(data)
    assert fast.decrypt(ct) == slow.decrypt(ct) == data
    assert fast.decrypt(bytearray(ct)) == data  # non-bytes input is accepted


@needs_nettle
def test_nettle_declines_what_it_cannot_do_like_go():
    # Go accepts DES weak keys; Nettle refuses them: make_block must then use the other path
    assert _crypto_nettle.cfb("3des", bytes.fromhex("0101010101010101") * 3, INITIAL_VECTOR) is None
    assert _crypto_nettle.cfb("sm4", bytes(16), INITIAL_VECTOR) is None
    big = bytes(range(256)) * 280  # beyond the reusable output buffer
    fast = _crypto_nettle.cfb("aes", bytes(32), INITIAL_VECTOR)
    slow = make_block("aes", bytes(32), accel=False)
    assert fast.encrypt(big) == slow.encrypt(big)
    assert fast.decrypt(fast.encrypt(big)) == big
