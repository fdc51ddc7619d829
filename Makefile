# A thin wrapper over CMake and the scripts in scripts/.
#
#   make setup     install missing Debian packages, configure, build
#   make build     configure (if needed) and build
#   make run       setup + bubbles, then omnipkgd in the foreground
#                  (mounted at $(MOUNT) when run as root)
#   make test      setup + bubbles + ctest, then test-asan and fuzz (what CI runs)
#   make test-asan every unit and integration test again on an ASan+UBSan
#                  build in $(ASAN_DIR): leaks and reports are failures
#   make fuzz      each libFuzzer harness (tests/fuzz) for $(FUZZ_SECONDS) s,
#                  built with clang in $(FUZZ_DIR)
#   make bench     setup + bubbles + bench/run.sh (QUICK=1 for a short run)
#   make install   cmake --install into $(PREFIX) (under $(DESTDIR) if set):
#                  binaries, library, Python client, systemd units
#   make clean     remove the build directories

BUILD_DIR ?= build
JOBS      ?= 2
PREFIX    ?= /usr/local
MOUNT     ?= /omnipkg
QUICK     ?=
ASAN_DIR  ?= build-asan
FUZZ_DIR  ?= build-fuzz
FUZZ_SECONDS ?= 25
WERROR    := $(if $(filter true,$(CI)),-DOMNI_WERROR=ON)

export BUILD_DIR JOBS

SHELL := /bin/bash
.DEFAULT_GOAL := build
.PHONY: setup build bubbles run test test-asan fuzz bench install clean

setup:
	bash scripts/setup.sh

build:
	@if [ ! -f $(BUILD_DIR)/CMakeCache.txt ]; then \
		echo "cmake -S . -B $(BUILD_DIR)$(if $(filter true,$(CI)), -DOMNI_WERROR=ON)"; \
		cmake -S . -B $(BUILD_DIR) $(if $(filter true,$(CI)),-DOMNI_WERROR=ON); \
	fi
	cmake --build $(BUILD_DIR) -j$(JOBS)

bubbles: setup
	bash scripts/bubbles.sh

run: setup bubbles
	@if [ "$$(id -u)" = 0 ]; then \
		mkdir -p $(MOUNT); \
		echo "$(BUILD_DIR)/omnipkgd --foreground --mount $(MOUNT)"; \
		exec $(BUILD_DIR)/omnipkgd --foreground --mount $(MOUNT); \
	else \
		echo "$(BUILD_DIR)/omnipkgd --foreground"; \
		exec $(BUILD_DIR)/omnipkgd --foreground; \
	fi

# Serial on purpose: integration tests start daemons and mount file systems.
# Every stage runs even when one before it failed, so that one run shows
# all there is to fix; make test fails if any did.
test: setup bubbles
	@rc=0; \
	ctest --test-dir $(BUILD_DIR) --output-on-failure || rc=1; \
	$(MAKE) --no-print-directory test-asan || rc=1; \
	$(MAKE) --no-print-directory fuzz || rc=1; \
	if [ $$rc != 0 ]; then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

# No -Werror here: the plain build is the warnings gate, and GCC's
# sanitizer instrumentation raises false maybe-uninitialized warnings.
test-asan: bubbles
	cmake -S . -B $(ASAN_DIR) -DOMNI_SANITIZE=ON
	cmake --build $(ASAN_DIR) -j$(JOBS)
	ctest --test-dir $(ASAN_DIR) --output-on-failure

fuzz: setup
	CC=clang cmake -S . -B $(FUZZ_DIR) -DOMNI_FUZZ=ON -DOMNI_FUZZ_SECONDS=$(FUZZ_SECONDS) $(WERROR)
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target fuzz_all
	ctest --test-dir $(FUZZ_DIR) -L fuzz --output-on-failure

bench: setup bubbles
	$(if $(QUICK),QUICK=$(QUICK) )bash bench/run.sh

install:
	@[ -f $(BUILD_DIR)/CMakeCache.txt ] || { echo "install: nothing built; run make build first" >&2; exit 1; }
	$(if $(DESTDIR),DESTDIR=$(DESTDIR) )cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
