# kvroute build. One engine library (engine/ + policies/), two drivers (simulator/, live/).
# Sources are found by wildcard: adding a module is adding a file.
#
#   make deps    install the Debian packages (root; idempotent)
#   make         build ./sim ./epp ./kvctl (-O2)
#   make demo    deps, build, ./sim scenarios/rate60.yaml with report and charts
#   make test    deps, build, every test under ASan+UBSan, threaded tests under TSan
#   make bench   deps, build, the benchmarks (prints a table)
#   make fuzz    deps, the libFuzzer harnesses built with clang, each run FUZZ_TIME seconds

CC       ?= cc
CXX      ?= c++
DEB_PKGS := build-essential pkg-config libzmq3-dev libmsgpack-dev libxxhash-dev \
            libsqlite3-dev libyaml-dev libcmocka-dev gnuplot-nox libjansson-dev libyajl-dev \
            libcurl4-openssl-dev libmicrohttpd-dev libgrpc-dev libprotobuf-c-dev \
            protobuf-c-compiler libssl-dev openssl sqlite3 libsimdjson-dev clang

PKGS     := msgpack libxxhash yaml-0.1 sqlite3 jansson yajl libzmq libcurl libmicrohttpd \
            grpc gpr libprotobuf-c openssl simdjson
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation
INCS     := -Iengine -Ipolicies -Isimulator -Ilive -Ibuild/gen
BASE_CFLAGS = -std=gnu11 -g $(WARN) $(INCS) $(PKG_CFLAGS)
# C++ only where a chosen library is C++ (simdjson); no exceptions cross into C
BASE_CXXFLAGS = -std=gnu++17 -g -fno-exceptions $(WARN) $(INCS) $(PKG_CFLAGS)
OPT      ?= -O2
# x86-64 CPUs have had popcnt since 2008; without the flag every __builtin_popcountll
# (holder bitmaps: eviction, scoring) is a libgcc call of ~20 instructions
ifeq ($(shell uname -m),x86_64)
OPT      += -mpopcnt
endif

VARIANTS := rel asan tsan
FLAGS_rel  := $(OPT)
FLAGS_asan := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FLAGS_tsan := -O1 -fsanitize=thread -fno-omit-frame-pointer
# libFuzzer harnesses (make fuzz): clang, coverage-instrumented engine and drivers too
FUZZ_CC  ?= clang
FUZZ_CXX ?= clang++
CC_fuzz  = $(FUZZ_CC)
CXX_fuzz = $(FUZZ_CXX)
FLAGS_fuzz := -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
              -Wno-unknown-warning-option
# simdjson's internal assertions (on unless NDEBUG) cost it half its speed; sanitized builds keep them
CXXFLAGS_rel := -DNDEBUG

# --- sources ---------------------------------------------------------------
PROTO_SRC  := $(wildcard live/proto/*.proto)
PROTO_C    := $(patsubst live/proto/%.proto,build/gen/%.pb-c.c,$(PROTO_SRC))
PROTO_H    := $(PROTO_C:.c=.h)

ENGINE_SRC := $(wildcard engine/*.c) $(wildcard policies/*.c)
SIM_MAIN   := simulator/main.c
SIM_SRC    := $(filter-out $(SIM_MAIN),$(wildcard simulator/*.c))
LIVE_MAINS := live/epp_main.c live/kvctl.c
LIVE_SRC   := $(filter-out $(LIVE_MAINS),$(wildcard live/*.c)) $(PROTO_C) $(wildcard live/*.cc)
TEST_SRC   := $(wildcard tests/test_*.c)
TSAN_SRC   := $(wildcard tests/tsan_*.c)
BENCH_SRC  := $(wildcard tests/bench_*.c)
HELPER_SRC := $(wildcard tests/support/*.c)

obj = $(patsubst %.cc,build/$(1)/%.o,$(patsubst %.c,build/$(1)/%.o,$(2)))

define variant_rules
build/$(1)/%.o: %.c | $(PROTO_H)
	@mkdir -p $$(@D)
	$$(or $$(CC_$(1)),$$(CC)) $$(BASE_CFLAGS) $$(FLAGS_$(1)) -MMD -MP -c $$< -o $$@
build/$(1)/%.o: %.cc | $(PROTO_H)
	@mkdir -p $$(@D)
	$$(or $$(CXX_$(1)),$$(CXX)) $$(BASE_CXXFLAGS) $$(FLAGS_$(1)) $$(CXXFLAGS_$(1)) -MMD -MP -c $$< -o $$@
build/$(1)/libkvroute.a: $(call obj,$(1),$(ENGINE_SRC))
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/libsim.a: $(call obj,$(1),$(SIM_SRC)) build/$(1)/libkvroute.a
	@rm -f $$@; ar rcs $$@ $(call obj,$(1),$(SIM_SRC))
build/$(1)/liblive.a: $(call obj,$(1),$(LIVE_SRC)) build/$(1)/libkvroute.a
	@rm -f $$@; ar rcs $$@ $(call obj,$(1),$(LIVE_SRC))
LIBS_$(1) := build/$(1)/libsim.a build/$(1)/liblive.a build/$(1)/libkvroute.a
endef
$(foreach v,$(VARIANTS) fuzz,$(eval $(call variant_rules,$(v))))

# generated protobuf-c code is compiled without -Werror's stricter warnings
build/gen/%.pb-c.c build/gen/%.pb-c.h: live/proto/%.proto
	@mkdir -p build/gen
	protoc-c --proto_path=live/proto --c_out=build/gen $<

# --- programs ----------------------------------------------------------------
BINS := sim epp kvctl
all: $(addprefix build/rel/bin/,$(BINS))
	@for b in $(BINS); do [ -d $$b ] || cp -f build/rel/bin/$$b $$b; done

build/rel/bin/sim: build/rel/simulator/main.o $(LIBS_rel)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(PKG_LIBS)
build/rel/bin/epp: build/rel/live/epp_main.o $(LIBS_rel)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(PKG_LIBS)
build/rel/bin/kvctl: build/rel/live/kvctl.o $(LIBS_rel)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(PKG_LIBS)

# --- tests -------------------------------------------------------------------
TEST_BINS_ASAN := $(patsubst tests/%.c,build/asan/tests/bin/%,$(TEST_SRC))
TEST_BINS_TSAN := $(patsubst tests/%.c,build/tsan/tests/bin/%,$(TSAN_SRC))
BENCH_BINS     := $(patsubst tests/%.c,build/rel/tests/bin/%,$(BENCH_SRC))
# programs the shell tests run (it_chart.sh: an API server for ./epp --kubeconfig)
TOOL_BINS      := build/rel/tests/bin/tools/fake_k8s_server

build/asan/tests/bin/%: build/asan/tests/%.o $(call obj,asan,$(HELPER_SRC)) $(LIBS_asan)
	@mkdir -p $(@D); $(CXX) $(FLAGS_asan) -o $@ $^ $(PKG_LIBS) -lcmocka
build/tsan/tests/bin/%: build/tsan/tests/%.o $(call obj,tsan,$(HELPER_SRC)) $(LIBS_tsan)
	@mkdir -p $(@D); $(CXX) $(FLAGS_tsan) -o $@ $^ $(PKG_LIBS) -lcmocka
build/rel/tests/bin/%: build/rel/tests/%.o $(call obj,rel,$(HELPER_SRC)) $(LIBS_rel)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(PKG_LIBS)

# --- fuzzing -----------------------------------------------------------------
# One harness per untrusted input: tests/fuzz/fuzz_<name>.c(c). Under `make test` each is
# linked with the plain replay driver (gcc, ASan+UBSan) and fed its seed corpus and
# reproducers; `make fuzz` links it with libFuzzer (clang) and runs it.
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c tests/fuzz/fuzz_*.cc)
FUZZ_NAMES  := $(patsubst tests/fuzz/fuzz_%,%,$(basename $(FUZZ_SRC)))
REPLAY_BINS := $(addprefix build/asan/tests/fuzz/replay_,$(FUZZ_NAMES))
FUZZ_TIME   ?= 60
FUZZ        ?= $(FUZZ_NAMES)

build/asan/tests/fuzz/replay_%: build/asan/tests/fuzz/fuzz_%.o build/asan/tests/fuzz/replay.o \
		$(call obj,asan,$(HELPER_SRC)) $(LIBS_asan)
	@mkdir -p $(@D); $(CXX) $(FLAGS_asan) -o $@ $^ $(PKG_LIBS)
# seeds the engine's encoders write (committed; rerun after changing the generator)
fuzz-corpus: build/rel/tests/bin/fuzz/gen_corpus
	$< tests/fuzz/corpus
build/fuzz/bin/fuzz_%: build/fuzz/tests/fuzz/fuzz_%.o $(call obj,fuzz,$(HELPER_SRC)) $(LIBS_fuzz)
	@mkdir -p $(@D); $(FUZZ_CXX) $(subst fuzzer-no-link,fuzzer,$(FLAGS_fuzz)) -o $@ $^ $(PKG_LIBS)

.PHONY: all deps demo test test-build bench fuzz fuzz-corpus clean
.SECONDARY:

deps:
	@sh tests/deps.sh $(DEB_PKGS)

test-build: all $(TEST_BINS_ASAN) $(TEST_BINS_TSAN) $(TOOL_BINS) $(REPLAY_BINS)

test: deps
	@$(MAKE) --no-print-directory test-build
	@sh tests/run.sh $(TEST_BINS_ASAN) $(TEST_BINS_TSAN) $(REPLAY_BINS) $(wildcard tests/it_*.sh)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@for b in $(BENCH_BINS); do $$b || exit 1; done

fuzz: deps
	@$(MAKE) --no-print-directory $(addprefix build/fuzz/bin/fuzz_,$(FUZZ))
	@sh tests/fuzz/fuzz.sh $(FUZZ_TIME) $(FUZZ)

demo: deps
	@$(MAKE) --no-print-directory all
	./sim scenarios/rate60.yaml

clean:
	rm -rf build $(BINS)

-include $(shell find build -name '*.d' 2>/dev/null)
