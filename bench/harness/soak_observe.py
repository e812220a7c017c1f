"""What the soak test reads from tandem, and the pass/fail rules on it.

Owns sampling tandem's RSS and open descriptors from /proc over time, parsing
the Prometheus text of /metrics into sums by label, and the two verdicts:
memory growth after warm-up and descriptor leaks. The verdict functions are
pure (samples in, decision out) and tested in soak_observe_test.py. Does not
own the traffic or the processes.
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from harness.process import memory_kib


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since traffic started (negative before it)
    phase: str  # "before", "traffic" or "drain"
    rss_kib: int
    fds: int


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(pid: int, t: float, phase: str) -> Sample:
    """One reading; raises OSError when the process is gone."""
    fds = fd_count(pid)
    rss = memory_kib(pid, "VmRSS")
    if rss == 0:
        raise OSError(f"no VmRSS for pid {pid}")
    return Sample(t, phase, rss, fds)


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def sum_by(metrics: list[tuple[str, dict[str, str], float]], name: str,
           keys: tuple[str, ...]) -> Counter:
    """Sum of a metric's series grouped by the given labels (a tuple of their values)."""
    total: Counter = Counter()
    for n, labels, value in metrics:
        if n == name:
            total[tuple(labels.get(k, "") for k in keys)] += value
    return total


def delta(after: Counter, before: Counter) -> Counter:
    """Counter increase over the run (series born during the run start at 0)."""
    return Counter({k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0})


@dataclass(frozen=True)
class RssVerdict:
    ok: bool
    warm_kib: int  # median RSS over the window that ends with the warm-up
    end_kib: int  # median RSS over the last window of traffic
    limit_kib: int
    text: str


def rss_verdict(samples: list[Sample], warmup_s: float, traffic_s: float, window_s: float,
                max_growth_pct: float, floor_kib: int) -> RssVerdict:
    """RSS after warm-up vs. RSS at the end of traffic.

    Both levels are medians over `window_s` of samples, so one allocation burst
    at either instant does not decide; growth fails only past both
    `max_growth_pct` and `floor_kib` (noise on a small RSS is not a leak).
    """
    traffic = [s for s in samples if s.phase == "traffic"]
    warm = [s.rss_kib for s in traffic if warmup_s - window_s <= s.t <= warmup_s]
    end = [s.rss_kib for s in traffic if traffic_s - window_s <= s.t <= traffic_s]
    if not warm or not end:
        return RssVerdict(False, 0, 0, 0, "not enough samples for the RSS verdict")
    warm_kib, end_kib = int(statistics.median(warm)), int(statistics.median(end))
    limit = max(int(warm_kib * (1 + max_growth_pct / 100)), warm_kib + floor_kib)
    ok = end_kib <= limit
    growth = 100.0 * (end_kib - warm_kib) / warm_kib
    text = (f"RSS after warm-up {warm_kib / 1024:.1f} MiB, at the end of traffic {end_kib / 1024:.1f} MiB "
            f"({growth:+.1f} %; limit {limit / 1024:.1f} MiB = +{max_growth_pct:g} % or "
            f"+{floor_kib / 1024:g} MiB, whichever is larger)")
    return RssVerdict(ok, warm_kib, end_kib, limit, text)


@dataclass(frozen=True)
class FdVerdict:
    ok: bool
    before: int  # fewest descriptors seen before traffic
    after: int  # fewest seen once traffic stopped and idle connections had time to close
    text: str


def fd_verdict(samples: list[Sample]) -> FdVerdict:
    """Descriptors after the drain vs. before traffic.

    Minimums on both sides: a health probe's socket open at the instant of one
    reading is not a leak, while a leaked descriptor is in every reading.
    """
    before = [s.fds for s in samples if s.phase == "before"]
    after = [s.fds for s in samples if s.phase == "drain"]
    if not before or not after:
        return FdVerdict(False, 0, 0, "not enough samples for the descriptor verdict")
    b, a = min(before), min(after)
    ok = a <= b
    text = (f"open descriptors before traffic {b}, after traffic and idle close {a}"
            + ("" if ok else f": {a - b} more (leak)"))
    return FdVerdict(ok, b, a, text)
