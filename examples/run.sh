#!/usr/bin/env bash
# run.sh BIN: three demo backends on 127.0.0.1:9001-9003 and the agent on
# examples/node.yaml in the foreground. Ctrl-C (or SIGTERM) stops them all.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/.run/data"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
for i in 1 2 3; do
	"$bin" demo-backend --listen "127.0.0.1:900$i" --name "app$i" &
	pids+=($!)
done
echo "demo: frontend http://127.0.0.1:8080 -> app1..app3; stats: $bin stats --config $here/node.yaml"
"$bin" agent --config "$here/node.yaml" &
pids+=($!)
wait "${pids[-1]}"
