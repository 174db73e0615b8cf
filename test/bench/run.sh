#!/usr/bin/env bash
# run.sh BIN [compare.sh options]: Fulcrum (BIN) against HAProxy with
# ../shared/bench/compare.sh, HTTP and TCP modes. Prints compare.sh's report.
set -euo pipefail
bin=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
compare=${COMPARE:-$here/../../../shared/bench/compare.sh}
[ -x "$compare" ] || [ -f "$compare" ] || { echo "run.sh: $compare not found (set COMPARE=)" >&2; exit 1; }
export CAND_NAME=fulcrum
export CAND_HTTP_CMD="$here/candidate.sh $bin http {listen} {backend}"
export CAND_TCP_CMD="$here/candidate.sh $bin tcp {listen} {backend}"
# TLS termination arrives with a later issue; until then compare.sh runs
# HAProxy alone in the TLS scenarios.
exec bash "$compare" --scenarios "${SCENARIOS:-http-keepalive-small,http-close,http-large-body,tcp-mode-keepalive,idle-memory}" "$@"
