#!/usr/bin/env bash
# deps.sh test|bench|e2e|failover: installs the Debian packages that a make
# target needs, if a command is missing. CI and a fresh machine start with
# none of them.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
case ${1:-test} in
test)
	want curl curl
	want ip iproute2
	want bird bird2 # the router of the active-active (BGP/ECMP) tests
	;;
bench)
	want haproxy haproxy
	want nginx nginx
	want wrk wrk
	want openssl openssl
	want curl curl
	want taskset util-linux
	want ss iproute2
	;;
e2e) # the boxes: a debootstrap root file system booted with systemd-nspawn
	want debootstrap debootstrap
	want systemd-nspawn systemd-container
	want nsenter util-linux
	want ip iproute2
	;;
failover) # keepalived is the yardstick; the benchmark runs its own
	want keepalived keepalived
	want ip iproute2
	;;
*) echo "deps.sh: unknown target $1" >&2; exit 2 ;;
esac
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || { echo "deps.sh: Go is not installed (want /usr/local/go)" >&2; exit 1; }
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing packages ${need[*]}; run as root or install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Services the packages bring (bird, nginx, haproxy, keepalived) must not
# start on the host: the tests run their own, inside namespaces or boxes.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	own_policy=1
fi
trap 'if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
