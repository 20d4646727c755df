"""tunnel.shaper.Shaper on a made-up clock: what passes at once, what waits and when it is
due, the queue's bound, a rate changed or lifted while datagrams wait."""

from paqet.tunnel.shaper import DROP, MIN_QUEUE, PASS, WAIT, Shaper


def fill(sh, size, now=0):
    """Spend the bucket with `size`-byte datagrams; the one that did not fit waits."""
    n = 0
    while sh.offer("burst", size, now) == PASS:
        n += 1
    return n


def test_within_the_burst_everything_passes_then_the_rate_holds():
    sh = Shaper(1_000_000)  # 1 MB/s
    assert fill(sh, 1000) == sh.burst // 1000 == 50  # 50 ms of the rate at once
    assert sh.queued == 1000 and sh.next_ms() == 1   # 1000 bytes at 1 MB/s: about 1 ms
    for _ in range(20):
        assert sh.offer("later", 1000, 0) == WAIT
    # 10 ms later: 10 kB of tokens (and what was left), so ten are due, in order
    assert sh.due(10) == ["burst"] + ["later"] * 9 and sh.queued == 11_000
    # over one second the rate moves 1 MB, never more
    total = 0
    for t in range(11, 1011):
        total += 1000 * len(sh.due(t))
        while sh.queued < 50_000:
            sh.offer("more", 1000, t)
    assert 999_000 <= total <= 1_001_000, total


def test_the_queue_is_bounded_and_drops_are_counted():
    sh = Shaper(100_000)  # the queue: MIN_QUEUE bytes (more than a second of this rate)
    fill(sh, 1400)
    results = [sh.offer("x", 1400, 0) for _ in range(1000)]
    assert results.count(WAIT) == MIN_QUEUE // 1400 - 1 and DROP in results
    assert sh.dropped == results.count(DROP) and sh.queued <= MIN_QUEUE


def test_order_is_kept_and_a_lifted_limit_releases_everything():
    sh = Shaper(10_000)
    fill(sh, 1000)
    left = sh.tokens
    for i in range(5):
        sh.offer(i, 1000, 0)
    assert sh.due(int((2000 - left) / 10) + 1) == ["burst", 0]   # 2 kB of tokens
    sh.set_rate(0)
    assert sh.next_ms() == 0 and sh.due(300) == [1, 2, 3, 4]
    assert sh.offer("now", 10**6, 301) == PASS and sh.queued == 0


def test_a_new_rate_applies_to_what_waits():
    sh = Shaper(1000)
    fill(sh, 500)
    sh.offer("a", 1000, 0)
    slow = sh.next_ms()
    assert slow > 200  # at 1 kB/s
    sh.set_rate(1_000_000)
    assert sh.next_ms() == 1 and sh.due(2) == ["burst", "a"]
