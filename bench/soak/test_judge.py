#!/usr/bin/env python3
"""Synthetic series fed to the soak's judge (judge.py): a late fill, or the step of
the first turnover of the uplink's connections, followed by a plateau is no climb; a
leak, with or without a fill, is. `python3 test_judge.py`."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import judge  # noqa: E402

MIB = judge.MIB


def series(start, end, rss_at, fds_at=lambda t: 1217, conns_at=lambda t: 512, out_at=lambda t: 0):
    """One sample a second over [start, end]: (time, rss, fds, threads), and (time,
    open connections, timeouts so far)."""
    ts = [start + i for i in range(int(end - start) + 1)]
    return [(t, rss_at(t), fds_at(t), 9) for t in ts], [(t, conns_at(t), out_at(t)) for t in ts]


def step(t0, low, high):
    return lambda t: high if t >= t0 else low


class Judge(unittest.TestCase):
    # The second life of the 10-minute run that exited 1: started at 201 s, the fill
    # came at 270 s (51 MiB before, 104 after, flat), killed at 400 s.
    def test_a_late_fill_then_a_plateau_is_no_climb(self):
        s, c = series(201, 400, step(270, 51 * MIB, 104 * MIB), conns_at=step(268, 3, 512))
        r = judge.life(s, c, 201, 400, flood_stop=510)
        self.assertFalse(r["climbed"], r)
        self.assertGreaterEqual(r["warm_up_s"], 270 - 201)

    def test_the_old_warm_up_read_that_fill_as_a_climb(self):
        # The control: with no connection series the warm-up is the fixed quarter,
        # before the fill, and the same RSS reads as a climb.
        s, _ = series(201, 400, step(270, 51 * MIB, 104 * MIB))
        self.assertTrue(judge.life(s, [], 201, 400, flood_stop=510)["climbed"])

    # The second life of a 10-minute run (the uplink's handshake timeout a minute):
    # the fill at once (513 open from the start), then at 262 s the first half-open
    # handshakes time out and are opened again, and RSS steps from 52 to 110 MiB and
    # holds there to the kill at 400 s.
    def test_the_step_of_the_first_turnover_then_a_plateau_is_no_climb(self):
        s, c = series(201, 400, step(265, 52 * MIB, 110 * MIB), conns_at=lambda t: 513,
                      out_at=lambda t: max(0, int(t - 262) * 8))
        r = judge.life(s, c, 201, 400, flood_stop=510)
        self.assertFalse(r["climbed"], r)
        self.assertGreaterEqual(r["warm_up_s"], 262 + judge.TURNOVER - 201)

    def test_without_the_turnover_that_step_reads_as_a_climb(self):
        # The control: the same series with no timeout seen (the judge before it
        # followed the turnover, which failed that run).
        s, c = series(201, 400, step(265, 52 * MIB, 110 * MIB), conns_at=lambda t: 513)
        self.assertTrue(judge.life(s, c, 201, 400, flood_stop=510)["climbed"])

    def test_a_leak_after_the_turnover_climbs(self):
        leak = lambda t: (52 + (58 + 0.3 * (t - 265) if t >= 265 else 0)) * MIB
        s, c = series(201, 400, leak, conns_at=lambda t: 513, out_at=lambda t: max(0, int(t - 262)))
        self.assertTrue(judge.life(s, c, 201, 400, flood_stop=510)["climbed"])

    def test_a_leak_after_the_fill_climbs(self):
        leak = lambda t: (104 + (0.3 * (t - 270) if t >= 270 else -53)) * MIB
        s, c = series(201, 400, leak, conns_at=step(268, 3, 512))
        self.assertTrue(judge.life(s, c, 201, 400, flood_stop=510)["climbed"])

    def test_a_leak_with_connections_rising_to_the_end_still_climbs(self):
        # A fill that never levels off pushes the warm-up to its latest, half-way,
        # which leaves the leak's second half to see.
        s, c = series(0, 200, lambda t: (40 + 0.5 * t) * MIB, conns_at=lambda t: int(t * 10))
        r = judge.life(s, c, 0, 200, flood_stop=500)
        self.assertEqual(r["warm_up_s"], 100)
        self.assertTrue(r["climbed"], r)

    def test_a_leak_with_no_connections_climbs(self):
        s, c = series(0, 200, lambda t: (40 + 0.5 * t) * MIB, conns_at=lambda t: 0)
        self.assertTrue(judge.life(s, c, 0, 200, flood_stop=500)["climbed"])

    def test_descriptors_that_climb_are_a_climb(self):
        s, c = series(0, 200, lambda t: 60 * MIB, fds_at=lambda t: 1217 + int(t))
        self.assertTrue(judge.life(s, c, 0, 200, flood_stop=500)["climbed"])

    def test_memory_given_back_after_the_floods_is_no_climb(self):
        # The third life: the floods stop at 510 s and RSS falls back.
        s, c = series(401, 600, step(510, 110 * MIB, 40 * MIB), conns_at=step(510, 512, 0),
                      out_at=lambda t: max(0, int(t - 462)))
        self.assertFalse(judge.life(s, c, 401, 600, flood_stop=510)["climbed"])

    def test_a_life_too_short_to_judge_is_not_judged(self):
        s, c = series(0, 5, lambda t: 60 * MIB)
        self.assertIsNone(judge.life(s, c, 0, 5, flood_stop=500))


if __name__ == "__main__":
    unittest.main()
