#!/usr/bin/env bash
# candidate.sh BIN MODE LISTEN BACKEND: the compare.sh candidate contract.
# Writes a one-frontend Fulcrum config for {listen} -> {backend} and execs
# the agent on it, so compare.sh measures the agent process itself.
set -euo pipefail
bin=$1 mode=$2 listen=$3 backend=$4
dir=$(mktemp -d -t fulcrum-bench.XXXXXX)
cat >"$dir/lb.yaml" <<YAML
global: {maxconn: 20000, hard_stop_after: 1s}
defaults:
  mode: $mode
  timeouts: {connect: 5s, client: 400s, server: 30s, http_request: 10s, http_keep_alive: 400s, tunnel: 400s}
frontends:
  - {name: bench, bind: ["$listen"], maxconn: 20000, forwardfor: $([ "$mode" = http ] && echo true || echo false), default_backend: nginx}
backends:
  - name: nginx
    servers: [{name: nginx, address: "$backend"}]
YAML
cat >"$dir/node.yaml" <<YAML
node: {name: bench, data_dir: $dir}
admin: {socket: $dir/admin.sock}
proxy_config: $dir/lb.yaml
log: {level: warn}
YAML
exec "$bin" agent --config "$dir/node.yaml"
