SHELL := /bin/bash
# snapshot: `make run` (demo) and `make test` (every test); `make bench` (vs restic, borg).
SWIFT    ?= swift
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN      := .build/release/snapshot
DEB_BUILD := pkg-config libzstd-dev libssl-dev libmosquitto-dev openssl
DEB_RUN   := $(DEB_BUILD) mosquitto mosquitto-clients python3
DEB_TEST  := $(DEB_RUN) python3-venv age chromium
# A real S3 API for the tests (moto's server mode), Prometheus's own parser of the text
# exposition (prometheus_client) and a DevTools client for the headless Chromium that loads
# the dashboard (websocket-client), from PyPI into a virtual environment.
VENV      := .build/venv
MOTO      := $(VENV)/bin/moto_server
DEB_BENCH := $(DEB_BUILD) restic borgbackup time python3
BENCH_SIZE_MB     ?= 1024
BENCH_SMALL_FILES ?= 50000
BENCH_DATASET     ?= /tmp/snapshot-bench/mixed-$(BENCH_SIZE_MB)mb
BENCH_SMALL       ?= /tmp/snapshot-bench/small-$(BENCH_SMALL_FILES)
BENCH_WORK        ?= /tmp/snapshot-bench/work

.PHONY: run test build release bench bench-continuous bench-s3 fuzz deps-build deps-run deps-test deps-bench clean

# Installs the Debian packages in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps-build: ; $(call apt_install,$(DEB_BUILD))
deps-run:   ; $(call apt_install,$(DEB_RUN))
deps-test:  ; $(call apt_install,$(DEB_TEST))
	@$(VENV)/bin/python3 -c 'import moto, prometheus_client, websocket' 2>/dev/null || { echo "installing moto[server], prometheus_client and websocket-client into $(VENV)"; python3 -m venv $(VENV) && $(VENV)/bin/pip install -q 'moto[server]' prometheus_client websocket-client; }
deps-bench: ; $(call apt_install,$(DEB_BENCH))

build: deps-build
	$(SWIFT) build

release: deps-build
	$(SWIFT) build -c release

# The demo: an example agent system beside configs/, a local mosquitto when none is
# reachable, the agent on it, and a first system snapshot over MQTT with its progress.
run: release deps-run
	@scripts/make-example-system.sh .
	@scripts/demo.sh

test: deps-test
	$(SWIFT) build
	@# One test at a time: many tests time real brokers and child processes, and tests that
	@# wait synchronously would otherwise occupy the cooperative threads (one per core) that
	@# the others need. About 75 s on two cores.
	set -o pipefail; $(SWIFT) test --no-parallel 2>&1 | tee .build/test-output.txt

# Seeded random-mutation fuzzing (Tests/SnapshotAgentTests/FuzzTests.swift): 25,000 cases
# for each of 9 readers, 225,000 in all; FUZZ_SEED=N reproduces a run. `make test` runs 400 each.
FUZZ_ITERATIONS ?= 25000
fuzz: build
	FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) $(SWIFT) test --filter FuzzTests 2>&1 | grep -E "^fuzz |Test run|✘|error" 

# snapshot beside restic and borg (bench/run.sh): a 1 GiB mixed tree with a day of change,
# and a tree of small files; medians of 3 rounds with ratios to restic. As root,
# BENCH_FS_IMAGE_MB=12000 gives each tool and data set a new ext4 file system (bench/run.sh).
bench: deps-bench release
	@mkdir -p $(dir $(BENCH_DATASET)) $(dir $(BENCH_SMALL))
	@test -d $(BENCH_DATASET) || python3 bench/make_dataset.py $(BENCH_DATASET) --size-mb $(BENCH_SIZE_MB)
	@test -d $(BENCH_SMALL) || python3 bench/make_dataset.py $(BENCH_SMALL) --small-files $(BENCH_SMALL_FILES)
	SNAPSHOT_BIN=$(CURDIR)/$(BIN) bench/run.sh $(BENCH_DATASET) $(BENCH_SMALL) $(BENCH_WORK)

# Continuous snapshots on the small-files tree (bench/continuous.py): write-to-snapshot
# latency, cost of one changed file beside a normal incremental create, idle CPU and
# wake-ups, memory, a storm of 100 writes. BENCH_SMALL_FILES=200000 for the issue's figures.
bench-continuous: release
	@mkdir -p $(dir $(BENCH_SMALL))
	@test -d $(BENCH_SMALL) || python3 bench/make_dataset.py $(BENCH_SMALL) --small-files $(BENCH_SMALL_FILES)
	python3 bench/continuous.py $(CURDIR)/$(BIN) $(BENCH_SMALL) $(BENCH_WORK)-continuous

# The S3 backend beside the local one on the 1 GiB dataset (bench/s3.sh): create, a day of
# change, verify --read-data, restore, copy; moto on loopback; medians and S3/local ratios.
bench-s3: deps-test release
	@mkdir -p $(dir $(BENCH_DATASET))
	@test -d $(BENCH_DATASET) || python3 bench/make_dataset.py $(BENCH_DATASET) --size-mb $(BENCH_SIZE_MB)
	bench/s3.sh $(CURDIR)/$(BIN) $(BENCH_DATASET) $(BENCH_WORK)-s3

clean:
	rm -rf .build .demo-restore .demo
