"""How much a flood of large, distinct queries grows a real gateway process (issue 14,
part 5): starts the gateway alone in a subprocess (development mode, services at an
address nothing listens on: the queries are `__type` lookups that call no service), reads
its RSS, sends the queries as automatic persisted queries (hash and text, so each one is
registered and its document cached), and reads the RSS again.

    .venv/bin/python tools/gateway_memory.py --queries 150 --emoji 90000
    .venv/bin/python tools/gateway_memory.py --queries 150 --emoji 4900

Run from another folder with PYTHONPATH set to a copy of the tree to measure that copy.
"""

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter

import httpx
import psutil

_GATEWAY = """
import asyncio, sys
from gateway.server import serve_gateway
from gateway.settings import GatewaySettings
from services.cli.gateway import gateway_targets
from services.registry import REGISTRY

async def main() -> None:
    dead = {name: "127.0.0.1:9" for name in REGISTRY.services}
    targets = gateway_targets(REGISTRY, dead)
    async with serve_gateway(GatewaySettings(port=0), targets, host="127.0.0.1") as running:
        print(running.port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _query(index: int, emoji: int) -> str:
    return '{ __type(name: "' + "\U0001f600" * emoji + f'{index}") {{ name }} }}'


async def _attack(port: int, queries: int, emoji: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        for index in range(queries):
            query = _query(index, emoji)
            digest = hashlib.sha256(query.encode()).hexdigest()
            payload = {
                "query": query,
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}},
            }
            response = await http.post(
                "/graphql",
                content=json.dumps(payload, ensure_ascii=False).encode(),
                headers={"content-type": "application/json"},
            )
            body = response.json()
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            outcomes[f"{response.status_code} {','.join(sorted(map(str, codes))) or 'ok'}"] += 1
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--emoji", type=int, default=90_000)
    options = parser.parse_args()
    process = subprocess.Popen(
        [sys.executable, "-c", _GATEWAY], stdout=subprocess.PIPE, env=dict(os.environ), text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        time.sleep(0.5)
        rss = psutil.Process(process.pid).memory_info().rss
        started = time.perf_counter()
        outcomes = asyncio.run(_attack(port, options.queries, options.emoji))
        elapsed = time.perf_counter() - started
        grown = psutil.Process(process.pid).memory_info().rss
    finally:
        process.terminate()
        process.wait(10)
    size = len(_query(0, options.emoji).encode())
    print(
        f"{options.queries} queries of {options.emoji} emoji ({size:,} bytes each) in "
        f"{elapsed:.1f} s: RSS {rss / 2**20:.1f} MiB -> {grown / 2**20:.1f} MiB "
        f"(+{(grown - rss) / 2**20:.1f} MiB); answers: {dict(outcomes)}"
    )


if __name__ == "__main__":
    main()
