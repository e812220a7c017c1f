"""h2load: the HTTP/2 load generator (Debian package nghttp2-client).

Owns building the h2load command line for a scenario and reading its text
summary into the same result fields wrk's report script gives. Pure: no IO.
h2load prints no latency percentiles, so p50/p99 are left out (None).
"""

from __future__ import annotations

import re


def argv(h2load: str, url: str, conns: int, streams: int, seconds: int) -> list[str]:
    """One thread, `conns` connections of `streams` concurrent streams, timed run.

    An https URL negotiates h2 by ALPN; an http URL speaks h2c with prior
    knowledge (h2load's default for plain text).
    """
    return [h2load, "-t1", f"-c{conns}", f"-m{streams}", f"-D{seconds}", url]


def parse(text: str) -> dict | None:
    """The summary as {requests, duration_us, errors}, or None if it is not there.

    requests counts successful (2xx) responses; errors counts failed, errored
    and timed-out requests plus non-2xx answers.
    """
    fin = re.search(r"^finished in ([\d.]+)(ms|s),", text, re.M)
    req = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not (fin and req and codes):
        return None
    seconds = float(fin.group(1)) / (1000.0 if fin.group(2) == "ms" else 1.0)
    ok = int(codes.group(1))
    errors = sum(int(req.group(i)) for i in (3, 4, 5)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    return {"requests": ok, "duration_us": seconds * 1e6, "errors": errors}
