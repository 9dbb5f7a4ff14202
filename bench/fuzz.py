"""Fuzz campaign, long run: every target of tests/fuzz/targets.py, with random seeds and many
more inputs than the suite gives them.

Run: .venv/bin/python -m bench.fuzz [--examples N] [--seconds S] [--only NAME] [--seed S]

`--examples` is the total over the targets run (split evenly; default 100,000); `--seconds` caps
each target's time (checked between batches of inputs). Each target runs in batches of
`BATCH` inputs, each batch a hypothesis run with its own seed, so a long run explores instead of
replaying. Prints per target the inputs checked, the time, the throughput and the failures (any
exception a target does not document; 0 expected), then the totals; exits 1 on any failure,
after printing each one with the minimal input hypothesis found for it.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

from tests.fuzz.targets import TARGETS, Target

DEFAULT_EXAMPLES = 100_000
BATCH = 2_000


@dataclass
class Result:
    target: Target
    examples: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # summary -> minimal input

    @property
    def rate(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.normal,
        report_multiple_bugs=True,
        print_blob=False,
    )


def _record(result: Result, error: BaseException) -> None:
    errors = list(error.exceptions) if isinstance(error, BaseExceptionGroup) else [error]
    for exc in errors:
        first_line = (str(exc).splitlines() or [""])[0][:160]
        summary = f"{type(exc).__name__}: {first_line}"
        notes = getattr(exc, "__notes__", [])
        result.failures.setdefault(summary, " ".join(notes)[:600])


def run_target(target: Target, examples: int, seconds: float | None, base_seed: int) -> Result:
    result = Result(target)
    start = time.perf_counter()
    with target.session() as check:

        def body(value: Any) -> None:
            result.examples += 1
            check(value)

        batch = 0
        while result.examples < examples:
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
            size = min(BATCH, examples - result.examples)
            test = seed(base_seed + batch)(_settings(size)(given(target.strategy)(body)))
            batch += 1
            try:
                test()
            except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
                _record(result, exc)
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, help="total inputs")
    parser.add_argument("--seconds", type=float, default=None, help="time cap per target")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="first batch's seed")
    names = [t.name for t in TARGETS]
    parser.add_argument("--only", action="append", choices=names, help="a target (repeatable)")
    args = parser.parse_args(argv)
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    per_target = math.ceil(args.examples / len(targets))
    # Targets log what they refuse (a catalog entry without its image, ...): not the point here.
    logging.disable(logging.WARNING)

    print(
        f"fuzz: {len(targets)} targets, {per_target} inputs each"
        + (f", at most {args.seconds:g} s each" if args.seconds else "")
        + f", seed {args.seed}"
    )
    print(f"{'target':<16} {'code':<55} {'inputs':>8} {'s':>7} {'inputs/s':>9} {'failures':>8}")
    results = []
    for target in targets:
        result = run_target(target, per_target, args.seconds, args.seed)
        results.append(result)
        print(
            f"{target.name:<16} {target.code:<55} {result.examples:>8} {result.seconds:>7.1f} "
            f"{result.rate:>9.0f} {len(result.failures):>8}",
            flush=True,
        )
    examples = sum(r.examples for r in results)
    seconds = sum(r.seconds for r in results)
    failures = sum(len(r.failures) for r in results)
    print(
        f"{'total':<16} {'':<55} {examples:>8} {seconds:>7.1f} {examples / seconds:>9.0f} "
        f"{failures:>8}"
    )
    for result in results:
        for summary, example in result.failures.items():
            print(f"\nFAILURE {result.target.name}: {summary}\n  {example}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
