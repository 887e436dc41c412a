"""Why masks are not hashes: what it costs to hash every possible ip and device id.

``python -m login_etl.dev.hashcost`` times SHA-256 (Python's ``hashlib``, one
core) over a sample of the inputs an attacker would try, and extrapolates to
the whole space: all 2^32 IPv4 addresses and all 10^9 SSN-shaped device ids
(``ddd-dd-dddd``). A table of unkeyed hashes is reversed by hashing the whole
space once. The sample is hashed from prebuilt byte strings, so only the hash
is timed; the inputs' text is the canonical form the service would hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

IPV4_SPACE = 2**32
SSN_SPACE = 10**9


def _ipv4(n: int) -> bytes:
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}".encode()


def _ssn(n: int) -> bytes:
    digits = f"{n:09d}"
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}".encode()


def per_second(values: list[bytes], rounds: int = 3) -> float:
    """SHA-256 digests per second over `values`, the best of `rounds`."""
    sha256 = hashlib.sha256
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for value in values:
            sha256(value).digest()
        best = min(best, time.perf_counter() - start)
    return len(values) / best


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def main() -> None:
    """Print the measured rate and the extrapolated time for each space."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2_000_000, help="values hashed per space")
    args = parser.parse_args()
    step_ip, step_ssn = IPV4_SPACE // args.sample, SSN_SPACE // args.sample
    spaces = {
        "IPv4 (2^32)": (IPV4_SPACE, [_ipv4(i * step_ip) for i in range(args.sample)]),
        "SSN-shaped device id (10^9)": (
            SSN_SPACE,
            [_ssn(i * step_ssn) for i in range(args.sample)],
        ),
    }
    cores = os.cpu_count() or 1
    print(f"SHA-256 with hashlib, one core, sample of {args.sample:,} per space ({cores} cores)")
    for name, (space, values) in spaces.items():
        rate = per_second(values)
        one = space / rate
        print(
            f"  {name:<29} {rate / 1e6:5.2f} M/s → whole space {_duration(one)} on one core, "
            f"{_duration(one / cores)} on {cores}"
        )


if __name__ == "__main__":
    main()
