# Fulcrum: `make run` starts a demo node on loopback, `make test` runs every
# test (installing what they need first), `make bench` compares with HAProxy.

export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/fulcrum

.PHONY: all build run test lint unit fuzz bench profile deps-test deps-bench deb lint-deb clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/fulcrum

# A single node on loopback: three demo backends and the agent in the
# foreground (Ctrl-C stops all). Then: curl 127.0.0.1:8080
run: build
	examples/run.sh $(BIN)

# Every test. CI runs exactly this (.ci/run).
test: deps-test lint unit

deps-test:
	test/deps.sh test

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# -p 1: one package at a time. The cluster and namespace tests measure
# failover with LAN Raft timers (300 ms); on a 2-core CI machine two packages
# under -race at once starve them into spurious elections.
unit: build
	FULCRUM_BIN=$(CURDIR)/$(BIN) FULCRUM_VERSION=$(VERSION) $(GO) test -race -count=1 -p 1 -timeout 15m ./...

# Short coverage-guided runs of every fuzz target (the corpus found is kept
# under testdata/fuzz as regression cases).
FUZZTIME ?= 30s
fuzz:
	for t in $$($(GO) test -list '^Fuzz' ./proxy/h1 | grep ^Fuzz); do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./proxy/h1 || exit 1; \
	done

# Fulcrum against HAProxy on the same nginx backend, one core each
# (../shared/bench/compare.sh). BENCH_ARGS=--quick for a short run.
BENCH_ARGS ?=
bench: build deps-bench
	test/bench/run.sh $(CURDIR)/$(BIN) $(BENCH_ARGS)

deps-bench:
	test/deps.sh bench

# CPU and allocation profiles of the agent under compare.sh's load, one
# scenario at a time (test/bench/profile.sh), into PROFILE_DIR; then e.g.
# go tool pprof -top bin/fulcrum $(PROFILE_DIR)/http-close.cpu.pprof
PROFILE_DIR ?= profiles
profile: build deps-bench
	test/bench/profile.sh $(CURDIR)/$(BIN) $(PROFILE_DIR)

# The Debian package: dist/fulcrum_$(DEB_VERSION)_amd64.deb, built with nfpm
# (packaging/build-deb.sh; see packaging/README.md). DEB_VERSION is
# `git describe` made a Debian version (packaging/version.sh), and is also
# what the packaged `fulcrum version` prints; override it to build an
# upgrade of the same tree: make deb DEB_VERSION=0.0.1-1
ifndef DEB_VERSION
DEB_VERSION := $(shell packaging/version.sh)
endif
DEB := dist/fulcrum_$(DEB_VERSION)_amd64.deb
deb:
	GO=$(GO) packaging/build-deb.sh '$(DEB_VERSION)'

# Checks of the package: lintian with no error (installed with apt if
# missing), the maintainer scripts parse, the generated docs are in it, the
# shipped configs are valid, and the unit's systemd-analyze security score.
lint-deb: deb
	@command -v lintian >/dev/null || { 		if [ "$$(id -u)" = 0 ]; then 			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null; 		else echo "lint-deb: lintian is missing (apt-get install lintian)" >&2; exit 1; fi; }
	for s in packaging/scripts/*; do sh -n $$s || exit 1; done
	dpkg-deb -c $(DEB) >dist/contents.txt
	for f in usr/bin/fulcrum lib/systemd/system/fulcrum.service etc/fulcrum/fulcrum.yaml etc/fulcrum/lb.yaml \
		usr/share/man/man1/fulcrum.1.gz usr/share/man/man1/fulcrum-agent.1.gz \
		usr/share/bash-completion/completions/fulcrum usr/share/doc/fulcrum/copyright \
		usr/share/doc/fulcrum/changelog.Debian.gz; do \
		grep -q " ./$$f\$$" dist/contents.txt || { echo "lint-deb: $$f is not in $(DEB)" >&2; exit 1; }; done
	dpkg-deb --ctrl-tarfile $(DEB) | tar -xO ./conffiles | grep -qx /etc/fulcrum/lb.yaml
	dpkg-deb -f $(DEB) Version | grep -qxF '$(DEB_VERSION)'
	dist/pkg/fulcrum config validate -f packaging/lb.yaml
	dist/pkg/fulcrum config validate -f packaging/examples/lb-cluster.yaml
	lintian --pedantic --fail-on error $(DEB)
	@if command -v systemd-analyze >/dev/null; then 		systemd-analyze security --offline=yes packaging/fulcrum.service | tail -n 1; fi

clean:
	rm -rf bin dist examples/.run

# The end-to-end proof of the package (test/boxes, issue 6): three Debian
# boxes booted with systemd-nspawn in network namespaces, a first package
# installed, clustered, a box killed and booted again, the CLI, an upgrade
# to this tree's package under load (with the schema gate checked while the
# versions are mixed), remove and purge. The first package is this tree
# built with its config schema level pinned to 2 and a lower version: a
# stand-in for the previous release, which lacks vip.handover_timeout.
# Root; a few minutes (plus ~1 min the first time for the cached
# debootstrap tree in /var/cache/fulcrum-e2e). Not part of `make test`.
# E2E_ARGS adds go test flags, e.g. E2E_ARGS='-skip TestBoxes/mixed-versions-config-gate'.
E2E_PREV_VERSION := $(shell echo '$(DEB_VERSION)' | sed 's/-\([^-]*\)$$/~prev-\1/')
E2E_ARGS ?=
.PHONY: e2e
e2e: deb
	test/deps.sh e2e
	GO=$(GO) SCHEMA_LEVEL=2 packaging/build-deb.sh '$(E2E_PREV_VERSION)'
	FULCRUM_E2E=1 FULCRUM_E2E_DEB=$(CURDIR)/dist/fulcrum_$(E2E_PREV_VERSION)_amd64.deb \
		FULCRUM_E2E_DEB_UPGRADE=$(CURDIR)/$(DEB) \
		$(GO) test -count=1 -timeout 30m ./test/boxes/ -run . -v $(E2E_ARGS)

# Issue 5's failover benchmark (test/bench/failover): the VIP holder of a
# three-node cluster in network namespaces is (a) SIGKILLed and (b) cut off
# by a cable pull, ten times each, while a client opens a new connection to
# the VIP every 10 ms; the same with keepalived (installed with apt if
# missing), with its defaults and tuned (VRRPv3, advert_int 0.1). Prints
# the client-observed gaps, lost requests and two-holder samples (recorded
# in docs/performance.md). Root; ~5 min. Not part of `make test`.
# BENCH_FAILOVER_ARGS adds go test flags; FAILOVER_RUNS=N changes the runs.
BENCH_FAILOVER_ARGS ?=
.PHONY: bench-failover
bench-failover: build
	test/deps.sh failover
	FULCRUM_BENCH_FAILOVER=1 FULCRUM_BIN=$(CURDIR)/$(BIN) FULCRUM_VERSION=$(VERSION) \
		$(GO) test -count=1 -timeout 30m -v -run '^TestFailoverBench$$' ./test/bench/failover/ $(BENCH_FAILOVER_ARGS)
