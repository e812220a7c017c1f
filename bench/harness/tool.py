"""External tools: finding, installing and describing them.

Owns the list of required tools and Debian packages, `--install` (apt-get
with a bounded wait for the dpkg lock), nginx stream-module detection, and the
version / machine strings of the report header.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time

from harness.model import BenchError

REQUIRED_TOOLS = ["haproxy", "nginx", "wrk", "taskset", "timeout"]
# Optional: without them their rows are skipped with a note, the run goes on.
# h2load (nghttp2-client): the HTTP/2 rows; openssl: the TLS certificate.
OPTIONAL_TOOLS = ["iperf3", "h2load", "openssl"]
APT_PACKAGES = ["haproxy", "nginx", "libnginx-mod-stream", "wrk", "iperf3", "nghttp2-client",
                "openssl"]
STREAM_MODULE_PATHS = [
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/share/nginx/modules/ngx_stream_module.so",
    "/usr/lib64/nginx/modules/ngx_stream_module.so",
]
SBIN_DIRS = ["/usr/sbin", "/sbin", "/usr/local/sbin"]


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in SBIN_DIRS:
        cand = os.path.join(d, tool)
        if os.access(cand, os.X_OK):
            return cand
    return None


def stream_module() -> tuple[bool, str]:
    """(available, load_module line) for nginx's stream module."""
    nginx = which("nginx")
    if not nginx:
        return False, ""
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    if re.search(r"--with-stream(\s|$)", out):
        return True, ""
    if "--with-stream=dynamic" in out:
        for path in STREAM_MODULE_PATHS:
            if os.path.exists(path):
                return True, f"load_module {path};"
    return False, ""


def install_packages() -> None:
    if not shutil.which("apt-get"):
        raise BenchError("--install needs apt-get (Debian/Ubuntu); install "
                         + " ".join(APT_PACKAGES) + " by hand")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise BenchError("--install needs root or sudo")
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Others may hold the dpkg lock: apt waits for it (bounded), and we retry.
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    steps = [prefix + ["apt-get", *lock, "update", "-q"],
             prefix + ["apt-get", *lock, "install", "-y", "-q", *APT_PACKAGES]]
    for argv in steps:
        for attempt in range(3):
            print("+ " + " ".join(argv), flush=True)
            r = subprocess.run(argv, env=env, timeout=900)
            if r.returncode == 0:
                break
            time.sleep(10)
        else:
            raise BenchError(f"failed: {' '.join(argv)}")


def check_tools(install: bool) -> None:
    missing = [t for t in REQUIRED_TOOLS + OPTIONAL_TOOLS if not which(t)]
    if not stream_module()[0] and which("nginx"):
        missing.append("nginx stream module")
    if missing and install:
        install_packages()
        missing = [t for t in REQUIRED_TOOLS if not which(t)]
    missing_required = [t for t in missing if t in REQUIRED_TOOLS]
    if missing_required:
        raise BenchError(
            "missing tool(s): " + ", ".join(missing_required)
            + ". Run with --install, or: apt-get install -y " + " ".join(APT_PACKAGES))


def first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0].strip() if out else "?"


def versions(tandem: str | None) -> dict[str, str]:
    v = {
        "haproxy": first_line([which("haproxy") or "haproxy", "-v"]),
        "nginx": first_line([which("nginx") or "nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": first_line([which("wrk") or "wrk", "-v"]),
        "iperf3": first_line(["iperf3", "-v"]) if which("iperf3") else "not installed",
        "h2load": first_line(["h2load", "--version"]) if which("h2load") else "not installed",
        "openssl": first_line(["openssl", "version"]) if which("openssl") else "not installed",
        "tandem": f"{first_line([tandem, '--version'])} ({tandem})" if tandem else "not built",
    }
    v["haproxy"] = re.sub(r" - https?://\S+", "", v["haproxy"]).replace("HAProxy version ", "")
    v["wrk"] = re.sub(r" Copyright.*", "", v["wrk"])
    return v


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"
