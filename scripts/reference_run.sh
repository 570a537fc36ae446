#!/usr/bin/env bash
# The reference run of a profile, as docs/results/<profile>/README.md reports it: a fresh clone of the
# current commit, `make setup`, then `make run` (ARGS as given) under /usr/bin/time, stdout to a log,
# with the memory of all processes together sampled every 2 s (getrusage gives only one process's peak).
#   scripts/reference_run.sh <clone-dir> [profile] [extra make ARGS] [label]
# Needs GLUE_DIR / WIKI_DIR exported; runs offline. Writes <clone-dir>/reference/[<label>/]{run.log,time.txt,
# memory.tsv,machine.txt}. A second call on an existing clone (e.g. notebook 05's variants, label 05) reuses it.
set -euo pipefail
dest="$1"; profile="${2:-cpu}"; args="${3:-}"; label="${4:-}"
src="$(cd "$(dirname "$0")/.." && pwd)"
[ -e "$dest" ] || git clone --quiet "$src" "$dest"
cd "$dest"
ref="reference${label:+/$label}"
mkdir -p "$ref"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
{ echo "commit $(git rev-parse HEAD)"; echo "date $(date -u +%FT%TZ)"; echo "GLUE_DIR=${GLUE_DIR:-} WIKI_DIR=${WIKI_DIR:-}"
  echo "make run PROFILE=$profile ARGS=$args"; nproc; grep -m1 'model name' /proc/cpuinfo; free -g | sed -n 2p; } > "$ref"/machine.txt
make setup > "$ref"/setup.log 2>&1
# Total resident memory of every process but this sampler, in MB, every 2 s (background, stopped at the end).
( while sleep 2; do echo -e "$(date +%s)\t$(ps -eo rss= | awk '{s+=$1} END {printf "%.0f", s/1024}')"; done ) > "$ref"/memory.tsv &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
status=0
/usr/bin/time -v -o "$ref"/time.txt make run PROFILE="$profile" ARGS="$args" > "$ref"/run.log 2>&1 || status=$?
echo "exit $status; peak total RSS $(sort -t$'\t' -k2 -n "$ref"/memory.tsv | tail -1 | cut -f2) MB" | tee -a "$ref"/machine.txt
exit $status
