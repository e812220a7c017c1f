"""The soak test's report: tables, timeline and the verdict.

Owns turning a finished run (traffic tally, reloads, kills, /proc samples,
/metrics before and after) into the markdown report and the pass/fail
decision, with the rules of soak_observe.py plus the run-level checks (tandem
alive to the end, every traffic kind served, every reload applied, client
error rate). Does not own running anything.
"""

from __future__ import annotations

import statistics
from collections import Counter

from harness.soak_observe import delta, fd_verdict, rss_verdict, sum_by

# Client errors up to this long after a killed backend is back (health probes,
# `rise`, breaker) are put down to the kill in the report.
KILL_AFTERMATH = 5.0

# Every traffic kind the soak runs (the slow ones only with --slow-clients > 0).
KINDS = ["h1_keepalive", "h1_new_conn", "h1_tls", "tcp", "websocket", "h2c", "h2_tls",
         "slow_reader", "slow_upload"]


def render(soak, header: dict[str, str], before: list, after: list) -> tuple[str, bool]:
    """The markdown report of a finished run (a harness.soak.Soak) and whether it passed."""
    a = soak.args
    duration = a.minutes * 60
    lines = ["## Soak run", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines.append("")
    ok_total, err_total = soak.tally.total_ok(), soak.tally.total_errors()
    lines += ["| traffic kind | succeeded | failed | failures by type |", "|---|---:|---:|---|"]
    kinds = sorted(set(soak.tally.ok) | set(soak.tally.errors))
    for k in kinds:
        errs = soak.tally.errors.get(k, Counter())
        detail = ", ".join(f"{t} {n}" for t, n in errs.most_common()) or "-"
        lines.append(f"| {k} | {soak.tally.ok[k]:,} | {sum(errs.values()):,} | {detail} |")
    lines.append(f"| **all** | **{ok_total:,}** | **{err_total:,}** | |")
    lines.append("")
    elsewhere = Counter((k, w) for t, k, w in soak.tally.error_log
                        if not any(lo <= t <= hi for lo, hi in soak.kill_windows))
    near = len(soak.tally.error_log) - sum(elsewhere.values())
    lines.append(f"Client failures from a SIGKILL to {KILL_AFTERMATH:g} s after that backend's restart: "
                 f"{near:,}; at other times: {sum(elsewhere.values()):,}"
                 + (" (" + ", ".join(f"{k} {w} {n}" for (k, w), n in elsewhere.most_common()) + ")"
                    if elsewhere else "") + ".")
    lines.append("")
    reload_text = ", ".join(f"{how} {res} {n}" for (how, res), n in sorted(soak.reloads.items())) or "none"
    lines.append(f"Reloads: {reload_text}. Backends SIGKILLed: {soak.kills}, restarted: {soak.restarts}.")
    for e in soak.reload_errors[:10]:
        lines.append(f"- reload failure: {e}")
    lines.append("")
    keys = ("listener", "upstream", "code")
    req = delta(sum_by(after, "tandem_requests_total", keys), sum_by(before, "tandem_requests_total", keys))
    errs = delta(sum_by(after, "tandem_upstream_errors_total", ("kind",)),
                 sum_by(before, "tandem_upstream_errors_total", ("kind",)))
    lines.append("tandem's own counters over the run (`/metrics`, end minus start):")
    lines.append("")
    lines.append("- `tandem_requests_total` by listener/upstream and code: "
                 + (", ".join(f"{li}/{up} {code}: {int(n):,}" for (li, up, code), n in sorted(req.items()))
                    or "none"))
    conns = delta(sum_by(after, "tandem_connections_total", ("listener",)),
                  sum_by(before, "tandem_connections_total", ("listener",)))
    lines.append("- `tandem_connections_total` by listener: "
                 + (", ".join(f"{li}: {int(n):,}" for (li,), n in sorted(conns.items())) or "none"))
    dropped = delta(sum_by(after, "tandem_access_log_dropped_total", ()),
                    sum_by(before, "tandem_access_log_dropped_total", ()))
    lines.append(f"- access log: {soak.log_counts['access_lines']:,} lines written, "
                 f"{int(dropped.get((), 0)):,} dropped (`tandem_access_log_dropped_total`)")
    lines.append("- `tandem_upstream_errors_total` by kind: "
                 + (", ".join(f"{k}: {int(n):,}" for (k,), n in sorted(errs.items())) or "none"))
    lines.append("")
    lc = soak.log_counts
    lines.append(f"tandem's log: {lc['lines']:,} lines, {lc['WARN']:,} WARN, {lc['ERROR']:,} ERROR, "
                 f"{lc['panics']} panics" + (": distinct warnings (first 8):" if soak.log_samples else "."))
    lines += [f"  - `{w}`" for w in soak.log_samples]
    lines.append("")
    traffic = [s for s in soak.samples if s.phase == "traffic"]
    before_s = [s for s in soak.samples if s.phase == "before"]
    drain_s = [s for s in soak.samples if s.phase == "drain"]

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f}"
    rss = rss_verdict(soak.samples, a.warmup, duration, a.window, a.max_rss_growth, a.rss_floor_kib)
    fd = fd_verdict(soak.samples)
    peak_rss = max((s.rss_kib for s in soak.samples), default=0)
    peak_fd = max((s.fds for s in soak.samples), default=0)
    lines += ["| | before traffic | after warm-up | peak | end of traffic | after drain |",
              "|---|---:|---:|---:|---:|---:|"]
    if before_s and traffic and drain_s:
        lines.append(f"| RSS MiB | {mib(statistics.median(s.rss_kib for s in before_s))} | {mib(rss.warm_kib)} "
                     f"| {mib(peak_rss)} | {mib(rss.end_kib)} | {mib(drain_s[-1].rss_kib)} |")
        lines.append(f"| open fds | {fd.before} | {min(traffic, key=lambda s: abs(s.t - a.warmup)).fds} "
                     f"| {peak_fd} | {traffic[-1].fds} | {fd.after} |")
    lines.append("")
    step = max(1, int(duration / 10))
    timeline = [s for s in traffic if int(s.t) % step == 0]
    lines.append("Timeline (traffic): " + "; ".join(
        f"{s.t:.0f}s {mib(s.rss_kib)} MiB/{s.fds} fds" for s in timeline[:: max(1, len(timeline) // 12)]))
    lines.append("")
    rate = 100.0 * err_total / max(1, ok_total + err_total)
    kinds_run = [k for k in KINDS if a.slow_clients or not k.startswith("slow_")]
    idle_kinds = [k for k in kinds_run if soak.tally.ok[k] == 0]
    checks = [
        (not soak.tandem_died, soak.tandem_died or "tandem served until the end"),
        (lc["panics"] == 0, f"panics in tandem's log: {lc['panics']}"),
        (not soak.task_failures, "soak tasks failed: " + "; ".join(soak.task_failures) if soak.task_failures
         else "every soak task (clients, reloads, kills, sampler) ran to its end"),
        (rss.ok, rss.text),
        (fd.ok, fd.text),
        (not idle_kinds, "every traffic kind had successful requests" if not idle_kinds
         else "traffic kinds without a single success: " + ", ".join(idle_kinds)),
        (not any(res == "failed" for (_, res) in soak.reloads) and sum(soak.reloads.values()) > 0,
         f"reloads: {sum(soak.reloads.values())}, failed: "
         f"{sum(n for (_, res), n in soak.reloads.items() if res == 'failed')}"),
        (rate <= a.max_error_rate, f"client error rate {rate:.3f} % (limit {a.max_error_rate:g} %)"),
    ]
    passed = all(ok for ok, _ in checks)
    lines.append(f"Verdict: **{'PASS' if passed else 'FAIL'}**")
    lines.append("")
    lines += [f"- {'ok' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return "\n".join(lines) + "\n", passed
