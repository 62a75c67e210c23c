#!/usr/bin/env python3
"""Hugging Face math-verify on the same checks as math_bench.rs, for comparison.

Usage: pip install math-verify && python3 actors/benches/math_verify_baseline.py
Writes target/math_verify_baseline.json ({"checks_per_sec", "version", ...}), which
`cargo bench -p r1-actors --bench math_bench` prints beside our figure. Also reports how often
math-verify's verdict on each corpus pair agrees with the verdict our corpus expects.
"""

import json
import pathlib
import time
from importlib.metadata import version

from math_verify import parse, verify

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "actors" / "tests" / "data" / "math_equivalence.tsv"
OUT = ROOT / "target" / "math_verify_baseline.json"

THINK = (
    "<think>Let me work through this carefully. First I set up the equation, then I "
    "simplify both sides, check the edge cases, and verify the result by substitution.</think>"
)


def corpus():
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        verdict, pred, gold, why = line.split("\t")
        yield verdict == "yes", pred, gold, why


def completions(pred):
    """The four completion styles of math_bench.rs (math-verify has no extraction modes)."""
    return [
        f"{THINK} <answer>{pred}</answer>",
        f"{THINK} So the result is $\\boxed{{{pred}}}$.",
        f"We compute step by step.\nThe answer is ${pred}$.",
        f"{THINK} Therefore the answer is $\\boxed{{{pred}}}$.",
    ]


def check(completion, gold):
    """One reward check as math-verify's README does it: parse both, verify."""
    try:
        return bool(verify(parse(f"${gold}$"), parse(completion)))
    except Exception:  # math-verify can raise on odd input; that scores 0
        return False


def main():
    cases = list(corpus())
    checks = [(c, gold) for _, pred, gold, _ in cases for c in completions(pred)]
    for c, gold in checks[:20]:  # warm-up (imports, caches)
        check(c, gold)
    durations = []
    for c, gold in checks:
        t0 = time.perf_counter()
        check(c, gold)
        durations.append(time.perf_counter() - t0)
    rate = len(checks) / sum(durations)
    # The total is dominated by a few pathological answers that run into math-verify's timeouts;
    # the median check shows its everyday speed.
    median = sorted(durations)[len(durations) // 2]

    disagreements = []
    for expected, pred, gold, why in cases:
        got = check(f"${pred}$", gold) if pred else False
        if got != expected:
            disagreements.append(f"  {'yes' if expected else 'no '} expected, math-verify says {got}: {pred!r} vs {gold!r} ({why})")

    result = {
        "checks_per_sec": rate,
        "median_checks_per_sec": 1.0 / median,
        "checks": len(checks),
        "version": version("math-verify"),
        "corpus_pairs": len(cases),
        "corpus_agreement": len(cases) - len(disagreements),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"math-verify {result['version']}: {rate:.0f} checks/s over {len(checks)} checks, "
          f"{1.0 / median:.0f}/s at the median check")
    print(f"agrees with the corpus verdict on {result['corpus_agreement']}/{len(cases)} pairs")
    print("\n".join(disagreements))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
