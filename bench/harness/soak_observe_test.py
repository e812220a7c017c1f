"""Tests of the soak verdicts and the /metrics parsing (soak_observe.py).

Run: `cd bench && python3 -m unittest harness.soak_observe_test` (stdlib only).
"""

from __future__ import annotations

import unittest

from harness.soak_observe import Sample, delta, fd_verdict, parse_metrics, rss_verdict, sum_by


def run(rss_at, fds_before=(20, 21, 20), fds_drain=(20, 20)) -> list[Sample]:
    """Samples of a 100 s run: rss_at(t) KiB each second of traffic."""
    s = [Sample(-1.0 + i * 0.1, "before", 10_000, f) for i, f in enumerate(fds_before)]
    s += [Sample(float(t), "traffic", rss_at(t), 50) for t in range(0, 101)]
    s += [Sample(101.0 + i, "drain", 20_000, f) for i, f in enumerate(fds_drain)]
    return s


class RssVerdictTest(unittest.TestCase):
    def verdict(self, samples, floor_kib=1024):
        return rss_verdict(samples, warmup_s=30, traffic_s=100, window_s=10, max_growth_pct=10,
                           floor_kib=floor_kib)

    def test_flat_rss_passes(self):
        v = self.verdict(run(lambda t: 20_000))
        self.assertTrue(v.ok, v.text)
        self.assertEqual((v.warm_kib, v.end_kib), (20_000, 20_000))

    def test_steady_growth_past_ten_percent_fails(self):
        # 20 MiB after warm-up, +40 KiB/s: about +14 % by the end.
        v = self.verdict(run(lambda t: 20_000 + 40 * max(0, t - 30)))
        self.assertFalse(v.ok, v.text)

    def test_growth_during_warm_up_does_not_count(self):
        v = self.verdict(run(lambda t: 10_000 + 300 * t if t < 20 else 16_000))
        self.assertTrue(v.ok, v.text)

    def test_small_absolute_growth_on_a_small_rss_passes(self):
        # +15 % but only +600 KiB: under the floor.
        v = self.verdict(run(lambda t: 4_000 if t < 50 else 4_600))
        self.assertTrue(v.ok, v.text)
        self.assertFalse(self.verdict(run(lambda t: 4_000 if t < 50 else 4_600), floor_kib=0).ok)

    def test_one_spike_at_the_end_is_not_growth(self):
        v = self.verdict(run(lambda t: 30_000 if t == 99 else 20_000))
        self.assertTrue(v.ok, v.text)

    def test_missing_samples_fail(self):
        self.assertFalse(rss_verdict([], 30, 100, 10, 10, 1024).ok)


class FdVerdictTest(unittest.TestCase):
    def test_back_to_baseline_passes(self):
        self.assertTrue(fd_verdict(run(lambda t: 1, fds_drain=(25, 21, 20))).ok)

    def test_a_transient_probe_socket_at_baseline_is_ignored(self):
        self.assertTrue(fd_verdict(run(lambda t: 1, fds_before=(21, 20, 21), fds_drain=(20,))).ok)

    def test_one_descriptor_more_after_drain_is_a_leak(self):
        v = fd_verdict(run(lambda t: 1, fds_before=(20, 20), fds_drain=(22, 21, 21)))
        self.assertFalse(v.ok)
        self.assertIn("1 more", v.text)

    def test_no_drain_samples_fail(self):
        self.assertFalse(fd_verdict(run(lambda t: 1, fds_drain=())).ok)


class MetricsTest(unittest.TestCase):
    TEXT = """# HELP tandem_requests_total Requests.
# TYPE tandem_requests_total counter
tandem_requests_total{listener="http",upstream="web",code="200"} 7
tandem_requests_total{listener="http",upstream="echo",code="200"} 3
tandem_requests_total{listener="https",upstream="web",code="502"} 1
tandem_upstream_errors_total{upstream="web",server="127.0.0.1:1",kind="connect"} 4
tandem_config_generation 12
"""

    def test_sums_by_label_and_deltas(self):
        m = parse_metrics(self.TEXT)
        by = sum_by(m, "tandem_requests_total", ("listener", "code"))
        self.assertEqual(by[("http", "200")], 10)
        self.assertEqual(by[("https", "502")], 1)
        before = sum_by(parse_metrics(self.TEXT.replace("} 7", "} 2")), "tandem_requests_total",
                        ("listener", "code"))
        d = delta(by, before)
        self.assertEqual(d[("http", "200")], 5)
        self.assertNotIn(("https", "502"), delta(by, by))
        self.assertEqual(sum_by(m, "tandem_config_generation", ())[()], 12)


if __name__ == "__main__":
    unittest.main()
