"""How long the API spends checking one Auth0 access token (RS256 verify with a warm JWKS cache), and a cold fetch.

Run by hand: ``DEBUG=true .venv/bin/python bench/bench_auth_tokens.py``. No database: it
times ``decode_access_token`` only, the part every bearer request pays before the
one-query user lookup.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from rekindle.auth.jwks import forget_jwks_clients  # noqa: E402
from rekindle.auth.tokens import AccessTokenSettings, decode_access_token  # noqa: E402
from rekindle.testing.auth0 import AUDIENCE, ISSUER, Auth0Tenant  # noqa: E402


def main(rounds: int = 2000) -> None:
    tenant = Auth0Tenant()
    config = AccessTokenSettings(
        jwks_url=tenant.jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_seconds=30,
        jwks_refetch_seconds=60,
        jwks_max_age_seconds=3600,
        jwks_timeout_seconds=5,
    )
    tokens = [tenant.token(sub=f"auth0|bench-{i}") for i in range(rounds)]
    try:
        forget_jwks_clients()
        started = time.perf_counter()
        decode_access_token(tokens[0], config)
        cold = time.perf_counter() - started

        timings = []
        for token in tokens:
            started = time.perf_counter()
            decode_access_token(token, config)
            timings.append(time.perf_counter() - started)
    finally:
        tenant.close()
    timings.sort()
    print(f"cold (JWKS fetch over loopback + verify): {cold * 1000:.2f} ms")
    print(
        f"warm verify, {rounds} tokens: median {statistics.median(timings) * 1e6:.0f} us, "
        f"p99 {timings[int(rounds * 0.99)] * 1e6:.0f} us, fetches {tenant.fetches}"
    )


if __name__ == "__main__":
    main()
