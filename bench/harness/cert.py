"""The run's TLS certificate.

Owns one thing: a self-signed ECDSA P-256 certificate (SAN 127.0.0.1 and
"bench.local") generated once per run with the openssl CLI, written as
separate PEM files (tandem, nginx) and as one cert+key PEM (HAProxy), so all
proxies terminate TLS with the same key.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from .model import BenchError
from .tool import which


@dataclass(frozen=True)
class Certificate:
    cert: str  # PEM certificate
    key: str  # PEM private key (PKCS#8)
    combined: str  # certificate then key, for HAProxy's `crt`


def generate(directory: str) -> Certificate:
    """Writes the certificate into `directory`; BenchError says why not."""
    openssl = which("openssl")
    if openssl is None:
        raise BenchError("openssl not installed (apt-get install openssl)")
    cert = os.path.join(directory, "bench-cert.pem")
    key = os.path.join(directory, "bench-key.pem")
    argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=bench.local",
            "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1",
            "-keyout", key, "-out", cert]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"openssl req failed: {e}") from e
    if r.returncode != 0:
        raise BenchError(f"openssl req exit {r.returncode}: {r.stderr.strip()[:300]}")
    combined = os.path.join(directory, "bench-combined.pem")
    with open(combined, "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    # nginx workers may run as an unprivileged user: they must read the key.
    for path in (cert, key, combined):
        os.chmod(path, 0o644)
    return Certificate(cert, key, combined)
