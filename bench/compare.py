"""``python -m bench.compare REV``: this checkout's mlgate against another revision's.

On a shared host throughput moves 10-30% from one minute to the next, so a change worth a few
percent shows only when both versions are measured side by side: both servers run at once, each
round loads one and then the other (the order alternating), and the medians over the rounds are
compared, with the server CPU per request (workers and audit writer). ``REV`` is checked out
in a temporary git worktree, removed afterwards, and served with this environment's packages.

``python -m bench.compare HEAD~1 --endpoint validate --connections 16 --rounds 6``
``python -m bench.compare HEAD --compiled``: this checkout compiled against itself interpreted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.bodies import MIXES, ROOT, load_bodies
from bench.compiled import decision_build, rerun_compiled
from bench.load import LoadResult, pick_client, run_load
from bench.servers import Server, start_mlgate
from webhook.server import ServerOptions


@dataclass
class Figures:
    """One version's rounds: requests/s and server CPU per request (us)."""

    label: str
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def measure_round(server: Server, figures: Figures, load: Callable[[str], LoadResult]) -> None:
    """Load ``server`` (``load(url)``) and add its requests/s and CPU per request."""
    cpu_before = server.cpu_seconds()
    result = load(server.url)
    server.wait_for_audit_writer()
    if result.errors:
        raise RuntimeError(f"{figures.label}: {result.errors} requests failed")
    figures.rps.append(result.rps)
    figures.cpu_us.append((server.cpu_seconds() - cpu_before) / max(result.requests, 1) * 1e6)


def format_report(ours: Figures, theirs: Figures, *, case: str) -> str:
    rows = [
        f"{case}; {len(ours.rps)} interleaved rounds",
        "",
        "| version | req/s in each round | median req/s | median server CPU per request (us) |",
        "|---|---|--:|--:|",
    ]
    for figures in (theirs, ours):
        rounds = ", ".join(f"{value:,.0f}" for value in figures.rps)
        rows.append(
            f"| {figures.label} | {rounds} | {statistics.median(figures.rps):,.0f} "
            f"| {statistics.median(figures.cpu_us):,.0f} |"
        )
    rps = statistics.median(ours.rps) / statistics.median(theirs.rps)
    cpu = statistics.median(ours.cpu_us) / statistics.median(theirs.cpu_us)
    wins = sum(a > b for a, b in zip(ours.rps, theirs.rps, strict=True))
    rows += [
        "",
        f"{ours.label} / {theirs.label}: {rps:.3f}x requests/s, {cpu:.3f}x CPU per request; "
        f"faster in {wins} of {len(ours.rps)} rounds",
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("rev", help="the git revision to compare this checkout with")
    parser.add_argument(
        "--endpoint",
        choices=list(MIXES),
        default="validate",
        help="the mix of bodies to send (bench/bodies.py), to its webhook",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--new-connection", action="store_true", help="a connection per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="per server and round")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="serve this checkout compiled with mypyc (REV stays interpreted)",
    )
    args = parser.parse_args(argv)
    if args.compiled:
        given = sys.argv[1:] if argv is None else list(argv)
        return rerun_compiled("bench.compare", [arg for arg in given if arg != "--compiled"])

    with tempfile.TemporaryDirectory(prefix="mlgate-compare-") as temp:
        workdir = Path(temp)
        tree = workdir / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), args.rev],
            check=True,
        )
        servers: list[Server] = []
        try:
            options = ServerOptions()
            for name, root in (("theirs", tree), ("ours", ROOT)):
                servers.append(
                    start_mlgate(
                        workdir=workdir,
                        workers=options.workers,
                        threads=options.threads,
                        name=name,
                        root=root,
                    )
                )
            client, bodies = pick_client(args.client), load_bodies(args.endpoint)

            def load(url: str) -> LoadResult:
                return run_load(
                    client,
                    url=url,
                    path=f"/{MIXES[args.endpoint].webhook}",
                    bodies=bodies,
                    connections=args.connections,
                    new_connection=args.new_connection,
                    seconds=args.seconds,
                    workdir=workdir,
                )

            theirs, ours = Figures(args.rev), Figures(f"this checkout, {decision_build()}")
            pairs = [(servers[0], theirs), (servers[1], ours)]
            for round_number in range(args.rounds):
                for server, figures in pairs if round_number % 2 == 0 else pairs[::-1]:
                    measure_round(server, figures, load)
        finally:
            for server in servers:
                server.stop()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    connections = "a new connection per request" if args.new_connection else "kept alive"
    case = f"{MIXES[args.endpoint].label}, {args.connections} connections {connections}"
    print(format_report(ours, theirs, case=case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
