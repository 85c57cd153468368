"""A well-behaved client's share of its calls/s while attackers hit the same server (issue 16).

The scenario of tests/transports/test_asyncio_abuse.py's four-attacker test, measured per
attacker and beside its ceiling: the server runs in this process, the good client (sequential
echo calls) in a process of its own, the attackers (tests/transports/abuse_support.py: partial
frames, idle connections, huge frames of 90,000 tiny structs, a flood of pipelined calls) in a
third. Each round measures the good client alone, then under attack; its share is the ratio of
the two rates. Rows:

* ``ceiling``: all four attackers against *another* server process; the good client's server is
  idle. What is left is the cost of sharing the machine's cores with the attackers and their
  server: no scheduling inside the measured server can give the good client more than this.
* ``all four``: the test's scenario;
* one row per attacker alone (``flood``, ``huge frames``, ``partial + idle``).

    python benchmarks/bench_abuse.py [--rounds 3] [--alone 1.0] [--attacked 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: name -> (the attackers' options, whether they hit another server process)
SCENARIOS: dict[str, tuple[dict[str, Any], bool]] = {
    "ceiling (attackers on another server)": (
        {"partial": 8, "partial_size": 1 << 22, "idle": 200, "items": 90_000}, True),
    "all four": ({"partial": 8, "partial_size": 1 << 22, "idle": 200, "items": 90_000}, False),
    "flood": ({"partial": 0, "partial_size": 16, "idle": 0, "items": 0}, False),
    "huge frames": ({"partial": 0, "partial_size": 16, "idle": 0, "items": 90_000,
                     "flood": False}, False),
    "partial + idle": ({"partial": 8, "partial_size": 1 << 22, "idle": 200, "items": 0,
                        "flood": False}, False),
}


async def measure(names: list[str], rounds: int, alone: float, attacked: float
                  ) -> dict[str, list[dict[str, float]]]:
    from tests.transports import abuse_support as A

    mod = A.schema()
    server = await A.echo_and_sink_server(mod)
    url = server.endpoints[0]
    other = A.ServerProcess()
    other_url = await other.start()
    good = A.GoodClientProcess(url)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                options, elsewhere = SCENARIOS[name]
                calls, failures = await good.measure(alone)
                assert failures == [], failures
                attackers = A.AttackersProcess(other_url if elsewhere else url, **options)
                await attackers.start()
                cpu = time.process_time()
                try:
                    await asyncio.sleep(0.3)
                    under, failures = await good.measure(attacked)
                    slowest = good.last["slowest"]
                finally:
                    report = await attackers.stop()
                    attackers.close()
                results[name].append({
                    "alone": calls / alone, "attacked": under / attacked,
                    "share": (under / attacked) / (calls / alone), "failures": len(failures),
                    "slowest_ms": slowest * 1000, "server_cpu": time.process_time() - cpu,
                    "flood_calls": report["flood_calls"], "huge_frames": report["huge_frames"],
                })
            print(f"abuse: round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr)
    finally:
        good.close()
        other.close()
        await server.stop()
    return results


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alone", type=float, default=1.0, help="seconds measured alone")
    parser.add_argument("--attacked", type=float, default=2.0,
                        help="seconds measured under attack")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = parser.parse_args(argv if argv is not None else [])
    names = args.only or list(SCENARIOS)
    load = os.getloadavg()[0]
    results = asyncio.run(measure(names, args.rounds, args.alone, args.attacked))
    med = statistics.median
    lines = [
        "## abuse: a good client's share of its rate under attack (loopback TCP)", "",
        f"Sequential echo calls from a client process, alone ({args.alone:g} s) then with the "
        f"attackers' process running ({args.attacked:g} s); median of {args.rounds} alternating "
        "rounds. Server CPU: seconds the server's process used during the attack.", "",
        "| attack | alone calls/s | attacked calls/s | share | failures | slowest call ms "
        "| server CPU s | flood calls | huge frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {med(r['alone'] for r in rows):,.0f} | "
            f"{med(r['attacked'] for r in rows):,.0f} | {med(r['share'] for r in rows):.2f} "
            f"({min(r['share'] for r in rows):.2f}-{max(r['share'] for r in rows):.2f}) | "
            f"{sum(int(r['failures']) for r in rows)} | "
            f"{med(r['slowest_ms'] for r in rows):.0f} | "
            f"{med(r['server_cpu'] for r in rows):.2f} | "
            f"{med(r['flood_calls'] for r in rows):,.0f} | "
            f"{med(r['huge_frames'] for r in rows):,.0f} |")
    lines += ["", f"- load average: {load:.1f} before, {os.getloadavg()[0]:.1f} after "
              f"({os.cpu_count()} CPUs)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
