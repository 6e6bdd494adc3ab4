"""Whether a daemon's RSS or descriptors climbed in one of its lives (bench/soak/run).

A life's warm-up follows the hostile container's phases as the socket uplink sees
them (`stats`, asked without pause by the run): it ends a quarter into the life (at
least 10 s), and not before

- the uplink has taken in the flooder's fill: its open TCP connections (nat.tcp_open)
  first at 90% of their most in that life while the floods ran, and
- those connections have turned over once: 10 s after the uplink first timed one out
  (nat.tcp_handshake_timeouts or tcp_idle_timeouts moved). The half-open handshakes
  of the SYN flood time out after a minute and are opened again at once; the
  allocator takes new memory for the second generation before it reuses the first's,
  so RSS steps up then (81 -> 119 MiB a minute into a life) and holds that plateau.

but no later than half-way through the life (a fill that never levels off, as
connections that leak, must leave a leak's second half to see). RSS and descriptors
after the warm-up (the median of 10 s) are compared with the life's last 10 s: more
than 20% plus 8 MiB of RSS, or more than 64 descriptors, is a climb. A leak grows
after the turnover too, so it still shows (`test_judge.py` feeds the function
synthetic series of both).
"""
import statistics

MIB = 2**20
# The seconds of samples after the warm-up and at the life's end that are compared.
TAIL, WINDOW = 10.0, 10.0
# How long after the first timeout the replaced connections have been opened again.
TURNOVER = 10.0


def fill_time(conns, start, until):
    """When the uplink's open connections first reached 90% of their most within
    [start, until], or None when it held none. `conns`: (time, open, timed out)."""
    seen = [(t, n) for t, n, _ in conns if start <= t <= until and n is not None]
    most = max((n for _, n in seen), default=0)
    if most == 0:
        return None
    return next(t for t, n in seen if n >= 0.9 * most)


def turnover_time(conns, start, until):
    """When the uplink first timed out a connection within [start, until] (its count,
    which starts at 0 with each daemon, moved), or None."""
    return next((t for t, _, out in conns if start <= t <= until and out), None)


def warm_up_end(start, end, conns, flood_stop):
    """The end of a life's warm-up: a quarter in (at least 10 s), after the fill and
    the first turnover, but no later than half-way."""
    warm = start + max(10.0, (end - start) / 4)
    until = min(end, flood_stop)
    after = [t + 5.0 for t in [fill_time(conns, start, until)] if t is not None]
    after += [t + TURNOVER for t in [turnover_time(conns, start, until)] if t is not None]
    if after:
        warm = max(warm, min(max(after), start + (end - start) / 2))
    return warm


def life(samples, conns, start, end, flood_stop):
    """One life's check. `samples`: (time, rss bytes, descriptors, ...); `conns`:
    (time, the uplink's open TCP connections, its TCP timeouts so far). None when a
    window holds no sample (a life too short to judge)."""
    warm = warm_up_end(start, end, conns, flood_stop)
    base = [x for x in samples if warm <= x[0] <= warm + WINDOW]
    tail = [x for x in samples if end - TAIL <= x[0] <= end]
    if not base or not tail:
        return None
    b_rss, t_rss = statistics.median(x[1] for x in base), statistics.median(x[1] for x in tail)
    b_fd, t_fd = statistics.median(x[2] for x in base), statistics.median(x[2] for x in tail)
    return {"warm_up_s": round(warm - start, 1),
            "rss_after_warmup_mib": round(b_rss / MIB, 1), "rss_end_mib": round(t_rss / MIB, 1),
            "fds_after_warmup": b_fd, "fds_end": t_fd,
            "climbed": t_rss > b_rss * 1.2 + 8 * MIB or t_fd > b_fd + 64}
