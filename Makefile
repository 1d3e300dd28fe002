# pylaf top-level build: the cffi extension, the C unit tests, the microbench.
PYTHON ?= python3
CC ?= cc
CFLAGS_TEST = -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter -DLAF_DEBUG
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
include csrc/sources.mk
CORE = $(addprefix csrc/,$(LAF_CORE_SOURCES))

.PHONY: all ext ctest ctest-asan asan bench bench-quick fuzz-smoke lint test clean

all: ext

ext:
	$(PYTHON) build.py

build/test_laf: csrc/test_laf.c $(CORE) csrc/laf.h csrc/laf_internal.h
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) -Icsrc -o $@ csrc/test_laf.c $(CORE)

build/test_laf_asan: csrc/test_laf.c $(CORE) csrc/laf.h csrc/laf_internal.h
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) $(SAN) -Icsrc -o $@ csrc/test_laf.c $(CORE)

ctest: build/test_laf
	./build/test_laf

ctest-asan: build/test_laf_asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/test_laf_asan

# The _laf extension under ASan + UBSan (a copy of the tree in build/asan/src):
# the hostile-input, thread, snapshot, VMA-tree and differential tests, the
# fuzz corpus replay, random differential runs and the trace-loader fuzz
# target, ASAN_FUZZ_SECONDS each (about 75 s in all at 20 s, so part of
# `make test`; the long run is in docs/reliability.md).
ASAN_FUZZ_SECONDS ?= 20
asan:
	bash fuzz/asan.sh $(ASAN_FUZZ_SECONDS)

# The standalone C microbench (bench/laf_bench); bench-quick checks every case on 16 MiB.
bench:
	$(MAKE) -C bench

bench-quick:
	$(MAKE) -C bench quick

# A short differential fuzz run (atheris: C core vs pylaf.reference).
fuzz-smoke:
	bash fuzz/smoke.sh 30

# The whole suite: C unit tests (plain and ASan+UBSan), the microbench's
# self-checks, the fuzz smoke run, `make asan`, then pytest (benchmarks run once each as
# correctness checks; the differential state machine with the "ci"
# hypothesis profile).  pytest's summary is the last line.
# Gates: ruff (lint + McCabe complexity <= 12) on the whole tree, mypy --strict on pylaf/.
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

test: lint ctest ctest-asan bench-quick fuzz-smoke asan
	$(PYTHON) -m pytest -q --benchmark-disable

clean:
	rm -rf build pylaf/_laf.c pylaf/*.so pylaf/*.o
	$(MAKE) -C bench clean
