# Estuary — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= release
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: build (libav*, hiredis, OpenSSL, pkg-config) and test peers (ffmpeg, redis, rtmpdump,
# nginx-rtmp as a relay upstream; the tests run their own nginx on a free loopback port, never the packaged service).
BUILD_PACKAGES := libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libhiredis-dev libssl-dev pkg-config
TEST_PACKAGES := ffmpeg redis-server rtmpdump nginx libnginx-mod-rtmp postgresql python3 python3-venv curl

.PHONY: run test build deps test-deps fixtures clean help bench bench-smoke bench-deps api-fuzz

help:
	@echo "make run    install what is missing, build, start estuary serve (RTMP :1935, HTTP :8080)"
	@echo "make test   install what is missing and run the whole test suite"

deps:
	@missing=$$(for p in $(BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "Swift 6.2+ toolchain not found: see https://swift.org/install"; exit 1; }

test-deps: deps
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build -c $(CONFIG) --product estuary

run: build
	$(SWIFT) run -c $(CONFIG) --skip-build estuary serve $(ARGS)

# Tests build in debug (faster to compile); end-to-end suites run serially inside.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(MAKE) api-fuzz
	$(MAKE) bench-smoke BENCH_BUILD=debug

# schemathesis (PyPI, in .build-venv/) against a running debug `estuary serve`, on SQLite and on
# PostgreSQL, with the OpenAPI document the server serves: no 5xx, nothing the document does not
# allow. About a minute and a half on two cores; Tests/api-fuzz.sh says how.
api-fuzz: test-deps
	$(SWIFT) build --product estuary
	ESTUARY_BIN=.build/debug/estuary Tests/api-fuzz.sh

# The benchmark (not part of CI's time budget): Estuary and nginx-rtmp under the same load, same run.
# Servers are pinned to core 0, the generator and wrk to core 1.
BENCH_PACKAGES := nginx libnginx-mod-rtmp wrk ffmpeg
BENCH_BUILD ?= release
BENCH_OUT := bench/results/$(shell date -u +%Y-%m-%d)-$(shell hostname -s).md

bench-deps: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench: bench-deps
	$(SWIFT) build -c release --product estuary
	$(SWIFT) build -c release --product estuary-bench
	bench/make-fixtures.sh bench/.cache
	taskset -c 1 .build/release/estuary-bench --estuary .build/release/estuary --fixtures bench/.cache --out $(BENCH_OUT) $(ARGS)
	cp $(BENCH_OUT) BENCHMARKS.md

# Seconds, tiny sizes: proves the tool and both servers still work (part of make test).
bench-smoke: bench-deps
	$(SWIFT) build -c $(BENCH_BUILD) --product estuary
	$(SWIFT) build -c $(BENCH_BUILD) --product estuary-bench
	.build/$(BENCH_BUILD)/estuary-bench --smoke --estuary .build/$(BENCH_BUILD)/estuary

fixtures:
	fixtures/make-fixtures.sh
	python3 fixtures/make-hostile.py

clean:
	rm -rf .build
