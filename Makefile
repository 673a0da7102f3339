# mobileformer -- build, test, run, bench.
#
#   make              build the libraries (engine, vision, server), the CLI and the server (build/)
#   make check        fast and offline: build + the C unit suites (no installs, no fuzz builds)
#   make test         install missing Debian packages, build, run every test
#   make run          install missing packages, build, serve the bundled model on :8080
#   make bench        engine benchmarks (bench/engine.sh), not part of the tests
#   make roofline     this CPU's fp32/bf16/AMX peaks and L2/L3/DRAM bandwidth, the batch-1 floors they imply
#   make gemm-bench   the 1x1, linear, depthwise and attention kernels alone on one network's shapes (GEMM_ARGS="ARCH SIZE IMAGES")
#   make loadtest     HTTP load test: wrk at 1/8/64 connections vs the engine alone (bench/loadtest.sh)
#   make bench-protocol  /v1 vs Open Inference Protocol JSON and binary, 1 and 16 connections (bench/protocol.py)
#   make bench-uploads   12 MP photos: decode costs exact vs scaled, small uploads' p99 beside them (bench/uploads.py)
#   make eval-default accuracy of the bundled model: PyTorch, engine, service (tools/eval_default.py)
#   make test SANITIZE=address,undefined   same tests in build/san-address,undefined/
#   make fuzz         libFuzzer campaigns, FUZZ_SECONDS (600) per target (tests/fuzz/run.sh)
#   make tsan         threaded parts under ThreadSanitizer: batcher suite, server load + SIGTERM
#   make test-docker  the image, one container and deploy/docker-compose.yml in Docker (tests/docker/)
#   make test-swarm   deploy/stack.yml on a Docker Swarm: rolling updates, kill, scaling (after test-docker)
#
# One FINAL_CFLAGS is assembled here; -MMD keeps header dependencies.

CC       ?= cc
OPT      ?= -O2
SANITIZE ?=
PKGS      = jansson libpng libjpeg libwebp libwebpdemux zlib openblas
LIBS_NOPC = -lgif   # giflib ships no pkg-config file
WARN      = -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
FINAL_CFLAGS  = -std=c11 -D_GNU_SOURCE -pthread -g -fno-strict-aliasing -MMD -MP $(OPT) $(WARN) \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Iengine -Ivision -Iserver $(CFLAGS)
FINAL_LDLIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(LIBS_NOPC) -lm -pthread $(LDLIBS)
AVX2_FLAGS    = -mavx2 -mfma
AVX512_FLAGS  = -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2
BF16_FLAGS    = $(AVX512_FLAGS) -mavx512bf16
AMX_FLAGS     = $(BF16_FLAGS) -mamx-tile -mamx-bf16

ifeq ($(SANITIZE),)
BUILD    ?= build
else
BUILD    ?= build/san-$(SANITIZE)
FINAL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
FINAL_LDLIBS += -fsanitize=$(SANITIZE)
endif

# Three libraries, each on the ones below it: engine (inference), vision
# (decode, preprocess, top-k; on engine), server (HTTP service; on both).
# The CLI links vision + engine only: no HTTP in it.
ENGINE_SRC  := $(wildcard engine/*.c)
VISION_SRC  := $(wildcard vision/*.c)
SERVER_SRC  := $(filter-out server/main.c,$(wildcard server/*.c))
CLI_SRC     := $(wildcard cli/*.c)
TEST_SRC    := $(wildcard tests/test_*.c)

ENGINE_OBJ  := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o)
VISION_OBJ  := $(VISION_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ     := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

ENGINE_LIB  := $(BUILD)/libmfengine.a
VISION_LIB  := $(BUILD)/libmfvision.a
SERVER_LIB  := $(BUILD)/libmfserver.a
CLI_BIN     := $(BUILD)/mobileformer
SERVER_BIN  := $(BUILD)/mobileformer-server


.PHONY: all check test test-bins deps run bench loadtest clean eval-default fuzz fuzz-bins tsan soak roofline gemm-bench test-docker test-swarm bench-protocol bench-uploads
all: $(CLI_BIN) $(SERVER_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) -c $< -o $@

# Kernels with AVX2, AVX-512, AVX512-BF16 or AMX are compiled for it, only those
# files, and only called after a CPU check (engine/kernels.c).
$(BUILD)/obj/engine/%_avx512.o: engine/%_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(AVX512_FLAGS) -O3 -c $< -o $@

$(BUILD)/obj/engine/kernels_avx512bf16.o: engine/kernels_avx512bf16.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(BF16_FLAGS) -O3 -c $< -o $@

$(BUILD)/obj/engine/kernels_avx2.o: engine/kernels_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(AVX2_FLAGS) -O3 -c $< -o $@

$(BUILD)/obj/engine/kernels_amx.o: engine/kernels_amx.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(AMX_FLAGS) -O3 -c $< -o $@

$(ENGINE_LIB): $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(VISION_LIB): $(VISION_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SERVER_LIB): $(SERVER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLI_BIN): $(CLI_OBJ) $(VISION_LIB) $(ENGINE_LIB)
	$(CC) $(FINAL_CFLAGS) -o $@ $^ $(FINAL_LDLIBS)

$(SERVER_BIN): $(BUILD)/obj/server/main.o $(SERVER_LIB) $(VISION_LIB) $(ENGINE_LIB)
	$(CC) $(FINAL_CFLAGS) -o $@ $^ $(FINAL_LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/support/testutil.h $(SERVER_LIB) $(VISION_LIB) $(ENGINE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) -Itests/support -o $@ $< $(SERVER_LIB) $(VISION_LIB) $(ENGINE_LIB) $(FINAL_LDLIBS) \
	    $(shell pkg-config --libs check)

# libFuzzer targets (clang): each tests/fuzz/fuzz_*.c linked with the server
# and engine sources built again, always with ASan + UBSan, in build/fuzz/
# whatever SANITIZE says.
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz

# .incbin is invisible to -MMD: the embedded web page's files, by hand
$(BUILD)/obj/server/web.o $(FUZZ_BUILD)/obj/server/web.o: $(wildcard server/web/*)
FUZZ_SECONDS ?= 600
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -pthread -g -O1 -fno-strict-aliasing -MMD -MP $(WARN) \
                $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Iengine -Ivision -Iserver \
                -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_OBJ     := $(ENGINE_SRC:%.c=$(FUZZ_BUILD)/obj/%.o) $(VISION_SRC:%.c=$(FUZZ_BUILD)/obj/%.o) \
                $(SERVER_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# The two big AVX-512 kernel files without UBSan here (ASan stays): clang's
# UBSan instrumentation of their unrolled intrinsics took 353 s and 500 s to
# compile (-ftime-report: block-frequency and branch-probability analyses),
# against 72 s and 64 s without it, and was most of `make test`'s build.  Their
# UBSan coverage is the gcc build of `make test SANITIZE=address,undefined`.
FUZZ_KERNEL_CFLAGS = $(FUZZ_CFLAGS) -fno-sanitize=undefined -fsanitize=fuzzer-no-link

$(FUZZ_BUILD)/obj/engine/%_avx512.o: engine/%_avx512.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/engine/kernels_avx512bf16.o: engine/kernels_avx512bf16.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(BF16_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/engine/kernels_avx2.o: engine/kernels_avx2.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(AVX2_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/engine/kernels_amx.o: engine/kernels_amx.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(AMX_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(FUZZ_OBJ) \
	    $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(LIBS_NOPC) -lm -pthread

fuzz-bins: $(FUZZ_BIN)

deps:
	@sh scripts/install-deps.sh test

# LD_PRELOAD shim of the out-of-memory tests: plain C, never sanitized
$(BUILD)/tests/libfailmalloc.so: tests/support/failmalloc.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 $(WARN) -shared -fPIC -o $@ $<

# LD_PRELOAD shim of the connection-reset race test: each epoll_wait sleeps first
$(BUILD)/tests/libepolldelay.so: tests/support/epolldelay.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 $(WARN) -shared -fPIC -o $@ $<

# writer of the decode bombs the black-box tests send (plain C, libjpeg)
$(BUILD)/tests/make_bombs: tests/support/make_bombs.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 $(WARN) -o $@ $< -ljpeg

# the fuzz targets are sanitized already: a SANITIZE run does not rebuild them
test-bins: all $(TEST_BIN) $(BUILD)/tests/libfailmalloc.so $(BUILD)/tests/libepolldelay.so $(BUILD)/tests/make_bombs $(if $(SANITIZE),,$(FUZZ_BIN))

# Every test: C suites (Check), then the Python/black-box suites.
test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) test-bins
	@MF_BUILD=$(BUILD) sh tests/run.sh

# The quick loop while developing: what is installed already, the C suites only.
check: all $(TEST_BIN)
	@MF_BUILD=$(BUILD) MF_TEST_KIND=unit sh tests/run.sh

run: 
	@sh scripts/install-deps.sh build
	@$(MAKE) --no-print-directory all
	$(SERVER_BIN) --config config/server.json

bench: all
	@sh bench/engine.sh

ARCHS ?= mobile_former_26m mobile_former_151m mobile_former_508m
# phone photos: 12 MP decode costs, exact vs scaled; small uploads' p99 beside large ones
bench-uploads: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/uploads.py $(UPLOADS_ARGS)

# /v1/predict vs the Open Inference Protocol (JSON, binary) on the bundled model and a 151m preset
bench-protocol: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/protocol.py $(PROTOCOL_ARGS)

$(BUILD)/roofline: bench/roofline.c $(ENGINE_LIB)
	$(CC) $(FINAL_CFLAGS) -O2 -o $@ $< $(ENGINE_LIB) $(FINAL_LDLIBS)

roofline: $(BUILD)/roofline
	@OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-Haswell} $(BUILD)/roofline $(ARCHS)

# the GEMM kernels alone on one network's shapes, every set this CPU has (bench/gemm.c)
$(BUILD)/gemm-bench: bench/gemm.c $(ENGINE_LIB)
	$(CC) $(FINAL_CFLAGS) -o $@ $< $(ENGINE_LIB) $(FINAL_LDLIBS)

gemm-bench: $(BUILD)/gemm-bench
	@OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-Haswell} OPENBLAS_NUM_THREADS=1 $(BUILD)/gemm-bench $(GEMM_ARGS)

loadtest: deps
	@$(MAKE) --no-print-directory all
	@MF_BUILD=$(BUILD) sh bench/loadtest.sh $(LOADTEST_ARGS)

eval-default: deps
	@$(MAKE) --no-print-directory all
	@MF_BUILD=$(BUILD) OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-Haswell} /usr/bin/python3 tools/eval_default.py

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-bins
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh $(FUZZ_TARGETS)

tsan: deps
	@$(MAKE) --no-print-directory SANITIZE=thread all build/san-thread/tests/test_batcher \
	    build/san-thread/tests/test_decoder build/san-thread/tests/test_httpparse
	@MF_BUILD=build/san-thread sh tests/sh/tsan.sh

soak: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/make_bombs
	@MF_BUILD=$(BUILD) sh bench/soak.sh $(SOAK_ARGS)

# Docker for real (not part of `make test`): Debian's docker.io, started here
# when no daemon runs (data root build/docker/); the image compiles inside Docker
test-docker:
	@sh scripts/install-deps.sh docker
	@sh tests/docker/test_docker.sh

test-swarm:
	@sh scripts/install-deps.sh docker
	@sh tests/docker/test_swarm.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/tests $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
