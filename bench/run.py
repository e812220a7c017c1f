#!/usr/bin/env python3
"""Load benchmark: tandem against HAProxy and nginx (and direct-to-backend).

Owns the orchestration: starting two static nginx backends and an iperf3
server, starting each proxy under test with an equivalent configuration
(bench/conf/*), driving wrk and iperf3 in interleaved rounds, sampling each
proxy's CPU time, run-queue wait and RSS around every run, and printing one
markdown table (also written to --out). Process control, /proc accounting,
tool handling and the table itself live in bench/harness/.

Does not own: building tandem (it only looks for the release binary) or
judging the numbers.

Invariants: every process it starts runs in its own session and is stopped by
its PID (process group = that PID) on exit, SIGINT or SIGTERM; every load run
is wrapped in `timeout`; ports are picked free at run time; the temp dir is
removed at the end (unless --keep-tmp).

Tested by running it: `bench/run.sh --quick` (the CI smoke run) and a full
`bench/run.sh --rounds 3 --duration 5`. Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

# Keep the source tree clean: no __pycache__ under bench/.
sys.dont_write_bytecode = True

from harness import cert, h2load, idle, report, s_time  # noqa: E402 (after the line above on purpose)
from harness.model import (BODY, CONTESTANTS, LOG_CONTESTANTS, ONE_MIB, QUICK_SCENARIOS, SCENARIOS,
                           BenchError, Contestant, Run, Scenario)
from harness.process import (Supervisor, cpu_seconds, free_ports, memory_kib, run_bounded,
                             runqueue_wait_seconds, wait_listening)
from harness.tool import check_tools, cpu_model, loadavg, stream_module, versions, which

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CONF_DIR = os.path.join(BENCH_DIR, "conf")
REPO_DIR = os.path.dirname(BENCH_DIR)
DEFAULT_TANDEM = os.path.join(REPO_DIR, "target", "release", "tandem")
DEFAULT_OUT = os.path.join(BENCH_DIR, "results-latest.md")

WRK_SCRIPT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%.0f,\"duration_us\":%.0f,\"bytes\":%.0f," ..
    "\"connect\":%.0f,\"read\":%.0f,\"write\":%.0f,\"status\":%.0f,\"timeout\":%.0f," ..
    "\"p50_us\":%.0f,\"p99_us\":%.0f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def render(template: str, dest: str, **values) -> str:
    with open(os.path.join(CONF_DIR, template)) as f:
        text = string.Template(f.read()).substitute(values)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def render_str(template: str, **values) -> str:
    with open(os.path.join(CONF_DIR, template)) as f:
        return string.Template(f.read()).substitute(values)


def log_settings(name: str, tmp: str) -> dict[str, str]:
    """Template values that turn request logging on for the *-log contestants.

    HAProxy logs through its log API, not to files: `log stdout` writes each
    line with one write(2) straight to its stdout, which the supervisor points
    at a file (tmp/haproxy-log.log), so no syslog daemon's CPU is left out of
    the comparison and the line reaches a file as tandem's does. Format:
    `option httplog` (HAProxy falls back to its TCP format on the tcp frontends).
    tandem writes JSON lines to tmp/tandem-access.log.
    """
    values = {"log_global": "", "log_defaults": "", "access_log": ""}
    if name == "haproxy-log":
        values["log_global"] = "    log stdout format raw local0 info"
        values["log_defaults"] = "    log global\n    option httplog"
    elif name == "tandem-log":
        values["access_log"] = (f"access_log:\n  path: {os.path.join(tmp, 'tandem-access.log')}\n"
                                "  format: json")
    return values


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        cpus = sorted(os.sched_getaffinity(0))
        if args.no_pin:
            self.proxy_cpu = self.load_cpu = None
        elif len(cpus) >= 2:
            self.proxy_cpu, self.load_cpu = cpus[0], cpus[1]
        else:
            self.proxy_cpu = self.load_cpu = cpus[0]
        self.tmp = tempfile.mkdtemp(prefix="tandem-bench-")
        # nginx workers may run as an unprivileged user: they must read the tree.
        os.chmod(self.tmp, 0o755)
        self.sup = Supervisor(self.tmp)
        self.notes: list[str] = []
        self.contestants: dict[str, Contestant] = {}
        self.results: dict[str, dict[str, list[Run]]] = {}
        self.ratios: dict[str, dict[str, list[float]]] = {}
        self.cert: cert.Certificate | None = None
        self.wrk_script = os.path.join(self.tmp, "report.lua")
        with open(self.wrk_script, "w") as f:
            f.write(WRK_SCRIPT)

    # -- pinning

    def pin(self, cpu: int | None, argv: list[str]) -> list[str]:
        if self.args.nice is not None:
            argv = ["nice", "-n", str(self.args.nice), *argv]
        return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]

    def pinning_text(self) -> str:
        text = self.pinning_cpus()
        if self.args.nice is not None:
            text += f"; every process started under `nice -n {self.args.nice}`"
        return text

    def pinning_cpus(self) -> str:
        if self.proxy_cpu is None:
            return "none (--no-pin)"
        if self.proxy_cpu == self.load_cpu:
            return (f"only one CPU available: everything on CPU {self.proxy_cpu} "
                    f"(taskset -c {self.proxy_cpu}); proxies compete with wrk")
        return (f"proxy under test on CPU {self.proxy_cpu} (taskset -c {self.proxy_cpu}); "
                f"wrk, iperf3 and the backends on CPU {self.load_cpu} "
                f"(taskset -c {self.load_cpu})")

    # -- setup

    def start_backends(self) -> None:
        www = os.path.join(self.tmp, "www")
        os.makedirs(www)
        with open(os.path.join(www, "1m"), "wb") as f:
            f.write(os.urandom(ONE_MIB))
        os.chmod(www, 0o755)
        os.chmod(os.path.join(www, "1m"), 0o644)
        nginx = which("nginx")
        self.backend_ports = free_ports(2)
        for i, port in enumerate(self.backend_ports, 1):
            name = f"backend{i}"
            conf = render("backend-nginx.conf", os.path.join(self.tmp, f"{name}.conf"),
                          tmp=self.tmp, name=name, port=port, body=BODY)
            proc = self.sup.start(name, self.pin(self.load_cpu, [nginx, "-e", "stderr", "-p", self.tmp, "-c", conf]))
            if not wait_listening(port, proc):
                raise BenchError(f"{name} (nginx) did not start:\n{self.sup.log_tail(name)}")
        self.iperf_port = None
        if which("iperf3"):
            (port,) = free_ports(1)
            proc = self.sup.start("iperf3-server", self.pin(self.load_cpu, ["iperf3", "-s", "-p", str(port)]))
            if wait_listening(port, proc):
                self.iperf_port = port
            else:
                self.notes.append("iperf3 server did not start: iperf3 scenario skipped")
        else:
            self.notes.append("iperf3 not installed: iperf3 scenario skipped")
        if not which("h2load"):
            self.notes.append("h2load not installed (apt-get install nghttp2-client): "
                              "HTTP/2 scenarios skipped")
        for port in self.backend_ports:
            self.verify("backend", port)

    def verify(self, who: str, port: int, tls: bool = False) -> None:
        """One GET / and one GET /1m, so a broken setup fails loudly, not as a fast number."""
        # The run's own self-signed certificate: nothing to verify it against.
        context = ssl._create_unverified_context() if tls else None
        for path, length in (("/", len(BODY)), ("/1m", ONE_MIB)):
            url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as r:
                    got = len(r.read())
                    status = r.status
            except OSError as e:
                raise BenchError(f"{who}: GET {url} failed: {e}") from e
            if status != 200 or got != length:
                raise BenchError(f"{who}: GET {url} -> {status}, {got} bytes (want 200, {length})")

    def make_certificate(self) -> None:
        """The one ECDSA P-256 certificate every proxy terminates TLS with."""
        try:
            self.cert = cert.generate(self.tmp)
        except BenchError as e:
            self.notes.append(f"no TLS certificate, TLS scenarios skipped: {e}")

    def tls_values(self, tls_port: int) -> dict[str, str]:
        """Config lines of the TLS listener per proxy (comments without a certificate)."""
        if self.cert is None:
            return dict(tls_bind="# no TLS certificate", tls_listen="# no TLS certificate",
                        tls_listener="  # no TLS certificate")
        return dict(
            tls_bind=f"bind 127.0.0.1:{tls_port} ssl crt {self.cert.combined} alpn h2,http/1.1",
            tls_listen=(f"listen 127.0.0.1:{tls_port} ssl http2;\n"
                        f"        ssl_certificate {self.cert.cert};\n"
                        f"        ssl_certificate_key {self.cert.key};\n"
                        # nginx 1.22 leaves TLS 1.3 out by default; the others offer it.
                        "        ssl_protocols TLSv1.2 TLSv1.3;"),
            tls_listener=render_str("tandem-tls.yaml", tls_port=tls_port, cert=self.cert.cert,
                                    key=self.cert.key).rstrip("\n"))

    def verify_http10_tls(self, who: str, port: int) -> None:
        """The request `openssl s_time` sends in the full-handshake row must get a 200."""
        context = ssl._create_unverified_context()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context.wrap_socket(raw) as s:
                    s.sendall(s_time.request("/"))
                    head = s.recv(64)
        except OSError as e:
            raise BenchError(f"{who}: HTTP/1.0 GET / over TLS failed: {e}") from e
        if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
            raise BenchError(f"{who}: HTTP/1.0 GET / over TLS answered {head[:40]!r}")

    def start_proxies(self, wanted: list[str]) -> None:
        b1, b2 = self.backend_ports
        iperf_backend = self.iperf_port or b1  # placeholder target when iperf3 is absent
        self.make_certificate()
        plain = "the backends serve plain-text HTTP/1.1 only"
        self.contestants["direct"] = Contestant(
            "direct", {"http": b1, "tcp": b1, "iperf": self.iperf_port or 0},
            skip={"tls": plain, "h2c": plain})
        for name in wanted:
            if name == "direct":
                continue
            http_port, tcp_port, iperf_port, admin_port, tls_port, h2c_port = free_ports(6)
            ports = {"http": http_port, "tcp": tcp_port, "iperf": iperf_port, "tls": tls_port,
                     "h2c": h2c_port}
            values = dict(tmp=self.tmp, backend1=b1, backend2=b2, iperf_backend=iperf_backend,
                          http_port=http_port, tcp_port=tcp_port, iperf_port=iperf_port,
                          admin_port=admin_port, h2c_port=h2c_port, **self.tls_values(tls_port),
                          **log_settings(name, self.tmp))
            c = Contestant(name, ports)
            # Listeners every proxy serves besides the plain HTTP one.
            extra = [h2c_port] + ([tls_port] if self.cert else [])
            try:
                if name in ("haproxy", "haproxy-log"):
                    conf = render("haproxy.cfg", os.path.join(self.tmp, f"{name}.cfg"), **values)
                    c.proc = self.launch(name, [which("haproxy"), "-db", "-f", conf],
                                         [http_port, tcp_port, iperf_port] + extra)
                elif name == "nginx":
                    has_stream, load_line = stream_module()
                    stream = render_str("nginx-stream.conf", **values) if has_stream else "# stream module missing"
                    if not has_stream:
                        c.skip["tcp"] = c.skip["iperf"] = "nginx stream module missing (apt-get install libnginx-mod-stream)"
                    conf = render("nginx-proxy.conf", os.path.join(self.tmp, "nginx-proxy.conf"),
                                  load_stream_module=load_line, stream_section=stream, **values)
                    ports_up = [http_port] + extra + ([tcp_port, iperf_port] if has_stream else [])
                    c.proc = self.launch(name, [which("nginx"), "-e", "stderr", "-p", self.tmp, "-c", conf], ports_up)
                elif name in ("tandem", "tandem-log"):
                    c.proc = self.start_tandem(c, values, extra)
                    if c.proc is None:
                        continue
                self.verify(name, http_port)
                if self.cert:
                    self.verify(f"{name} (TLS listener)", tls_port, tls=True)
                    self.verify_http10_tls(f"{name} (TLS listener)", tls_port)
                if "tcp" not in c.skip:
                    self.verify(f"{name} (tcp listener)", tcp_port)
            except BenchError as e:
                if name.startswith("tandem"):
                    # tandem is under development: report, never abort the others.
                    if c.proc is not None:
                        self.sup.stop(c.proc)
                    self.notes.append(f"{name} skipped: {e}")
                    continue
                raise
            time.sleep(0.5)
            c.rss_idle_kib = memory_kib(c.proc.pid, "VmRSS")
            self.contestants[name] = c

    def launch(self, name: str, argv: list[str], ports: list[int]) -> subprocess.Popen:
        proc = self.sup.start(name, self.pin(self.proxy_cpu, argv))
        for port in ports:
            if not wait_listening(port, proc):
                tail = self.sup.log_tail(name)
                code = proc.poll()
                self.sup.stop(proc)
                how = f"exited with code {code}" if code is not None else "still not listening after 10 s"
                raise BenchError(f"{name} did not listen on 127.0.0.1:{port} ({how})"
                                 + (f":\n{tail}" if tail else ""))
        return proc

    def start_tandem(self, c: Contestant, values: dict, extra: list[int]) -> subprocess.Popen | None:
        binary = self.args.tandem
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            self.notes.append(f"tandem skipped: binary not found at {binary} "
                              "(build it with `cargo build --release`)")
            return None
        full = dict(values,
                    tcp_listeners=render_str("tandem-tcp.yaml", **values),
                    tcp_upstreams=render_str("tandem-tcp-upstreams.yaml", **values))
        http_only = dict(values, tcp_listeners="", tcp_upstreams="")
        attempts = [("full", full, ["http", "tcp", "iperf"])]
        attempts.append(("http-only", http_only, ["http"]))
        errors = []
        for label, vals, listeners in attempts:
            conf = render("tandem.yaml", os.path.join(self.tmp, f"{c.name}-{label}.yaml"), **vals)
            # `check` only explains a refusal; whether tandem serves is decided
            # by starting it (a work-in-progress binary may lack `check`).
            check = subprocess.run([binary, "check", "-c", conf], capture_output=True, text=True, timeout=30)
            try:
                proc = self.launch(c.name, [binary, "run", "-c", conf, "--log-level", "warn"],
                                   [c.ports[lst] for lst in listeners] + extra)
            except BenchError as e:
                why = f"{label} config: {e}"
                if check.returncode != 0:
                    why += (f" (`tandem check` exit {check.returncode}: "
                            + (check.stdout + check.stderr).strip()[:400] + ")")
                errors.append(why.replace("\n", " | "))
                continue
            if label != "full":
                c.skip["tcp"] = c.skip["iperf"] = "tandem did not serve mode: tcp; ran HTTP only"
                self.notes.append("tandem: full config failed, ran the HTTP listener only: " + " || ".join(errors))
            return proc
        raise BenchError(" | ".join(errors))

    # -- load generators

    def run_wrk(self, port: int, sc: Scenario, seconds: int) -> dict | None:
        scheme = "https" if sc.listener == "tls" else "http"
        url = f"{scheme}://127.0.0.1:{port}{sc.path}"
        argv = self.pin(self.load_cpu, [
            "timeout", "-k", "5", str(seconds + 20), which("wrk"), "-t1", f"-c{sc.conns}",
            f"-d{seconds}s", "--latency", "-s", self.wrk_script, url])
        r = run_bounded(argv, seconds + 40)
        if r is None:
            return None
        m = re.search(r"^BENCHJSON (\{.*\})$", r.stdout, re.M)
        if r.returncode != 0 or not m:
            sys.stderr.write(f"wrk failed ({r.returncode}) on {url}: {r.stderr.strip()[:300]}\n")
            return None
        return json.loads(m.group(1))

    def run_h2load(self, port: int, sc: Scenario, seconds: int) -> dict | None:
        scheme = "https" if sc.listener == "tls" else "http"
        url = f"{scheme}://127.0.0.1:{port}{sc.path}"
        argv = self.pin(self.load_cpu, ["timeout", "-k", "5", str(seconds + 20),
                                        *h2load.argv(which("h2load"), url, sc.conns, sc.streams, seconds)])
        r = run_bounded(argv, seconds + 40)
        if r is None:
            return None
        res = h2load.parse(r.stdout)
        if r.returncode != 0 or res is None:
            sys.stderr.write(f"h2load failed ({r.returncode}) on {url}: "
                             f"{(r.stderr or r.stdout).strip()[-300:]}\n")
            return None
        return res

    def run_s_time(self, port: int, sc: Scenario, seconds: int) -> dict | None:
        """sc.conns `openssl s_time -new` clients in parallel; wall time measured here."""
        argv = self.pin(self.load_cpu, ["timeout", "-k", "5", str(seconds + 20),
                                        *s_time.argv(which("openssl"), port, sc.path, seconds)])
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(sc.conns) as pool:
            outs = list(pool.map(lambda _: run_bounded(argv, seconds + 40), range(sc.conns)))
        wall = time.monotonic() - start
        parsed = [s_time.parse(r.stdout, len(BODY)) if r and r.returncode == 0 else None for r in outs]
        if any(p is None for p in parsed):
            bad = next(r for r, p in zip(outs, parsed) if p is None)
            why = "timed out" if bad is None else f"exit {bad.returncode}: {bad.stderr.strip()[-300:]}"
            sys.stderr.write(f"openssl s_time failed on port {port}: {why}\n")
            return None
        return {"requests": sum(p["requests"] for p in parsed), "duration_us": wall * 1e6,
                "errors": sum(p["errors"] for p in parsed)}

    def run_load(self, port: int, sc: Scenario, seconds: int) -> dict | None:
        if sc.kind == "wrk":
            return self.run_wrk(port, sc, seconds)
        if sc.kind == "h2load":
            return self.run_h2load(port, sc, seconds)
        if sc.kind == "s_time":
            return self.run_s_time(port, sc, seconds)
        return self.run_iperf(port, seconds)

    def run_iperf(self, port: int, seconds: int) -> dict | None:
        argv = self.pin(self.load_cpu, [
            "timeout", "-k", "5", str(seconds + 20), "iperf3", "-c", "127.0.0.1",
            "-p", str(port), "-t", str(seconds), "-J"])
        r = run_bounded(argv, seconds + 40)
        try:
            data = json.loads(r.stdout) if r else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            return None
        if "error" in data or r.returncode != 0:
            sys.stderr.write(f"iperf3 failed on port {port}: {data.get('error', r.returncode)}\n")
            return None
        recv = data["end"]["sum_received"]
        return {"bytes": recv["bytes"], "seconds": recv["seconds"]}

    def measure(self, c: Contestant, sc: Scenario) -> Run:
        port = c.ports[sc.listener]
        warm, dur = self.args.warmup, self.args.duration
        pid = c.proc.pid if c.proc else None
        if warm > 0:
            self.run_load(port, sc, warm)
        before = (cpu_seconds(pid), runqueue_wait_seconds(pid), time.monotonic()) if pid else None
        res = self.run_load(port, sc, dur)
        after = (cpu_seconds(pid), runqueue_wait_seconds(pid), time.monotonic()) if pid else None
        if res is None:
            return Run(None, note=f"{sc.kind} failed")
        run = Run(None)
        cpu = None
        if before and after:
            cpu = after[0] - before[0]
            wall = after[2] - before[2]
            run.busy, run.waited = cpu / wall, (after[1] - before[1]) / wall
        if sc.kind == "wrk":
            secs = res["duration_us"] / 1e6
            reqs = res["requests"]
            rps = reqs / secs if secs > 0 else 0.0
            body = ONE_MIB if sc.path == "/1m" else len(BODY)
            run.value = rps if sc.unit == "req/s" else rps * body / ONE_MIB
            run.p50_us, run.p99_us = res["p50_us"], res["p99_us"]
            run.errors = int(res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"])
            run.cpu_us = cpu * 1e6 / reqs if cpu is not None and reqs else None
        elif sc.kind in ("h2load", "s_time"):
            secs, reqs = res["duration_us"] / 1e6, res["requests"]
            run.value = reqs / secs if secs > 0 else 0.0
            run.errors = res["errors"]
            run.cpu_us = cpu * 1e6 / reqs if cpu is not None and reqs else None
        else:
            mib = res["bytes"] / ONE_MIB
            run.value = mib / res["seconds"]
            run.cpu_us = cpu * 1e6 / mib if cpu is not None and mib else None
        return run

    # -- rounds

    def scenarios(self) -> list[Scenario]:
        keys = self.args.scenarios or (QUICK_SCENARIOS if self.args.quick else [s.key for s in SCENARIOS])
        chosen = [s for s in SCENARIOS if s.key in keys]
        if self.iperf_port is None:
            chosen = [s for s in chosen if s.kind != "iperf3"]
        if not which("h2load"):
            chosen = [s for s in chosen if s.kind != "h2load"]
        if self.cert is None:
            chosen = [s for s in chosen if s.listener != "tls"]
        return chosen

    def run_rounds(self) -> None:
        names = [n for n in self.args.contestants if n in self.contestants]
        scenarios = self.scenarios()
        per_run = self.args.warmup + self.args.duration
        total = self.args.rounds * len(scenarios) * len(names) * per_run
        print(f"# {len(names)} contestants x {len(scenarios)} scenarios x {self.args.rounds} rounds, "
              f"{per_run} s per run: about {total / 60:.1f} min", flush=True)
        print(f"# pinning: {self.pinning_text()}", flush=True)
        for r in range(self.args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            print(f"# round {r + 1}/{self.args.rounds}: order {' '.join(order)}", flush=True)
            for sc in scenarios:
                this_round: dict[str, Run] = {}
                for name in order:
                    c = self.contestants[name]
                    if sc.listener in c.skip:
                        continue
                    if c.proc is not None and c.proc.poll() is not None:
                        self.notes.append(f"{name} exited during the run (code {c.proc.returncode}): "
                                          + self.sup.log_tail(name, 5).replace("\n", " | "))
                        c.skip.update({k: "exited" for k in ("http", "tcp", "iperf", "tls", "h2c")})
                        continue
                    run = self.measure(c, sc)
                    this_round[name] = run
                    self.results.setdefault(sc.key, {}).setdefault(name, []).append(run)
                    shown = "failed" if run.value is None else f"{run.value:,.1f} {sc.unit}"
                    core = "" if run.busy is None else f"  (proxy core busy {run.busy:.0%}, waited {run.waited:.0%})"
                    errors = f"  errors={run.errors}" if run.errors else ""
                    print(f"  {sc.key:<11} {name:<8} {shown}{core}{errors}", flush=True)
                base = this_round.get("haproxy")
                if base and base.value:
                    for name, run in this_round.items():
                        if run.value is not None:
                            self.ratios.setdefault(sc.key, {}).setdefault(name, []).append(run.value / base.value)
        for c in self.contestants.values():
            if c.proc is not None and c.proc.poll() is None:
                c.rss_peak_kib = memory_kib(c.proc.pid, "VmHWM")

    def measure_idle(self) -> None:
        """Extra RSS per idle client connection, each proxy in turn (after the rounds)."""
        if self.args.idle_conns == 0:
            return
        for name in self.args.contestants:
            c = self.contestants.get(name)
            if c is None or c.proc is None or c.proc.poll() is not None:
                continue
            print(f"# idle connections: {name}, {self.args.idle_conns:,}", flush=True)
            try:
                c.idle = idle.measure(c.ports["http"], c.proc.pid, self.args.idle_conns)
            except BenchError as e:
                c.idle = str(e)

    def cleanup(self) -> None:
        # A second Ctrl-C must not cut the stopping of our processes short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        self.sup.stop_all()
        if self.args.keep_tmp:
            print(f"# temp dir kept: {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Load benchmark: tandem vs HAProxy vs nginx (see bench/README.md).")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: 1 round, 1 s warm-up, 2 s runs, 6 scenarios (< 2 min)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, help="unrecorded warm-up seconds before each run (default 2)")
    p.add_argument("--out", default=DEFAULT_OUT, help="also write the table here (default bench/results-latest.md)")
    p.add_argument("--tandem", default=DEFAULT_TANDEM, help="tandem binary (default target/release/tandem)")
    p.add_argument("--contestants", default=",".join(CONTESTANTS),
                   help="comma list from: " + ",".join(CONTESTANTS + LOG_CONTESTANTS))
    p.add_argument("--scenarios", default="", help="comma list from: " + ",".join(s.key for s in SCENARIOS))
    p.add_argument("--idle-conns", type=int, metavar="N",
                   help="idle client connections for the memory-per-connection measurement "
                        "(default 10000, --quick 500; 0 skips it)")
    p.add_argument("--install", action="store_true", help="apt-get install missing tools first")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--nice", type=int, metavar="N",
                   help="start proxies, backends and load generators under `nice -n N` "
                        "(e.g. -10 as root on a shared machine; off by default)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (2 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.idle_conns = a.idle_conns if a.idle_conns is not None else (500 if a.quick else 10_000)
    a.contestants = [x for x in a.contestants.split(",") if x]
    a.scenarios = [x for x in a.scenarios.split(",") if x]
    bad = [x for x in a.contestants if x not in CONTESTANTS + LOG_CONTESTANTS]
    bad += [x for x in a.scenarios if x not in {s.key for s in SCENARIOS}]
    if bad:
        p.error("unknown contestant/scenario: " + ", ".join(bad))
    if "haproxy" not in a.contestants:
        p.error("haproxy is the reference for the ratio column; keep it in --contestants")
    if a.rounds < 1 or a.duration < 1 or a.warmup < 0 or a.idle_conns < 0:
        p.error("--rounds and --duration must be >= 1, --warmup and --idle-conns >= 0")
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_tools(args.install)
    # wrk -c200 plus proxies plus backends needs more than a small default,
    # and the idle measurement holds --idle-conns sockets here and in each proxy.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT explicitly: a shell starting us in the background sets it to
    # SIG_IGN, and Python would then never raise KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    shown_cmd = os.environ.get("BENCH_ARGV0", "bench/run.py")
    command = " ".join([shown_cmd] + [shlex.quote(x) for x in argv])
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    bench = Bench(args)
    try:
        bench.start_backends()
        bench.start_proxies(args.contestants)
        tandem_bin = args.tandem if os.access(args.tandem, os.X_OK) else None
        bench.run_rounds()
        bench.measure_idle()
        v = versions(tandem_bin)
        header = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"`{command}`",
            "machine": f"nproc {os.cpu_count()}, kernel {platform.release()}, CPU {cpu_model()}, "
                       f"load average {load_start} at start, {loadavg()} at end",
            "versions": "; ".join(f"{k}: {val}" for k, val in v.items()),
            "pinning": bench.pinning_text(),
            "method": (f"{args.rounds} interleaved round(s) (contestant order rotates each round); per run "
                       f"{args.warmup} s unrecorded warm-up + {args.duration} s measured; wrk -t1 --latency, "
                       "h2load -t1 for HTTP/2 and 4 x `openssl s_time -new` for full handshakes "
                       "(no latency percentiles); "
                       "value = median over rounds; vs HAProxy = median of per-round ratios; "
                       "CPU = utime+stime of the proxy process tree from /proc per completed request "
                       "(per MiB for iperf3); RSS summed over the process tree (nginx: master + worker)"),
        }
        text = report.table(header, bench.scenarios(), args.contestants, bench.contestants,
                            bench.results, bench.ratios, bench.notes)
        text += report.idle_table(args.contestants, bench.contestants)
    finally:
        bench.cleanup()
    print()
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        print(f"\n(written to {args.out})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e or 'SIGINT'}); everything started was stopped", file=sys.stderr)
        sys.exit(130)
