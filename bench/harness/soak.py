#!/usr/bin/env python3
"""Soak test: N minutes of mixed traffic against tandem, with reloads and backend kills.

Owns the run: starting real Express backends and a release tandem in front of
them (HTTP, TLS and TCP listeners), a baseline of tandem's RSS and open
descriptors, the traffic phase (the clients of soak_traffic.py and
soak_h2.py, a reload every few seconds alternating SIGHUP and POST /reload
between two valid configurations, a backend SIGKILLed and restarted on a
schedule, and a /proc sampler), the drain after it, the report and the exit
status. Started by bench/soak.sh; documented in bench/README.md.

Does not own: building tandem (it takes target/release/tandem), the client
protocols, the verdict rules (soak_observe.py).

Invariants: every process it starts runs in its own session and is stopped by
its PID on exit, Ctrl-C or SIGTERM (harness.process.Supervisor); it signals
no process it did not start; every loop is bounded in count and time;
traffic goes to 127.0.0.1 only; the temp dir is removed at the end (unless
--keep-tmp).
"""

from __future__ import annotations

import argparse
import asyncio
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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter

from harness import soak_config, soak_report
from harness.model import BenchError
from harness.process import Supervisor, free_ports, wait_listening
from harness.soak_h2 import h2_worker
from harness.soak_observe import Sample, parse_metrics, sample
from harness.soak_traffic import (Run, Tally, h1_worker, plain, slow_reader, slow_uploader, tls,
                                  websocket_worker)
from harness.tool import cpu_model, first_line, loadavg, which

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(BENCH_DIR)
EXPRESS = os.path.join(REPO_DIR, "examples", "express-backend", "server.js")
DEFAULT_TANDEM = os.path.join(REPO_DIR, "target", "release", "tandem")
DEFAULT_OUT = os.path.join(BENCH_DIR, "soak-latest.md")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def http_get(port: int, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Soak:
    """One soak run: its processes, its tallies and readings, and its phases."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="tandem-soak-")
        self.sup = Supervisor(self.tmp)
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.reloads: Counter = Counter()
        self.reload_errors: list[str] = []
        self.kills = 0
        # (monotonic) from each SIGKILL to KILL_AFTERMATH s after the restart.
        self.kill_windows: list[tuple[float, float]] = []
        self.restarts = 0
        self.tandem_died = ""
        self.interrupted = ""  # set by a signal during the traffic phase
        self.task_failures: list[str] = []  # traffic-phase tasks that ended with an exception
        self.log_counts: Counter = Counter()
        self.log_samples: list[str] = []
        self.backends: list[subprocess.Popen] = []
        self.t0 = 0.0

    # ---- processes -------------------------------------------------------------------

    def start_backend(self, i: int, generation: int) -> subprocess.Popen:
        port = self.ports.backends[i]
        # Plain HTTP backends even if the caller's environment has the app's TLS switches.
        env = {k: v for k, v in os.environ.items() if k not in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA")}
        env.update(PORT=str(port), HOST="127.0.0.1", NAME=f"soak-{i}")
        proc = self.sup.start(f"backend{i}-{generation}", [self.node, EXPRESS], env=env)
        if not wait_listening(port, proc, 15.0):
            raise BenchError(f"Express backend {i} did not listen on {port}: "
                             + self.sup.log_tail(f"backend{i}-{generation}"))
        return proc

    def setup(self) -> None:
        a = self.args
        self.node = which("node")
        if not self.node:
            raise BenchError("node is not installed (the backends are the Express app)")
        if not os.path.isdir(os.path.join(os.path.dirname(EXPRESS), "node_modules")):
            raise BenchError("examples/express-backend has no node_modules: run `npm ci` there first")
        if not os.access(a.tandem, os.X_OK):
            raise BenchError(f"no tandem binary at {a.tandem}: build it with `cargo build --release`")
        p = free_ports(4 + a.backends)
        self.ports = soak_config.Ports(http=p[0], https=p[1], tcp=p[2], admin=p[3],
                                       backends=tuple(p[4:]))
        self.cert, key = soak_config.make_certificate(self.tmp)
        self.access_log = os.path.join(self.tmp, "access.log")
        self.configs = {v: soak_config.render(v, self.ports, self.cert, key, a.workers, self.access_log)
                        for v in "ab"}
        self.config_path = os.path.join(self.tmp, "soak.yaml")
        for v in "ab":  # both must be valid, or every reload would fail
            path = os.path.join(self.tmp, f"check-{v}.yaml")
            soak_config.write_atomically(path, self.configs[v])
            r = subprocess.run([a.tandem, "check", "-c", path], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise BenchError(f"tandem check rejects soak config {v}:\n{r.stdout}{r.stderr}")
        soak_config.write_atomically(self.config_path, self.configs["a"])
        self.backends = [self.start_backend(i, 0) for i in range(a.backends)]
        self.tandem = self.sup.start("tandem", [a.tandem, "run", "-c", self.config_path])
        if not wait_listening(self.ports.admin, self.tandem, 20.0):
            raise BenchError("tandem did not start: " + self.sup.log_tail("tandem"))
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            if http_get(self.ports.admin, "/readyz")[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise BenchError("tandem never became ready: " + self.sup.log_tail("tandem"))

    def log_summary(self) -> None:
        """Panics and WARN/ERROR lines in tandem's own log (its stdout and stderr), read line by line."""
        kinds: dict[str, str] = {}
        try:
            with open(os.path.join(self.tmp, "tandem.log"), errors="replace") as f:
                for raw in f:
                    line = ANSI.sub("", raw.rstrip("\n"))
                    self.log_counts["lines"] += 1
                    self.log_counts["panics"] += "panicked at" in line
                    level = next((lv for lv in ("WARN", "ERROR") if f" {lv} " in line), None)
                    if level:
                        self.log_counts[level] += 1
                        # One example per kind: timestamp dropped, numbers ignored when comparing.
                        text = re.sub(r"^\S+\s+", "", line)[:200]
                        kinds.setdefault(re.sub(r"\d+", "N", text), text)
        except OSError:
            return
        self.log_samples = list(kinds.values())[:8]
        try:
            with open(self.access_log, "rb") as f:
                self.log_counts["access_lines"] = sum(1 for _ in f)
        except OSError:
            pass

    def cleanup(self) -> None:
        # A second Ctrl-C must not cut the stopping of our processes short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        self.sup.stop_all()
        if self.args.keep_tmp:
            print(f"# temp dir kept: {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- phases ------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def baseline(self) -> None:
        """Readings before any traffic (tandem started, probes running)."""
        self.t0 = time.monotonic() + 3.0  # reset when traffic starts; "before" readings are t < 0
        for _ in range(15):
            self.samples.append(sample(self.tandem.pid, self.now(), "before"))
            time.sleep(0.2)

    def scrape(self) -> list:
        status, body = http_get(self.ports.admin, "/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    async def reload_loop(self, run: Run, every: float) -> None:
        n = 0
        while run.active(n):
            await run.pause(every * (n + 1) - self.now())
            if not run.active(n):
                return
            n += 1
            variant = "b" if n % 2 else "a"
            how = "SIGHUP" if n % 2 else "POST /reload"
            try:
                soak_config.write_atomically(self.config_path, self.configs[variant])
                if how == "SIGHUP":
                    ok, why = await self.reload_by_signal()
                else:
                    status, body = await asyncio.to_thread(http_get, self.ports.admin, "/reload", "POST", 15.0)
                    ok, why = status == 200, f"{status} {body[:300]!r}"
            except OSError as e:
                ok, why = False, str(e)
            self.reloads[(how, "ok" if ok else "failed")] += 1
            if not ok:
                self.reload_errors.append(f"t={self.now():.0f}s {how} to {variant}: {why}")

    async def reload_by_signal(self) -> tuple[bool, str]:
        def generation() -> int:
            return json.loads(http_get(self.ports.admin, "/status")[1])["config"]["generation"]
        before = await asyncio.to_thread(generation)
        os.kill(self.tandem.pid, signal.SIGHUP)
        end = time.monotonic() + 10.0
        while time.monotonic() < end:  # bounded poll for the new generation
            if await asyncio.to_thread(generation) > before:
                return True, ""
            await asyncio.sleep(0.1)
        doc = json.loads((await asyncio.to_thread(http_get, self.ports.admin, "/status"))[1])
        return False, f"no new generation within 10 s; last_reload {doc['config'].get('last_reload')}"

    async def kill_loop(self, run: Run, every: float, down: float) -> None:
        """SIGKILL one backend (by the PID we started) every `every` s; restart it after `down` s."""
        k = 0
        while run.active(k):
            await run.pause(every * (k + 1) - self.now())
            if not run.active(k):
                return
            i = k % len(self.backends)
            k += 1
            proc = self.backends[i]
            killed_at = time.monotonic()
            proc.kill()  # SIGKILL to exactly this PID
            await asyncio.to_thread(proc.wait)
            self.kills += 1
            await run.pause(down)
            # Restarted even when the run is stopping: the drain needs every backend back.
            self.backends[i] = await asyncio.to_thread(self.start_backend, i, k)
            self.restarts += 1
            self.kill_windows.append((killed_at, time.monotonic() + soak_report.KILL_AFTERMATH))

    async def sampler_loop(self, run: Run, every: float, progress: float) -> None:
        n, next_print = 0, progress
        while run.active(n):
            n += 1
            try:
                self.samples.append(sample(self.tandem.pid, self.now(), "traffic"))
            except OSError as e:
                self.tandem_died = f"tandem stopped during traffic at t={self.now():.0f}s ({e})"
                run.stop.set()
                return
            if self.tandem.poll() is not None:
                self.tandem_died = f"tandem exited with {self.tandem.returncode} at t={self.now():.0f}s"
                run.stop.set()
                return
            if self.now() >= next_print:
                next_print += progress
                s = self.samples[-1]
                print(f"  t={s.t:5.0f}s  RSS {s.rss_kib / 1024:6.1f} MiB  fds {s.fds:4d}  "
                      f"ok {self.tally.total_ok():7d}  errors {self.tally.total_errors():5d}  "
                      f"reloads {sum(self.reloads.values()):3d}  kills {self.kills:2d}", flush=True)
            await run.pause(every)

    async def traffic(self) -> None:
        a = self.args
        duration = a.minutes * 60
        self.t0 = time.monotonic()
        stop = asyncio.Event()
        run = Run(stop=stop, hard_deadline=time.monotonic() + duration + 5, max_iterations=int(duration * 2000),
                  request_timeout=15.0, slow_timeout=60.0, tally=self.tally)
        ctx_h1 = ssl.create_default_context(cafile=self.cert)
        ctx_h1.set_alpn_protocols(["http/1.1"])
        ctx_h2 = ssl.create_default_context(cafile=self.cert)
        ctx_h2.set_alpn_protocols(["h2"])
        p = self.ports
        workers = []
        for w in range(4):
            workers.append(h1_worker(run, "h1_keepalive", plain(p.http), 200, 0.005, offset=w))
        for w in range(2):
            workers.append(h1_worker(run, "h1_new_conn", plain(p.http), 1, 0.01, offset=w))
            workers.append(h1_worker(run, "h1_tls", tls(p.https, ctx_h1), 50, 0.005, offset=w))
            workers.append(h1_worker(run, "tcp", plain(p.tcp), 20, 0.005, offset=w))
            workers.append(websocket_worker(run, p.http, 20, 0.01))
        workers.append(h2_worker(run, "h2c", p.http, None, 8, 500, 0.005))
        workers.append(h2_worker(run, "h2_tls", p.https, ctx_h2, 8, 500, 0.005))
        for _ in range(a.slow_clients):
            workers.append(slow_reader(run, p.http, 1 << 20, 8192, 0.05))
            workers.append(slow_uploader(run, p.http, 128 << 10, 2048, 0.05))
        tasks = [asyncio.create_task(w) for w in workers]
        chaos = [asyncio.create_task(self.reload_loop(run, a.reload_every)),
                 asyncio.create_task(self.kill_loop(run, a.kill_every, a.down)),
                 asyncio.create_task(self.sampler_loop(run, 1.0, a.progress_every))]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.interrupt, sig, stop)
        await run.pause(duration - self.now())
        stop.set()
        # Interrupted: cancel what is still running after a moment (the tasks close
        # their connections on the way out); else let slow requests finish.
        grace = 3.0 if self.interrupted else run.slow_timeout + 20
        done, pending = await asyncio.wait(tasks + chaos, timeout=grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                # Reported as a failed check, with everything measured until then.
                self.task_failures.append(f"{t.get_coro().__qualname__}: {t.exception()!r}")

    def hold_open(self, n: int) -> list:
        """n keep-alive client connections, each after one answered request, left open.

        Only for --hold-open: idle connections that outlive the drain are what a
        descriptor leak looks like from /proc, so the verdict must then fail.
        """
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", self.ports.http), timeout=10)
            socks.append(s)
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            s.recv(65536)
        return socks

    def interrupt(self, sig: int, stop: asyncio.Event) -> None:
        self.interrupted = self.interrupted or f"signal {sig}"
        stop.set()

    def drain(self) -> None:
        """After traffic: poll until descriptors are back to the baseline, at most --drain s."""
        held = self.hold_open(self.args.hold_open)
        try:
            self._drain()
        finally:
            for s in held:
                s.close()

    def _drain(self) -> None:
        floor = min(s.fds for s in self.samples if s.phase == "before")
        end = time.monotonic() + self.args.drain
        while time.monotonic() < end:
            s = sample(self.tandem.pid, self.now(), "drain")
            self.samples.append(s)
            if s.fds <= floor:
                # A few more readings, so "after" is not one lucky instant.
                for _ in range(4):
                    time.sleep(0.25)
                    self.samples.append(sample(self.tandem.pid, self.now(), "drain"))
                return
            time.sleep(0.25)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/soak.sh",
                                description="Soak test of tandem (see bench/README.md, 'Soak test').")
    p.add_argument("--minutes", type=float, help="traffic duration (default 10; --smoke 1)")
    p.add_argument("--smoke", action="store_true",
                   help="short check: 1 minute, warm-up 15 s, reload every 5 s, a kill every 15 s")
    p.add_argument("--warmup", type=float, help="seconds of traffic before the RSS reference (default 60)")
    p.add_argument("--window", type=float, help="seconds of samples each RSS level is the median of (default 30)")
    p.add_argument("--reload-every", type=float, help="seconds between reloads (default 10)")
    p.add_argument("--kill-every", type=float, help="seconds between backend kills (default 30)")
    p.add_argument("--down", type=float, default=5.0, help="seconds a killed backend stays down (default 5)")
    p.add_argument("--backends", type=int, default=3, help="Express backends (default 3, at least 2)")
    p.add_argument("--workers", type=int, default=2, help="tandem worker threads (default 2)")
    p.add_argument("--slow-clients", type=int, default=2,
                   help="slow readers, and as many slow uploaders, at any time (default 2)")
    p.add_argument("--max-rss-growth", type=float, default=10.0, help="percent (default 10)")
    p.add_argument("--rss-floor-kib", type=int, default=2048,
                   help="growth below this many KiB never fails (default 2048)")
    p.add_argument("--max-error-rate", type=float, default=1.0,
                   help="percent of client requests that may fail (default 1; kills cause some)")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds to wait after traffic for descriptors to return to the baseline (default 30)")
    p.add_argument("--hold-open", type=int, default=0, metavar="N",
                   help="keep N idle client connections open through the drain: shows the "
                        "descriptor check failing (default 0)")
    p.add_argument("--progress-every", type=float, help="seconds between progress lines (default 30)")
    p.add_argument("--tandem", default=DEFAULT_TANDEM, help="tandem binary (default target/release/tandem)")
    p.add_argument("--out", default=DEFAULT_OUT, help="also write the report here (default bench/soak-latest.md)")
    p.add_argument("--samples", metavar="CSV", help="also write every /proc reading here (t,phase,rss_kib,fds)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    a.tandem = os.path.abspath(a.tandem)  # processes run in the temp dir
    a.minutes = a.minutes or (1.0 if a.smoke else 10.0)
    duration = a.minutes * 60
    a.warmup = a.warmup if a.warmup is not None else (15.0 if a.smoke else min(60.0, duration / 4))
    a.window = a.window or (10.0 if a.smoke else min(30.0, duration / 8))
    a.reload_every = a.reload_every or (5.0 if a.smoke else 10.0)
    a.kill_every = a.kill_every or (15.0 if a.smoke else 30.0)
    a.progress_every = a.progress_every or (10.0 if a.smoke else 30.0)
    if a.minutes <= 0 or a.minutes > 24 * 60:
        p.error("--minutes must be in (0, 1440]")
    if a.backends < 2:
        p.error("--backends must be at least 2 (one is killed at a time)")
    if a.warmup + a.window > duration or a.window <= 0 or a.warmup < a.window:
        p.error("need window <= warmup and warmup + window <= the duration")
    if a.down >= a.kill_every:
        p.error("--down must be shorter than --kill-every")
    if not 0 <= a.hold_open <= 100:
        p.error("--hold-open must be 0..100")
    if a.slow_clients < 0 or a.slow_clients > 50:
        p.error("--slow-clients must be 0..50")
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def install_handlers() -> None:
        # SIGINT explicitly: a shell starting us in the background sets it to SIG_IGN.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)

    install_handlers()
    shown = os.environ.get("SOAK_ARGV0", "bench/soak.sh")
    command = " ".join([shown] + [shlex.quote(x) for x in argv])
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    soak = Soak(args)
    try:
        soak.setup()
        print(f"soak: tandem pid {soak.tandem.pid}, backends {[b.pid for b in soak.backends]}, "
              f"{args.minutes:g} min of traffic; temp dir {soak.tmp}", flush=True)
        soak.baseline()
        before = soak.scrape()
        asyncio.run(soak.traffic())
        install_handlers()  # closing the event loop reset them to the defaults
        if soak.interrupted:
            raise KeyboardInterrupt(soak.interrupted)
        after = before
        if not soak.tandem_died:
            soak.drain()
            after = soak.scrape()
        header = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"`{command}`",
            "duration": f"{args.minutes:g} min of traffic (warm-up {args.warmup:g} s, RSS levels = medians "
                        f"over {args.window:g} s); a reload every {args.reload_every:g} s (SIGHUP and POST "
                        f"/reload alternating, configurations a/b); a backend SIGKILLed every "
                        f"{args.kill_every:g} s, restarted {args.down:g} s later",
            "machine": f"nproc {os.cpu_count()}, kernel {platform.release()}, CPU {cpu_model()}, load average "
                       f"{load_start} at start, {loadavg()} at end (shared with other work)",
            "tandem": f"{first_line([args.tandem, '--version'])} ({args.tandem}), workers: {args.workers}",
        }
        soak.log_summary()
        text, passed = soak_report.render(soak, header, before, after)
    finally:
        soak.cleanup()
    print()
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"\n(written to {args.out})")
    if args.samples:
        with open(args.samples, "w") as f:
            f.write("t,phase,rss_kib,fds\n")
            f.writelines(f"{x.t:.2f},{x.phase},{x.rss_kib},{x.fds}\n" for x in soak.samples)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"soak: interrupted ({e or 'SIGINT'}); everything started was stopped", file=sys.stderr)
        sys.exit(130)
