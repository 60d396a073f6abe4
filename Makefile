# chorus — top-level entry points.  `make run` and `make test` work on a fresh
# Debian bookworm machine as root: they install the Debian packages first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
LOCAL_DIR  ?= .chorus-local
CTEST_ARGS ?=

.PHONY: all deps build build-asan run stop status test test-fast test-asan fuzz bench clean \
        jepsen jepsen-ci jepsen-bugs

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt tests/CMakeLists.txt | deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

$(ASAN_BUILD)/Makefile: CMakeLists.txt tests/CMakeLists.txt | deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCHORUS_SANITIZE=ON >/dev/null

build-asan: deps $(ASAN_BUILD)/Makefile
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory

# Starts a local 3-node cluster in the background and shows its status.
run: build
	@$(BUILD)/chorusctl local up -n 3 --dir $(LOCAL_DIR)
	-@$(BUILD)/chorusctl --dir $(LOCAL_DIR) status

stop:
	@$(BUILD)/chorusctl local down --dir $(LOCAL_DIR)

status:
	-@$(BUILD)/chorusctl --dir $(LOCAL_DIR) status

# Everything CI runs: the plain build's tests, then the same tests under ASan+UBSan.
test: build build-asan
	@echo "== tests (RelWithDebInfo) =="
	@cd $(BUILD) && ctest --output-on-failure -j 2 $(CTEST_ARGS)
	@echo "== tests (ASan+UBSan) =="
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j 2 $(CTEST_ARGS)
	@echo "== Jepsen suite: short matrix (docs/jepsen.md) =="
	@$(MAKE) --no-print-directory jepsen-ci

# Unit, simulation and fuzz-replay tests only (no processes): seconds.
test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L 'unit|sim|fuzz'

# The benchmark set of docs/benchmarks.md on a fresh local cluster (minutes; prints
# tables, asserts nothing).  BENCH_ARGS=--quick for a small run of every mode.
bench: build
	@scripts/bench-all.sh $(BUILD) $(BENCH_ARGS)

# libFuzzer: every decoder for FUZZ_SECONDS each (clang).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = fuzz_entry fuzz_event fuzz_snapshot fuzz_proto fuzz_config fuzz_token fuzz_wire fuzz_placement \
    fuzz_bench_message
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCHORUS_FUZZ=ON \
	    -DCHORUS_SANITIZE=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(FUZZ_TARGETS) -- --no-print-directory
	@for t in $(FUZZ_TARGETS); do \
	    echo "== $$t =="; mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    $(FUZZ_BUILD)/tests/$$t -max_total_time=$(FUZZ_SECONDS) \
	        $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t || exit 1; done

# Jepsen-style consistency suite (docs/jepsen.md): 5 network namespaces, root only.
# `make jepsen` is one default run; `make jepsen-ci` a short matrix that fails on
# any invalid verdict or harness error.  JEPSEN_ARGS adds options to every run.
JEPSEN_ARGS     ?=
JEPSEN_CI_NEMESES ?= partition kill pause clock membership
JEPSEN_CI_TIME  ?= 45
jepsen: build
	@jepsen/run --build $(BUILD) --nemesis partition --time 60 $(JEPSEN_ARGS)

jepsen-ci: build
	@fail=0; for n in $(JEPSEN_CI_NEMESES); do \
	    echo "== jepsen: $$n ($(JEPSEN_CI_TIME) s) =="; \
	    jepsen/run --build $(BUILD) --nemesis $$n --time $(JEPSEN_CI_TIME) $(JEPSEN_ARGS) \
	        || { echo "== jepsen: $$n FAILED =="; fail=1; }; \
	done; exit $$fail

# Proof that the suite can fail: a chorusd built with CHORUS_BUGS=ON runs under a
# partition nemesis once per deliberate bug; this target passes only when the
# suite reports every one of them invalid (exit status 1).
BUGS_BUILD ?= build-bugs
JEPSEN_BUGS ?= ack-before-commit stale-read deliver-uncommitted
jepsen-bugs: deps
	@cmake -S . -B $(BUGS_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHORUS_BUGS=ON >/dev/null
	@cmake --build $(BUGS_BUILD) -j $(JOBS) --target chorusd chorusctl -- --no-print-directory
	@fail=0; for b in $(JEPSEN_BUGS); do \
	    echo "== jepsen: bug $$b (expect invalid) =="; \
	    jepsen/run --build $(BUGS_BUILD) --bug $$b --nemesis partition --time 60 \
	        $(JEPSEN_ARGS); rc=$$?; \
	    if [ $$rc -eq 1 ]; then echo "== caught $$b =="; \
	    else echo "== NOT caught: $$b (exit $$rc) =="; fail=1; fi; \
	done; exit $$fail

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(BUGS_BUILD)
