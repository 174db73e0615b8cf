#!/bin/sh
# build-deb.sh DEB_VERSION: builds dist/fulcrum_<DEB_VERSION>_amd64.deb from
# the working tree (run from the repository root; `make deb` does).
#   1. a static binary with -X main.version=DEB_VERSION (and, with
#      SCHEMA_LEVEL=N, its config schema level pinned to N: a stand-in for
#      an older release in the upgrade test),
#   2. its man pages and bash completion (`fulcrum docs`),
#   3. changelog.Debian.gz,
#   4. the .deb with nfpm (NFPM, default: go run of the pinned version).
# Timestamps come from SOURCE_DATE_EPOCH (default: the last commit), so two
# builds of one tree give the same package.
set -eu
version=${1:?usage: build-deb.sh DEB_VERSION}
GO=${GO:-go}
NFPM=${NFPM:-"$GO run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"}
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

pkg=dist/pkg
rm -rf "$pkg"
mkdir -p "$pkg/man"

echo "build-deb: fulcrum $version"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X main.version=$version${SCHEMA_LEVEL:+ -X github.com/fulcrum-lb/fulcrum/state.schemaLevel=$SCHEMA_LEVEL}" \
	-o "$pkg/fulcrum" ./cmd/fulcrum
got=$("$pkg/fulcrum" version)
[ "$got" = "fulcrum $version" ] || { echo "build-deb: the binary says '$got'" >&2; exit 1; }

"$pkg/fulcrum" docs --man "$pkg/man" --bash "$pkg/bash-completion/fulcrum"
[ -s "$pkg/man/fulcrum.1" ] && [ -s "$pkg/man/fulcrum-agent.1" ] || { echo "build-deb: man pages missing" >&2; exit 1; }
touch -d "@$SOURCE_DATE_EPOCH" "$pkg"/man/*.1
gzip -9n "$pkg"/man/*.1

# A changelog entry per build: the package is built from git, not from a
# Debian source package, so the history is the git log.
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	printf 'fulcrum (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from git commit %s (git describe: %s).\n' "$commit" \
		"$(git describe --tags --always --dirty 2>/dev/null || echo unknown)"
	printf '    See the project history for the changes.\n\n'
	printf ' -- Fulcrum developers <dev@fulcrum.invalid>  %s\n' "$date"
} >"$pkg/changelog.Debian"
gzip -9n "$pkg/changelog.Debian"

# nfpm sets the files' modification times from SOURCE_DATE_EPOCH itself.
out=dist/fulcrum_${version}_amd64.deb
rm -f "$out"
DEB_VERSION=$version $NFPM package --config packaging/nfpm.yaml --packager deb --target "$out"
echo "build-deb: $out"
