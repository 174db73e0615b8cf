#!/usr/bin/env bash
# deps.sh: installs what `make e2e` needs on the host, if a command is
# missing: debootstrap (the boxes' root file system) and systemd-container
# (systemd-nspawn). Services the packages bring must not start on the host.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want debootstrap debootstrap
want systemd-nspawn systemd-container
want nsenter util-linux
want ip iproute2
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "test/boxes/deps.sh: missing packages ${need[*]}; run as root or install them" >&2
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
