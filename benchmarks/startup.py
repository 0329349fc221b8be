"""How fast the CLI reaches AWS: from process start to its first API call, and what its imports cost.

Run from the repository root:

    .venv/bin/python -m benchmarks.startup [--runs 7]

``python -m ec2ir.cli.app status --endpoint-url <shim>`` is started as a subprocess; the time from
spawning it to the first request the shim logs is one sample (both clocks are the same
``time.monotonic()``). Issue 6's target is 0.5 s or less. The slowest imports are listed from
``python -X importtime``: for ``import ec2ir.cli.app`` alone, and for the whole ``status`` run, which
also shows what is imported lazily before the first call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.figures import first_call
from benchmarks.shim import ShimServer, ShimSettings

REGION = "us-east-1"
TARGET_S = 0.5
TOP_IMPORTS = 10


@dataclass(frozen=True)
class ImportCost:
    cumulative_ms: float
    self_ms: float
    module: str


@dataclass(frozen=True)
class CliStart:
    samples_s: list[float]
    cli_imports: list[ImportCost]  # ``import ec2ir.cli.app``
    run_imports: list[ImportCost]  # everything ``ec2ir status`` imports, up to its exit

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)


def cli_environment() -> dict[str, str]:
    environment = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        environment.pop(variable, None)
    return environment


def status_command(endpoint_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ec2ir.cli.app",
        "status",
        "--endpoint-url",
        endpoint_url,
        "--region",
        REGION,
    ]


def slowest_imports(python_args: list[str]) -> list[ImportCost]:
    """Run ``python -X importtime <python_args>`` and return its most expensive imports."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", *python_args],
        capture_output=True,
        text=True,
        env=cli_environment(),
        timeout=120,
        check=False,
    )
    costs: list[ImportCost] = []
    for line in completed.stderr.splitlines():
        # import time: self [us] | cumulative | imported package
        if not line.startswith("import time:"):
            continue
        fields = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(fields) != 3 or not fields[0].isdigit():
            continue  # the header line
        costs.append(ImportCost(int(fields[1]) / 1000, int(fields[0]) / 1000, fields[2].strip()))
    return sorted(costs, key=lambda cost: cost.cumulative_ms, reverse=True)[:TOP_IMPORTS]


def measure_cli_start(runs: int = 7) -> CliStart:
    samples: list[float] = []
    with ShimServer(ShimSettings(latency=False, throttling=False)) as server:
        assert server.shim is not None
        for _ in range(runs):
            server.shim.clear_log()
            spawned = time.monotonic()
            completed = subprocess.run(
                status_command(server.endpoint_url),
                capture_output=True,
                text=True,
                env=cli_environment(),
                timeout=120,
                check=False,
            )
            first = first_call(server.shim.records())
            if first is None:
                raise RuntimeError(f"`ec2ir status` made no API call: {completed.stderr.strip()}")
            samples.append(first - spawned)
        run_imports = slowest_imports(status_command(server.endpoint_url)[1:])
    return CliStart(samples, slowest_imports(["-c", "import ec2ir.cli.app"]), run_imports)


def render_imports(title: str, costs: Sequence[ImportCost]) -> list[str]:
    lines = [f"{title}:", "", "| cumulative (ms) | self (ms) | module |", "|---:|---:|---|"]
    lines += [f"| {c.cumulative_ms:.1f} | {c.self_ms:.1f} | `{c.module}` |" for c in costs]
    return [*lines, ""]


def render_cli_start(measured: CliStart) -> str:
    verdict = "met" if measured.median_s <= TARGET_S else "MISSED"
    samples = ", ".join(f"{sample:.2f}" for sample in measured.samples_s)
    lines = [
        "### CLI start: process start to first API call",
        "",
        f"median {measured.median_s:.2f} s over {len(measured.samples_s)} runs ({samples}); "
        f"target <= {TARGET_S} s: {verdict}",
        "",
        *render_imports(
            "Slowest imports of `python -X importtime -c 'import ec2ir.cli.app'`", measured.cli_imports
        ),
        *render_imports(
            "Slowest imports of a whole `ec2ir status` run (lazy imports included)", measured.run_imports
        ),
    ]
    return "\n".join(lines).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="CLI starts to take the median of (default: 7)")
    args = parser.parse_args(argv)
    print(render_cli_start(measure_cli_start(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
