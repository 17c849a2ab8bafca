#!/usr/bin/env bash
# The suite as a shared machine runs it: N busy processes (one core's worth each) beside `uv run pytest`,
# R times in a row, stopping at the first failure. Prints the machine, the commit under test, the date and
# each run's duration, so that a note can quote the record as it stands.
#
#   scripts/test-under-load.sh                  # two busy loops, one run
#   scripts/test-under-load.sh -n 2 -r 3        # the check the suite must pass: three runs in a row
#   scripts/test-under-load.sh -n 3 -- -k serve # pytest arguments after --
set -euo pipefail
busy=2
runs=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) busy="$2"; shift 2 ;;
        -r) runs="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "$busy"); do
    bash -c 'while :; do :; done' &
    pids+=($!)
done
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
# A record of a commit must be of that commit alone: say so when tracked files differ from it.
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit with local changes"; fi
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores; $busy busy loops beside the suite; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "commit: $commit"
for run in $(seq "$runs"); do
    start=$SECONDS
    status=0
    uv run pytest "$@" || status=$?
    echo "run $run of $runs: exit $status after $((SECONDS - start)) s ($(date -u +%H:%MZ))"
    [ "$status" -eq 0 ] || exit "$status"
done
echo "$runs of $runs runs passed"
