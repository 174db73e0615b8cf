# Fulcrum: `make run` starts a demo node on loopback, `make test` runs every
# test (installing what they need first), `make bench` compares with HAProxy.

export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/fulcrum

.PHONY: all build run test lint unit fuzz bench deps-test deps-bench clean

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

unit: build
	FULCRUM_BIN=$(CURDIR)/$(BIN) FULCRUM_VERSION=$(VERSION) $(GO) test -race -count=1 -timeout 15m ./...

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

clean:
	rm -rf bin dist examples/.run
