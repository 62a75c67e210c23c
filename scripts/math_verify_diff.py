#!/usr/bin/env python3
"""math-verify's verdicts on the math corpus, and its speed on the same pairs.

Usage (inside the venv scripts/math-verify-diff.sh makes):
  python scripts/math_verify_diff.py          # re-derive the verdicts, fail if they differ from
                                               # the committed file
  python scripts/math_verify_diff.py --write  # re-derive and overwrite the committed file

Each case is checked the way TRL and open-r1 do it: `verify(parse(gold), parse(completion))`, the
gold wrapped in `$…$` so it is read as LaTeX. An exception counts as "no". The verdicts go to
actors/judge/tests/data/math_corpus_math_verify.tsv (`id<TAB>yes|no`), which the Rust test
`math_corpus::differential_against_math_verify` reads, so CI checks r1's figures without Python.
The rate (checks per second, one process) goes to .cache/math_verify_baseline.json, which
`cargo bench -p r1-judge --bench math_bench` prints beside r1's.
"""

import argparse
import json
import pathlib
import sys
import time
from importlib.metadata import version

from math_verify import parse, verify

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "actors" / "judge" / "tests" / "data" / "math_corpus.jsonl"
VERDICTS = ROOT / "actors" / "judge" / "tests" / "data" / "math_corpus_math_verify.tsv"
BASELINE = ROOT / ".cache" / "math_verify_baseline.json"


def check(gold, completion, timeout=5):
    # math-verify's own defaults (5 s per parse and per verify, by SIGALRM) unless told otherwise.
    try:
        return bool(
            verify(
                parse(f"${gold}$", parsing_timeout=timeout),
                parse(completion, parsing_timeout=timeout),
                timeout_seconds=timeout,
            )
        )
    except Exception:  # math-verify raises on some inputs; a reward function would score 0
        return False


def read_verdicts(path):
    out = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        case_id, verdict = line.split("\t")
        out[case_id] = verdict
    return out


def main():
    ap = argparse.ArgumentParser(description="math-verify verdicts on the r1 math corpus")
    ap.add_argument("--write", action="store_true", help="overwrite the committed verdicts")
    args = ap.parse_args()

    cases = [json.loads(l) for l in CORPUS.read_text(encoding="utf-8").splitlines() if l.strip()]
    for case in cases[:10]:  # warm-up: imports, parser tables, caches
        check(case["gold"], case["completion"])
    # Wall time and this thread's CPU time: on a shared machine the CPU time is the one-core figure.
    verdicts, total, total_cpu = {}, 0.0, 0.0
    for case in cases:
        t0, c0 = time.perf_counter(), time.thread_time()
        verdicts[case["id"]] = "yes" if check(case["gold"], case["completion"]) else "no"
        total += time.perf_counter() - t0
        total_cpu += time.thread_time() - c0
    rate = len(cases) / total
    cpu_rate = len(cases) / total_cpu
    mv_version = version("math-verify")

    lines = [
        f"# math-verify {mv_version} verdicts on math_corpus.jsonl: verify(parse('$'+gold+'$'), parse(completion)).",
        "# Made by scripts/math-verify-diff.sh (scripts/math_verify_diff.py --write); read by actors/judge/tests/math_corpus.rs.",
    ] + [f"{cid}\t{v}" for cid, v in verdicts.items()]
    text = "\n".join(lines) + "\n"

    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    BASELINE.write_text(
        json.dumps(
            {
                "checks_per_sec": rate,
                "checks_per_cpu_sec": cpu_rate,
                "checks": len(cases),
                "version": mv_version,
            },
            indent=2,
        )
    )
    print(
        f"math-verify {mv_version}: {cpu_rate:.0f} checks per CPU second ({rate:.0f} per wall "
        f"second) over {len(cases)} corpus cases, one thread"
    )

    if args.write:
        VERDICTS.write_text(text, encoding="utf-8")
        print(f"wrote {VERDICTS}")
        return 0
    committed = read_verdicts(VERDICTS)
    # A verdict that differs may be a timeout on a loaded machine (math-verify answers False when
    # its 5 s alarm fires): such cases are checked once more with a 120 s limit before they count.
    by_id = {c["id"]: c for c in cases}
    for cid, v in list(verdicts.items()):
        if committed.get(cid) not in (None, v) and cid in by_id:
            again = "yes" if check(by_id[cid]["gold"], by_id[cid]["completion"], timeout=120) else "no"
            if again != v:
                print(f"  {cid}: {v} under the 5 s limit, {again} with 120 s (a timeout; kept {again})")
                verdicts[cid] = again
    changed = [
        f"  {cid}: committed {committed.get(cid, 'absent')}, math-verify now says {v}"
        for cid, v in verdicts.items()
        if committed.get(cid) != v
    ]
    stale = [cid for cid in committed if cid not in verdicts]
    if changed or stale:
        print(f"math-verify's verdicts differ from {VERDICTS.relative_to(ROOT)}:", file=sys.stderr)
        print("\n".join(changed), file=sys.stderr)
        for cid in stale:
            print(f"  {cid}: committed but no longer in the corpus", file=sys.stderr)
        print("rerun with --write if the corpus changed on purpose", file=sys.stderr)
        return 1
    print(f"verdicts match {VERDICTS.relative_to(ROOT)} ({len(verdicts)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
