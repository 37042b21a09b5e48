"""The benchmark's arithmetic: interleaved rounds, medians with their spread,
per-round ratios, and whether the machine was busy.

Standard library only, so that a benchmark worker running in another
environment (the PyTorch reference code's, without Keras) can load this file
by its path. Every time is read from `_now`, which tests replace with a fake
clock.
"""

import os
import statistics
import time

# The clock of every measurement (tests replace it with a fake one).
_now = time.perf_counter

# A 1-minute load average above this at the start means other work is
# running: the benchmark uses every core, so nothing else should.
BUSY_LOAD = 0.7
# Shares of the machine's CPU time (all cores over the run) above these, used
# by other processes or taken by the hypervisor (steal), make a run busy.
BUSY_OTHERS = 0.05
BUSY_STEAL = 0.05


class Measurement:
    """One thing timed once per round.

    `call()` does the work of `images` images; `flops` is the floating-point
    work of one call. With `self_timed=True` the call times itself and
    returns its seconds (the matmul rate: the best of a few products), which
    count instead of the time around the call. `info` is carried into the
    report's row.
    """

    def __init__(self, name, call, images=0, flops=0.0, self_timed=False,
                 **info):
        self.name = name
        self.call = call
        self.images = images
        self.flops = flops
        self.self_timed = self_timed
        self.info = info


def best_seconds(call, repeats, warmup=2):
    """Fastest of `repeats` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    best = float("inf")
    for _ in range(repeats):
        start = _now()
        call()
        best = min(best, _now() - start)
    return best


def time_call(measurement):
    """Seconds of one call of `measurement` (its own figure when it is
    self-timed)."""
    if measurement.self_timed:
        return measurement.call()
    start = _now()
    measurement.call()
    return _now() - start


def interleave(measurements, rounds, warmup=1, on_round=None):
    """Times each measurement once per round, in the given order, for
    `rounds` rounds (A B C A B C ...), after `warmup` untimed calls of each:
    drift of the machine's speed then hits all of them alike.

    Returns {name: [seconds of round 0, round 1, ...]}; `on_round(index,
    {name: seconds})` is called after each round (progress, load checks).
    """
    names = [m.name for m in measurements]
    if len(set(names)) != len(names):
        raise ValueError(f"Measurement names repeat: {names}.")
    for measurement in measurements:
        for _ in range(warmup):
            measurement.call()
    times = {name: [] for name in names}
    for index in range(rounds):
        this_round = {}
        for measurement in measurements:
            this_round[measurement.name] = time_call(measurement)
            times[measurement.name].append(this_round[measurement.name])
        if on_round is not None:
            on_round(index, this_round)
    return times


def spread(values):
    """{median, low, high} of a list of numbers."""
    if not values:
        raise ValueError("No values to summarise.")
    return dict(median=statistics.median(values), low=min(values),
                high=max(values))


def rates(seconds, work):
    """`work` per second for each time (images/s, FLOP/s)."""
    return [work / s for s in seconds]


def ratios(seconds_a, seconds_b, work_a, work_b):
    """Per-round speed of A over B: (work_a / seconds_a) / (work_b /
    seconds_b) for each round. Taken round by round, the ratio cancels the
    drift between rounds that a ratio of two medians would keep."""
    if len(seconds_a) != len(seconds_b):
        raise ValueError("A and B were not timed in the same rounds.")
    return [(work_a / a) / (work_b / b) for a, b in zip(seconds_a, seconds_b)]


# --------------------------------------------------------------------------
# Is the machine busy?


def _read_loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _read_cpu_jiffies():
    """(busy, steal, total) clock ticks of all cores since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _own_cpu_seconds():
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class MachineLoad:
    """Watches the machine over a run: the 1-minute load average at the
    start, and the CPU time that other processes used (all busy time less
    this process's own) and the hypervisor took (steal) during the run.

    The readers are arguments so that tests can feed fake readings; on a
    system without /proc the checks report nothing.
    """

    def __init__(self, read_loadavg=_read_loadavg, read_jiffies=_read_cpu_jiffies,
                 own_cpu_seconds=_own_cpu_seconds, ticks_per_second=None):
        self._read_loadavg = read_loadavg
        self._read_jiffies = read_jiffies
        self._own = own_cpu_seconds
        self._hz = ticks_per_second or os.sysconf("SC_CLK_TCK")
        self.load_at_start = None
        self.others_share = None
        self.steal_share = None
        self._start = None
        self.extra_own_seconds = 0.0

    def start(self):
        try:
            self.load_at_start = self._read_loadavg()
            self._start = (self._read_jiffies(), self._own())
        except OSError:
            self._start = None
        return self

    def add_own(self, seconds):
        """CPU seconds of helper processes (benchmark workers) to count as
        this run's own."""
        self.extra_own_seconds += seconds

    def stop(self):
        if self._start is None:
            return self
        (busy0, steal0, total0), own0 = self._start
        busy1, steal1, total1 = self._read_jiffies()
        own = self._own() - own0 + self.extra_own_seconds
        total = total1 - total0
        if total > 0:
            others = (busy1 - busy0) - own * self._hz
            self.others_share = max(0.0, others / total)
            self.steal_share = (steal1 - steal0) / total
        return self

    def warnings(self):
        """Sentences saying why the run's figures may not be comparable."""
        found = []
        # Once the run is over, the CPU time others used during it decides:
        # a high load average at the start may be work that just ended (a
        # previous benchmark's), which then cost the run nothing.
        quiet_during = (self.others_share is not None
                        and self.others_share <= BUSY_OTHERS)
        if (self.load_at_start is not None and self.load_at_start > BUSY_LOAD
                and not quiet_during):
            found.append(
                f"the 1-minute load average was {self.load_at_start:.2f} at "
                f"the start (above {BUSY_LOAD}): other work was running; "
                "rerun when the machine is quiet")
        if self.others_share is not None and self.others_share > BUSY_OTHERS:
            found.append(
                f"other processes used {self.others_share:.0%} of the CPU "
                "time during the run")
        if self.steal_share is not None and self.steal_share > BUSY_STEAL:
            found.append(
                f"the hypervisor took {self.steal_share:.0%} of the CPU time "
                "(steal) during the run")
        return found

    def describe(self):
        parts = []
        if self.load_at_start is not None:
            parts.append(f"load average {self.load_at_start:.2f} at the start")
        if self.others_share is not None:
            parts.append(f"other processes {self.others_share:.1%} and steal "
                         f"{self.steal_share:.1%} of the CPU time during the run")
        return "; ".join(parts) or "not measured"
