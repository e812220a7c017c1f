"""The markdown report: one table over scenarios x contestants.

Owns formatting and the statistics shown (median, min..max, median of
per-round ratios to HAProxy, contention flags). Pure: takes the collected
results, returns text.
"""

from __future__ import annotations

import statistics

from harness.model import LABELS, Contestant, Run, Scenario


def table(header: dict[str, str], scenarios: list[Scenario], names: list[str],
          contestants: dict[str, Contestant], results: dict[str, dict[str, list[Run]]],
          ratios: dict[str, dict[str, list[float]]], notes: list[str]) -> str:
    """The markdown report: header bullets, one table, notes."""
    out = ["# tandem load benchmark", ""]
    out += [f"- {k}: {v}" for k, v in header.items()]
    out += ["",
            "| scenario | contestant | median | min..max | vs HAProxy | p50 | p99 | CPU µs/req "
            "| proxy core busy / waited | RSS idle/peak MiB | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    contended = []
    for sc in scenarios:
        for name in names:
            c = contestants.get(name)
            runs = results.get(sc.key, {}).get(name)
            label = LABELS[name]
            title = f"{sc.title} ({sc.unit})"
            if c is None:
                out.append(f"| {title} | {label} | skipped (see notes) | | | | | | | | |")
                continue
            if not runs:
                if sc.listener in c.skip:
                    out.append(f"| {title} | {label} | skipped: {c.skip[sc.listener]} | | | | | | | | |")
                continue
            vals = [r.value for r in runs if r.value is not None]
            if not vals:
                out.append(f"| {title} | {label} | failed | | | | | | | | |")
                continue
            row_ratios = ratios.get(sc.key, {}).get(name)
            ratio = f"{statistics.median(row_ratios):.2f}" if row_ratios else "-"
            p50 = med([r.p50_us for r in runs])
            p99 = med([r.p99_us for r in runs])
            cpu = med([r.cpu_us for r in runs])
            cpu_s = "-" if cpu is None else f"{cpu:.1f}" + (" /MiB" if sc.kind == "iperf3" else "")
            busy, waited = med([r.busy for r in runs]), med([r.waited for r in runs])
            core = "-" if busy is None else f"{busy:.0%} / {waited:.0%}"
            worst = max((r.waited for r in runs if r.waited is not None), default=0.0)
            if worst > 0.05:
                contended.append(f"{sc.key} {name} ({worst:.0%})")
            rss = "-"
            if c.proc is not None:
                rss = f"{kib_mib(c.rss_idle_kib)} / {kib_mib(c.rss_peak_kib)}"
            failed = sum(1 for r in runs if r.value is None)
            errors = sum(r.errors for r in runs)
            err = str(errors) + (f" ({failed} failed runs)" if failed else "")
            out.append(
                f"| {title} | {label} | {fmt(statistics.median(vals))} | "
                f"{fmt(min(vals))}..{fmt(max(vals))} | {ratio} | {fmt_us(p50)} | {fmt_us(p99)} | "
                f"{cpu_s} | {core} | {rss} | {err} |")
    notes = list(notes)
    if contended:
        proxy_rows = sum(len([n for n in v if n != "direct"]) for v in results.values())
        where = "every proxy run" if len(contended) >= proxy_rows else ", ".join(contended)
        notes.append("the proxy's CPU was taken by other processes (runqueue wait > 5 % of a run) in: "
                     + where + ". Those req/s and latencies understate the proxy; "
                     "CPU µs/req is still valid. Rerun on a quiet machine for absolute numbers.")
    if notes:
        out += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def med(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def kib_mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f}"


def idle_table(names: list[str], contestants: dict[str, Contestant]) -> str:
    """Extra RSS per idle client connection, as measured by harness.idle."""
    rows = []
    for name in names:
        c = contestants.get(name)
        if c is None or c.idle is None:
            continue
        if isinstance(c.idle, str):
            rows.append(f"| {LABELS[name]} | failed: {c.idle} | | |")
            continue
        rows.append(f"| {LABELS[name]} | {c.idle.connections:,} | {c.idle.silent_bytes / 1024:.2f} KiB "
                    f"| {c.idle.used_bytes / 1024:.2f} KiB |")
    if not rows:
        return ""
    return "\n".join([
        "", "## Memory per idle client connection", "",
        "Extra RSS of the proxy (process tree) per open client connection, read once RSS "
        "stopped changing: first with nothing sent, then after one keep-alive request on each "
        "(answered, then idle).", "",
        "| contestant | connections | nothing sent | idle after one request |",
        "|---|---:|---:|---:|",
    ] + rows) + "\n"
