"""What roles cost: matching a presented token against every configured one, and a guarded request end to end.

(a) ``TokenTable.match`` with 1, 10, 100 and 1,000 named tokens, for the first token, the last one and a token
    that matches none: every token is compared (``hmac.compare_digest``, no early exit), so the three take the
    same time and the cost grows with the number of tokens.
(b) ``GET /agents`` (viewer) through the app (httpx over ASGI, SQLite), with the legacy admin token alone and
    with 100 named tokens configured (presenting the last one), median of ``--requests``: what the table adds.

Figures only, no assertions. Run: ``.venv/bin/python benchmarks/access.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from session_monitor.server import Settings, create_app  # noqa: E402
from session_monitor.server.tokens import TokenSpec, build_table  # noqa: E402


def _tokens(n: int) -> dict[str, TokenSpec]:
    return {f"user-{i:04d}": TokenSpec(token=f"token-of-user-{i:06d}-xxxxxxxx", role="viewer") for i in range(n)}  # type: ignore[arg-type]


def match_us(n: int, repeats: int) -> dict[str, float]:
    table = build_table(_tokens(n), None, None)
    cases = {"first": "token-of-user-000000-xxxxxxxx", "last": f"token-of-user-{n - 1:06d}-xxxxxxxx"}
    cases["none"] = "token-of-nobody-at-all-xxxxxx"
    result: dict[str, float] = {}
    for name, presented in cases.items():
        samples = []
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(repeats):
                table.match(presented)
            samples.append((time.perf_counter() - started) / repeats * 1e6)
        result[name] = statistics.median(samples)
    return result


def _settings(named: int, folder: Path) -> tuple[Settings, str]:
    tokens: dict[str, Any] = {f"user-{i:04d}": {"token": f"token-of-user-{i:06d}-xxxxxxxx", "role": "viewer"}
                              for i in range(named)}  # fmt: skip
    admin = "legacy-admin-token-bench-0001"
    settings = Settings(
        database_url=f"sqlite:///{folder / f'access-{named}.sqlite3'}", run_reaper=False, admin_token=admin,
        tokens=tokens,
    )  # fmt: skip
    return settings, f"token-of-user-{named - 1:06d}-xxxxxxxx" if named else admin


async def request_ms(requests: int, folder: Path) -> tuple[float, float]:
    """Median ms of ``GET /agents`` on an app with the admin token alone and on one with 100 named tokens, the
    requests alternating between the two so that the machine's noise falls on both alike."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for named in (0, 100):
            settings, presented = _settings(named, folder)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://127.0.0.1",
                headers={"Authorization": f"Bearer {presented}"},
            )
            clients.append(await stack.enter_async_context(client))
        samples: list[list[float]] = [[], []]
        for i in range(requests + 20):
            for which, client in enumerate(clients):
                started = time.perf_counter()
                (await client.get("/agents")).raise_for_status()
                if i >= 20:  # warm-up
                    samples[which].append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    repeats = 200 if args.quick else 2000
    print("(a) TokenTable.match, µs per call (median of 7 runs)")
    print(f"{'tokens':>7} {'first':>9} {'last':>9} {'none':>9}")
    for n in (1, 10, 100, 1000):
        figures = match_us(n, max(repeats // max(n // 10, 1), 200))
        print(f"{n:>7} {figures['first']:>9.2f} {figures['last']:>9.2f} {figures['none']:>9.2f}")
    requests = 100 if args.quick else args.requests
    with tempfile.TemporaryDirectory() as folder:
        alone, hundred = asyncio.run(request_ms(requests, Path(folder)))
    print(f"(b) GET /agents median over {requests} requests (ASGI, SQLite)")
    print(f"    legacy admin token alone:           {alone:.3f} ms")
    print(f"    100 named tokens, the last one:     {hundred:.3f} ms ({(hundred - alone) * 1e3:+.0f} µs)")


if __name__ == "__main__":
    main()
