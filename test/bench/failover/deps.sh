#!/usr/bin/env bash
# deps.sh: installs what `make bench-failover` needs and the machine lacks:
# keepalived (Debian package, the yardstick) and iproute2. Like test/deps.sh,
# it installs behind a policy-rc.d that forbids starting services, so that
# the package's keepalived.service does not start in the root namespace: the
# benchmark runs its own keepalived in the namespaces it makes.
set -euo pipefail
need=()
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "bench-failover: missing packages ${need[*]}; run as root or install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	own_policy=1
fi
trap 'if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
