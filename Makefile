# A thin wrapper over CMake and the scripts in scripts/.
#
#   make setup     install missing Debian packages, configure, build
#   make build     configure (if needed) and build
#   make run       setup + bubbles, then omnipkgd in the foreground
#                  (mounted at $(MOUNT) when run as root)
#   make test      setup + bubbles + ctest (what CI runs)
#   make bench     setup + bubbles + bench/run.sh (QUICK=1 for a short run)
#   make install   cmake --install into $(PREFIX)
#   make clean     remove the build directory

BUILD_DIR ?= build
JOBS      ?= 2
PREFIX    ?= /usr/local
MOUNT     ?= /omnipkg
QUICK     ?=

export BUILD_DIR JOBS

SHELL := /bin/bash
.DEFAULT_GOAL := build
.PHONY: setup build bubbles run test bench install clean

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
test: setup bubbles
	ctest --test-dir $(BUILD_DIR) --output-on-failure

bench: setup bubbles
	$(if $(QUICK),QUICK=$(QUICK) )bash bench/run.sh

install:
	@[ -f $(BUILD_DIR)/CMakeCache.txt ] || { echo "install: nothing built; run make build first" >&2; exit 1; }
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR)
