#!/usr/bin/env bash
# profile.sh BIN OUTDIR [SCENARIO...]: CPU and allocation profiles of
# Fulcrum (BIN) under compare.sh's load, one scenario at a time (default:
# the four CPU scenarios). For each it runs one 12 s round of compare.sh,
# finds the candidate's admin socket and saves, while the load runs,
#   OUTDIR/SCENARIO.cpu.pprof     6 s of CPU profile
#   OUTDIR/SCENARIO.allocs.pprof  the allocation profile after it
#   OUTDIR/SCENARIO.top.txt       `go tool pprof -top` of the CPU profile
# and compare.sh's own report in OUTDIR/SCENARIO.compare.txt.
set -euo pipefail
bin=$(realpath "$1")
out=$2
shift 2
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(http-keepalive-small http-close http-large-body tcp-mode-keepalive)
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(realpath "$out")

for sc in "${scenarios[@]}"; do
	start=$(date +%s)
	SCENARIOS=$sc bash "$here/run.sh" "$bin" --rounds 1 --duration 12 --no-direct >"$out/$sc.compare.txt" 2>&1 &
	run=$!
	sock=""
	# The candidate runs second in the round: wait (bounded) for its
	# socket, newer than this scenario's start.
	for _ in $(seq 600); do
		for s in /tmp/fulcrum-bench.*/admin.sock; do
			[ -S "$s" ] && [ "$(stat -c %Y "$s")" -ge "$start" ] && sock=$s
		done
		[ -n "$sock" ] && break
		kill -0 "$run" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$sock" ]; then
		echo "profile.sh: $sc: no candidate socket" >&2
		wait "$run" || true
		continue
	fi
	sleep 3 # past the warm-up
	curl -sf --unix-socket "$sock" -o "$out/$sc.cpu.pprof" "http://fulcrum/debug/pprof/profile?seconds=6"
	curl -sf --unix-socket "$sock" -o "$out/$sc.allocs.pprof" "http://fulcrum/debug/pprof/allocs"
	wait "$run" || true
	go tool pprof -top -nodecount 40 "$bin" "$out/$sc.cpu.pprof" >"$out/$sc.top.txt" 2>/dev/null || true
	echo "profile.sh: $sc: $out/$sc.cpu.pprof"
done
