SHELL := /bin/bash
# snapshot: `make run` (demo) and `make test` (every test); `make bench` (vs restic, borg).
SWIFT    ?= swift
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN      := .build/release/snapshot
DEB_BUILD := pkg-config libzstd-dev libssl-dev libmosquitto-dev openssl
DEB_TEST  := $(DEB_BUILD) mosquitto mosquitto-clients python3
DEB_BENCH := $(DEB_BUILD) restic borgbackup zstd hyperfine time rsync python3
BENCH_DATASET ?= /tmp/snapshot-bench-dataset
BENCH_WORK    ?= /tmp/snapshot-bench-work
SHARED        ?= ../shared

.PHONY: run test build release bench deps-build deps-test deps-bench clean

# Installs the Debian packages in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps-build: ; $(call apt_install,$(DEB_BUILD))
deps-test:  ; $(call apt_install,$(DEB_TEST))
deps-bench: ; $(call apt_install,$(DEB_BENCH))

build: deps-build
	$(SWIFT) build

release: deps-build
	$(SWIFT) build -c release

# The demo: an example agent system beside configs/, a local mosquitto when none is
# reachable, the agent on it, and a first system snapshot over MQTT with its progress.
run: release deps-test
	@scripts/make-example-system.sh .
	@scripts/demo.sh

test: deps-test
	$(SWIFT) build
	set -o pipefail; $(SWIFT) test 2>&1 | tee .build/test-output.txt

# Side-by-side benchmark against restic and borg on the shared 1 GiB dataset.
bench: deps-bench release
	@test -d $(BENCH_DATASET) || python3 $(SHARED)/bench/make_dataset.py $(BENCH_DATASET) --size-mb 1024 --seed 42
	TOOLS="restic borg-zstd3 snapshot" SNAPSHOT_BIN=$(CURDIR)/$(BIN) $(SHARED)/bench/anchors.sh $(BENCH_DATASET) $(BENCH_WORK)

clean:
	rm -rf .build .demo-restore .demo
