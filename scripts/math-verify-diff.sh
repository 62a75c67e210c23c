#!/usr/bin/env bash
# The differential harness of the math answer checker against Hugging Face math-verify.
#
# 1. Regenerates the corpus (scripts/math_corpus_gen.py, seeded) and fails if it differs from the
#    committed actors/judge/tests/data/math_corpus.jsonl.
# 2. Makes the venv .cache/venv-mathverify with math-verify pinned (scripts/math-verify-requirements.txt),
#    re-derives math-verify's verdicts on every case and fails if they differ from the committed
#    actors/judge/tests/data/math_corpus_math_verify.tsv; measures its rate (.cache/math_verify_baseline.json).
# 3. Runs r1's checker on the same cases (the Rust test math_corpus::differential_against_math_verify)
#    and prints, by category, how often each is right where the truth is known, their agreement
#    where only math-verify's verdict is the reference, and every case they differ on.
#
# Usage: scripts/math-verify-diff.sh [--write]   (--write updates the committed corpus and verdicts)
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
[[ "${1:-}" == "--write" ]] && write=1

venv=.cache/venv-mathverify
python=${PYTHON:-python3}

if (( write )); then
  "$python" scripts/math_corpus_gen.py
else
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  "$python" scripts/math_corpus_gen.py --out "$tmp" >/dev/null
  if ! cmp -s "$tmp" actors/judge/tests/data/math_corpus.jsonl; then
    echo "math-verify-diff: scripts/math_corpus_gen.py no longer makes the committed corpus; rerun with --write" >&2
    exit 1
  fi
fi

make_venv() { rm -rf "$venv" && "$python" -m venv "$venv" >/dev/null 2>&1; }
if [[ ! -x "$venv/bin/pip" ]] && ! make_venv; then
  # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "math-verify-diff: installing python3-venv to make $venv" >&2
    apt-get install -y -qq python3-venv >/dev/null
  fi
  make_venv || { echo "math-verify-diff: cannot make a venv with $python -m venv (on Debian: apt-get install python3-venv)" >&2; exit 2; }
fi
if ! cmp -s scripts/math-verify-requirements.txt "$venv/.requirements" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/math-verify-requirements.txt
  cp scripts/math-verify-requirements.txt "$venv/.requirements"
fi

if (( write )); then
  "$venv/bin/python" scripts/math_verify_diff.py --write
else
  "$venv/bin/python" scripts/math_verify_diff.py
fi

cargo test -p r1-judge --test math_corpus -- differential_against_math_verify --nocapture
