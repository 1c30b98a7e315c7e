# metricsd — the two commands: `make run` and `make test`. See README.md.
BUILD       ?= build
DEBUG_BUILD ?= build-debug
FUZZ_BUILD  ?= build-fuzz
JOBS        ?= $(shell nproc)
LISTEN      ?= :8012
DATA        ?= ./data
FUZZ_SECONDS ?= 20

.PHONY: all deps build run test debug bench fuzz clean

all: build

deps:
	@scripts/install-deps.sh build

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/metricsd --listen $(LISTEN) --data-dir $(DATA)

# The whole suite, under AddressSanitizer and UndefinedBehaviorSanitizer; then what was
# skipped and why, and the slowest tests (scripts/test-report.sh). TESTS=regex runs a subset.
TESTS ?= .
test:
	@scripts/install-deps.sh test
	@cmake -S . -B $(DEBUG_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMETRICSD_SANITIZE=ON >/dev/null
	@cmake --build $(DEBUG_BUILD) -j $(JOBS)
	@cd $(DEBUG_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -R '$(TESTS)'; rc=$$?; \
	  cd $(CURDIR) && scripts/test-report.sh $(DEBUG_BUILD); exit $$rc

debug:
	@scripts/install-deps.sh build
	@cmake -S . -B $(DEBUG_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMETRICSD_SANITIZE=ON >/dev/null
	@cmake --build $(DEBUG_BUILD) -j $(JOBS)

bench: build
	@scripts/install-deps.sh bench
	@bench/run.sh $(BUILD)

fuzz:
	@scripts/install-deps.sh test
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMETRICSD_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/run-fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(DEBUG_BUILD) $(FUZZ_BUILD)
