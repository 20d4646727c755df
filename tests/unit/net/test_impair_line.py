"""tests/impair.py's model of one direction of a path (Line), with the clock injected: random
loss at entry, a drop-tail buffer in frames, a token-bucket line rate with 2 ms of depth,
then a constant delay that keeps the order of frames."""

import random

import pytest

from impair import DEPTH, Line, _pair

FRAME = b"x" * 1250          # 10,000 bits: 0.1 ms at 100 Mbit/s


def drain(line, now):
    return [f for f in line.pop_due(now)]


def test_no_rate_is_a_plain_delay_in_order():
    line = Line(delay=0.05)
    for i in range(5):
        assert line.admit(1.0 + i * 0.001, bytes([i]))
    assert drain(line, 1.0499) == []
    assert drain(line, 1.0515) == [b"\x00", b"\x01"]
    assert drain(line, 2.0) == [b"\x02", b"\x03", b"\x04"]
    assert line.counters()["frames"] == 5 and line.overflow == 0


def test_the_line_spaces_frames_by_their_size():
    line = Line(rate_bps=100e6, depth=0.0)
    for _ in range(10):
        assert line.admit(1.0, FRAME)
    dues = [d for d, _ in line.held]
    gaps = [round((b - a) * 1e6) for a, b in zip(dues, dues[1:])]
    assert gaps == [100] * 9                  # 100 us per 1250-byte frame
    assert dues[-1] == pytest.approx(1.001)  # ten frames through the line by 1 ms
    # a frame twice the size takes twice as long
    line.admit(1.0, FRAME * 2)
    assert line.held[-1][0] - dues[-1] == pytest.approx(0.0002)


def test_delay_comes_after_the_line():
    line = Line(rate_bps=100e6, delay=0.05, depth=0.0)
    line.admit(0.0, FRAME)
    line.admit(0.0, FRAME)
    assert [d for d, _ in line.held] == pytest.approx([0.0501, 0.0502])


def test_bucket_depth_lets_a_late_loop_catch_up_by_at_most_depth():
    """An idle line lets DEPTH x rate through at once (the loop woke up late), no more:
    the bucket never banks more than DEPTH of unused line."""
    line = Line(rate_bps=100e6)
    n_free = int(DEPTH / 0.0001)              # 20 frames fit in 2 ms at 100 Mbit/s
    for _ in range(n_free + 10):
        line.admit(5.0, FRAME)
    dues = [d for d, _ in line.held]
    assert sum(1 for d in dues if d <= 5.0 + 1e-9) == n_free
    assert dues[-1] == pytest.approx(5.0 - DEPTH + (n_free + 10) * 0.0001)
    # long after, the same again (not 5 s worth of tokens)
    for _ in range(n_free + 10):
        line.admit(100.0, FRAME)
    assert sum(1 for d, _ in line.held if 100.0 - DEPTH <= d <= 100.0 + 1e-9) == n_free


def test_buffer_overflow_drops_the_tail_and_counts_it():
    line = Line(rate_bps=100e6, buffer=5, depth=0.0)
    kept = [line.admit(0.0, FRAME) for _ in range(8)]
    assert kept == [True] * 5 + [False] * 3
    assert line.overflow == 3 and line.waiting(0.0) == 5
    # after 0.25 ms, 2 frames have left the line: room for 2 more, not 3
    assert [line.admit(0.00025, FRAME) for _ in range(3)] == [True, True, False]
    assert line.overflow == 4 and line.frames == 11
    # the frames that left the line wait in the delay, not in the buffer
    assert line.waiting(1.0) == 0 and len(line.held) == 7


def test_sustained_overload_delivers_the_line_rate():
    """Offer twice the line for one simulated second: what leaves is the line, the rest
    overflows; nothing is lost to rounding."""
    line = Line(rate_bps=10e6, buffer=50, delay=0.02)
    out, t = 0, 0.0
    for i in range(2000):                    # 2000 frames x 10 kbit in 1 s = 20 Mbit/s
        t = i * 0.0005
        line.admit(t, FRAME)
        out += len(drain(line, t))
    # 10 Mbit/s = 1000 frames through the line in 1 s, plus 2 for the bucket's 2 ms depth
    through = 2000 - line.overflow - line.waiting(1.0)
    assert 999 <= through <= 1003
    # of those, the ones out of the 20 ms delay too were relayed; the rest is held
    out += len(drain(line, 1.0))
    assert 975 <= out <= 985 and out + len(line.held) == 2000 - line.overflow
    assert line.overflow > 900


def test_random_loss_at_entry_is_counted_apart_from_overflow():
    line = Line(loss=0.25, rng=random.Random(1))
    for i in range(4000):
        line.admit(i * 0.001, FRAME)
    assert 850 <= line.dropped <= 1150
    assert line.overflow == 0 and len(line.held) == 4000 - line.dropped
    assert Line(loss=1.0).admit(0.0, FRAME) is False


def test_queue_bounds_what_is_held():
    line = Line(delay=10.0, queue=3)
    assert [line.admit(0.0, FRAME) for _ in range(5)] == [True] * 3 + [False] * 2
    assert line.queue_full == 2 and line.overflow == 0


def test_bad_settings_and_pairs():
    with pytest.raises(ValueError):
        Line(loss=1.5)
    with pytest.raises(ValueError):
        Line(buffer=0)
    assert _pair("100") == (100.0, 100.0)
    assert _pair("100,20") == (100.0, 20.0)
    assert _pair((1, 2), int) == (1, 2)
