#!/usr/bin/env bash
# The GPU acceptance run of gpt2 train (bench/gpu_acceptance.py says what each step measures), in one go of
# at most 8 minutes on a bare GPU machine; its log and figures.json go into one folder.
#
#   bash bench/gpu_acceptance.sh [--out DIR] [--dry-run] [--work DIR] [--deadline SECONDS]
#   bash bench/gpu_acceptance.sh --wheels      # here, before carrying .whl: our packages built into .whl/
#
# --out defaults to $OUT where set. On the GPU machine, which has torch but no registry, every wheel it lacks
# comes from .whl/ at the repo root, our packages' included (installed, so their entry points load): fill it
# beforehand with
#   bash ../shared/device/wheels.sh torchao==0.17.0 pytest iniconfig && bash bench/gpu_acceptance.sh --wheels
# and carry it (".whl"). --dry-run runs every step on CPU with tiny shapes through `uv run`, installing nothing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

out=${OUT:-}
dry=0
pass=()
while (($#)); do
  case $1 in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --dry-run) dry=1; pass+=(--dry-run); shift ;;
    --wheels)
      for package in gpt2-core gpt2-data gpt2-train gpt2-sft gpt2-export gpt2-cli; do
        uv build -q --package "$package" --wheel -o .whl
      done
      ls -1 .whl
      exit 0 ;;
    --work | --deadline) pass+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_acceptance.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z $out ]]; then
  echo "gpu_acceptance.sh: give --out DIR (or set OUT)" >&2
  exit 2
fi
mkdir -p "$out"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ((dry)); then
  export PATH=$HOME/.local/bin:$PATH
  python=(uv run --frozen python)
else
  # The machine's own torch; everything else from the carried wheels. Our packages' code comes from this
  # checkout (their src folders first on the path), their wheels give the entry points (the dist-info).
  if ! compgen -G ".whl/gpt2_core-*.whl" >/dev/null; then
    echo "gpu_acceptance.sh: no gpt2 wheels in .whl/: run ../shared/device/wheels.sh torchao==0.17.0 pytest iniconfig and bash bench/gpu_acceptance.sh --wheels here, and carry .whl" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  src=$(printf "$root/packages/%s/src:" gpt2-core gpt2-data gpt2-train gpt2-sft gpt2-export gpt2-cli)
  export PYTHONPATH=${src}/tmp/site
  python=(python3)
  nvidia-smi >>"$out/acceptance.log" 2>&1 || true
fi
exec "${python[@]}" bench/gpu_acceptance.py run --out "$out" "${pass[@]}"
