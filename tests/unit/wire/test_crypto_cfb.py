"""CFB decryption shortcuts (one ECB/vectorised pass over the shifted ciphertext) agree with
the plain block-by-block CFB definition for every length, and the Nettle path (libnettle8)
gives the same bytes as the `cryptography`/`twofish` one."""

import pytest
from hypothesis import given, settings, strategies as st

from paqet.wire import _crypto_nettle
from paqet.wire.crypto import INITIAL_VECTOR, block_key, derive_key, make_block

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


needs_ext = pytest.mark.skipif(not _crypto_nettle.extension,
                               reason="paqet.wire._cfb not built (no C compiler at install)")
FAST = [pytest.param(False, id="ctypes"), pytest.param(True, id="ext", marks=needs_ext)]


@needs_nettle
@pytest.mark.parametrize("ext", FAST)
@pytest.mark.parametrize("name", NETTLE)
@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_nettle_cfb_equals_python_path(name, ext, data):
    slow = make_block(name, KEY, accel=False)
    fast = _crypto_nettle.cfb(name, block_key(name, KEY), INITIAL_VECTOR, ext=ext)
    assert isinstance(fast, _crypto_nettle.ExtCFB if ext else _crypto_nettle.NettleCFB)
    assert not isinstance(slow, (_crypto_nettle.NettleCFB, _crypto_nettle.ExtCFB))
    ct = fast.encrypt(data)
    assert ct == slow.encrypt(data)
    assert fast.decrypt(ct) == slow.decrypt(ct) == data
    assert fast.decrypt(bytearray(ct)) == data  # non-bytes input is accepted
    assert fast.decrypt(memoryview(ct)) == data


@needs_nettle
def test_make_block_takes_the_extension_when_built():
    fast = make_block("aes", KEY)
    want = _crypto_nettle.ExtCFB if _crypto_nettle.extension else _crypto_nettle.NettleCFB
    assert isinstance(fast, want)


@needs_ext
def test_extension_rejects_bad_set_up():
    from paqet.wire import _cfb
    with pytest.raises(ValueError):
        _cfb.Cfb(1, 1, 1, 1, 16, bytes(8))  # IV shorter than the block
    with pytest.raises(ValueError):
        _cfb.Cfb(0, 1, 1, 1, 16, bytes(16))  # a null function
    with pytest.raises(TypeError):
        _cfb.Cfb(1, 1, 1, 1, 16)


@needs_nettle
def test_nettle_declines_what_it_cannot_do_like_go():
    # Go accepts DES weak keys; Nettle refuses them: make_block must then use the other path
    assert _crypto_nettle.cfb("3des", bytes.fromhex("0101010101010101") * 3, INITIAL_VECTOR) is None
    assert _crypto_nettle.cfb("sm4", bytes(16), INITIAL_VECTOR) is None
    big = bytes(range(256)) * 280  # beyond the reusable output buffer
    slow = make_block("aes", bytes(32), accel=False)
    for ext in (False, True) if _crypto_nettle.extension else (False,):
        fast = _crypto_nettle.cfb("aes", bytes(32), INITIAL_VECTOR, ext=ext)
        assert fast.encrypt(big) == slow.encrypt(big)
        assert fast.decrypt(fast.encrypt(big)) == big
        assert fast.encrypt(b"") == b""


def test_derive_key_soon_hands_its_result_to_derive_key(monkeypatch):
    """Start-up derives the session key in a thread (runtime.run): derive_key() takes that
    result instead of running PBKDF2 again, and it is the same key."""
    from paqet.wire import crypto
    calls = []
    real = crypto._pbkdf2
    monkeypatch.setattr(crypto, "_pbkdf2", lambda text: calls.append(text) or real(text))
    text = "derive-soon-" + str(id(calls))
    crypto.derive_key_soon(text)
    crypto.derive_key_soon(text)  # a second start is a no-op
    got = crypto.derive_key(text)
    assert got == real(text) and len(got) == 32
    assert calls == [text]  # one derivation, in the thread
    assert crypto.derive_key(text) == got and calls == [text]  # cached from then on


def test_codecs_load_cryptography_only_for_ciphers_that_need_it():
    """`cryptography` (~50 ms to import) stays unloaded for Nettle's ciphers."""
    import subprocess
    import sys
    code = ("import sys\nfrom paqet.wire.datagram import DatagramCodec\n"
            "DatagramCodec('aes', 'k')\nprint('cryptography' in sys.modules)\n"
            "DatagramCodec('aes-128-gcm', 'k')\nprint('cryptography' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    want = "False" if _crypto_nettle.available else "True"
    assert out.stdout.split() == [want, "True"], out.stderr
