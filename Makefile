# kvroute build. Five folders, five libraries, layered: engine/ (libengine.a) <- policies/
# (libpolicies.a) <- simulator/ (libsim.a) for ./sim, and <- live/ (liblive.a) for ./epp and
# ./kvctl; io/ (libio.a: the system clock and the SQLite decision-trace writer, which the
# engine must not touch) sits on the engine and serves both drivers. Sources are found by
# wildcard: adding a module is adding a file.
#
#   make deps    install the Debian packages (root; idempotent)
#   make         build ./sim ./epp ./kvctl (-O2)
#   make demo    deps, build, ./sim scenarios/rate60.yaml with report and charts
#   make demo-live  deps, build, rate60 scaled to this machine, simulated and live through
#                ./epp --http-port and ./sim serve pods, one table (mk/demo-live.sh)
#   make test    deps, build, every test under ASan+UBSan, threaded tests under TSan
#   make bench   deps, build, the benchmarks (prints a table)
#   make soak    deps, build, ./epp for SOAK_MINUTES (default 30) under load, watched for growth
#   make fuzz    deps, the libFuzzer harnesses built with clang, each run FUZZ_TIME seconds
#   make fuzz-campaign
#                the same harnesses to a number of executions (10^7 network-facing, 10^6 others)
#   make check T=test_policies
#                build and run one test (tests/T.c) under ASan+UBSan (tsan_* under TSan),
#                rebuilding only what it links: the edit-compile-test loop of a policy
#
# Layering is a build fact: each folder compiles with only the include paths it may use
# (INC_<folder> below), so a header included across a forbidden boundary is a compile
# error naming the file; and each program links only its folders' libraries and the
# pkg-config libraries they need (./sim links no gRPC, TLS, curl or microhttpd).

CC       ?= cc
CXX      ?= c++
# chromium: tests/it_report.sh renders ./sim's report.html headless
DEB_PKGS := build-essential pkg-config libzmq3-dev libmsgpack-dev libxxhash-dev \
            libsqlite3-dev libyaml-dev libcmocka-dev gnuplot-nox libjansson-dev libyajl-dev \
            libcurl4-openssl-dev libmicrohttpd-dev libgrpc-dev libprotobuf-c-dev \
            protobuf-c-compiler libssl-dev openssl sqlite3 libsimdjson-dev libevent-dev clang \
            libxml2-utils chromium

# pkg-config libraries, by the folders that need them (the engine's are everyone's).
# msgpack-c is the KV-event encoder's (engine/kvevents_encode.c), linked only by programs
# that encode: the simulator and the tests; the decoder, and so ./epp and ./kvctl, need none.
PKGS_engine := libxxhash yaml-0.1
# ./sim serve: libevent (HTTP server, timers) and libzmq (KV events); no gRPC, TLS, curl
PKGS_sim    := $(PKGS_engine) msgpack sqlite3 jansson libevent libzmq
PKGS_live   := $(PKGS_engine) sqlite3 jansson yajl libzmq libcurl libmicrohttpd libevent libevent_pthreads grpc gpr \
               libprotobuf-c openssl simdjson
PKGS_core_tests := $(PKGS_engine) msgpack
PKGS_all_tests  := $(PKGS_live) msgpack
# asked of pkg-config once per make, not once per compile and link (`make test` runs
# `make deps` first and then a sub-make, which asks again with the packages present)
$(foreach s,engine sim live core_tests all_tests,$(eval PKG_LIBS_$(s) := $(shell pkg-config --libs $(PKGS_$(s)) 2>/dev/null)))
pkg_libs     = $(PKG_LIBS_$(1)) -lpthread -lm
PKG_CFLAGS  := $(shell pkg-config --cflags $(PKGS_all_tests) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation
# Layering: the include paths each folder compiles with (by a source's first path
# component; build/gen is the generated protobuf-c code of live/). The engine sees only
# itself; policies see the engine; the two drivers see the engine and the policies but
# never each other; tests and tools see everything.
INC_engine    := -Iengine
INC_policies  := -Iengine -Ipolicies
INC_io        := -Iengine -Iio
INC_simulator := -Iengine -Ipolicies -Iio -Isimulator
INC_live      := -Iengine -Ipolicies -Iio -Ilive -Ibuild/gen
INC_build     := $(INC_live)
INC_tests     := -Iengine -Ipolicies -Iio -Isimulator -Ilive -Ibuild/gen
incs           = $(INC_$(firstword $(subst /, ,$(1))))
# every compile runs through mk/compile.sh, which prints the layering hint only on failure
COMPILE        = sh mk/compile.sh $<
BASE_CFLAGS    = -std=gnu11 -g $(WARN) $(PKG_CFLAGS)
# C++ only where a chosen library is C++ (simdjson); no exceptions cross into C
BASE_CXXFLAGS  = -std=gnu++17 -g -fno-exceptions $(WARN) $(PKG_CFLAGS)
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

ENGINE_SRC := $(wildcard engine/*.c)
POLICY_SRC := $(wildcard policies/*.c)
IO_SRC     := $(wildcard io/*.c)
SIM_MAIN   := simulator/main.c
SIM_SRC    := $(filter-out $(SIM_MAIN),$(wildcard simulator/*.c))
LIVE_MAINS := live/epp_main.c live/kvctl.c
LIVE_SRC   := $(filter-out $(LIVE_MAINS),$(wildcard live/*.c)) $(PROTO_C) $(wildcard live/*.cc)
TEST_SRC   := $(wildcard tests/test_*.c)
TSAN_SRC   := $(wildcard tests/tsan_*.c)
BENCH_SRC  := $(wildcard tests/bench_*.c)
# tests/support: the scheduler fixture needs only the engine and policies; the fakes
# (gRPC client, vLLM, Kubernetes, KV-event publisher) need live/'s libraries
CORE_HELPER_SRC := tests/support/sched_fixture.c
HELPER_SRC := $(filter-out $(CORE_HELPER_SRC),$(wildcard tests/support/*.c))

obj = $(patsubst %.cc,build/$(1)/%.o,$(patsubst %.c,build/$(1)/%.o,$(2)))

# Per variant: objects (each with its folder's INC_ paths), the five libraries, and the
# link sets LIBS_<variant>_<core|sim|live|all>, in link order.
define variant_rules
build/$(1)/%.o: %.c | $(PROTO_H)
	@mkdir -p $$(@D)
	$$(COMPILE) $$(or $$(CC_$(1)),$$(CC)) $$(BASE_CFLAGS) $$(call incs,$$<) $$(FLAGS_$(1)) -MMD -MP -c $$< -o $$@
build/$(1)/%.o: %.cc | $(PROTO_H)
	@mkdir -p $$(@D)
	$$(COMPILE) $$(or $$(CXX_$(1)),$$(CXX)) $$(BASE_CXXFLAGS) $$(call incs,$$<) $$(FLAGS_$(1)) $$(CXXFLAGS_$(1)) -MMD -MP -c $$< -o $$@
build/$(1)/libengine.a: $(call obj,$(1),$(ENGINE_SRC))
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/libpolicies.a: $(call obj,$(1),$(POLICY_SRC))
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/libio.a: $(call obj,$(1),$(IO_SRC))
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/libsim.a: $(call obj,$(1),$(SIM_SRC))
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/liblive.a: $(call obj,$(1),$(LIVE_SRC))
	@rm -f $$@; ar rcs $$@ $$^
LIBS_$(1)_core := build/$(1)/libpolicies.a build/$(1)/libengine.a
LIBS_$(1)_sim  := build/$(1)/libsim.a build/$(1)/libio.a $$(LIBS_$(1)_core)
LIBS_$(1)_live := build/$(1)/liblive.a build/$(1)/libio.a $$(LIBS_$(1)_core)
LIBS_$(1)_all  := build/$(1)/libsim.a $$(LIBS_$(1)_live)
endef
$(foreach v,$(VARIANTS) fuzz,$(eval $(call variant_rules,$(v))))

# generated protobuf-c code is compiled without -Werror's stricter warnings
build/gen/%.pb-c.c build/gen/%.pb-c.h: live/proto/%.proto
	@mkdir -p build/gen
	protoc-c --proto_path=live/proto --c_out=build/gen $<

# --- programs ----------------------------------------------------------------
BINS := sim epp kvctl
.DEFAULT_GOAL := all
all: $(addprefix build/rel/bin/,$(BINS))
	@for b in $(BINS); do [ -d $$b ] || cp -f build/rel/bin/$$b $$b; done

# ./sim is C only (no libstdc++); the live programs link simdjson's C++
build/rel/bin/sim: build/rel/simulator/main.o $(LIBS_rel_sim)
	@mkdir -p $(@D); $(CC) $(FLAGS_rel) -o $@ $^ $(call pkg_libs,sim)
build/rel/bin/epp: build/rel/live/epp_main.o $(LIBS_rel_live)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(call pkg_libs,live)
build/rel/bin/kvctl: build/rel/live/kvctl.o $(LIBS_rel_live)
	@mkdir -p $(@D); $(CXX) $(FLAGS_rel) -o $@ $^ $(call pkg_libs,live)

# --- tests -------------------------------------------------------------------
# A test links by what it uses: those named in TESTS_CORE (engine and policies only,
# plus the scheduler fixture) link libpolicies + libengine; those in TESTS_SIM add
# libsim (and libio); every other test, benchmark and tool links all five libraries and the fakes.
# A new test not listed links everything, which always works.
TESTS_CORE := test_arena test_ring test_u64map test_blockkeys test_config test_kube_proxy_picker test_kvevents test_kvindex \
              test_kvingest test_llmd_plugins test_peer_policies test_policies test_prefix_cache_scorer test_scheduler \
              test_seqtrack tsan_kvindex
TESTS_SIM  := test_blockpool test_cascade test_console test_evq test_plots test_reqpath test_report test_scenario test_server \
              test_sim_e2e test_simdb test_stats test_stepmodel test_workload test_emutok test_expect test_livesse test_emureq \
              test_promtext test_compare test_profiles test_sweep test_htmlreport bench_sched bench_sim bench_demo_live \
              bench_serve
test_set    = $(if $(filter $(1),$(TESTS_CORE)),core,$(if $(filter $(1),$(TESTS_SIM)),sim,all))
test_pkgs   = $(if $(filter all,$(1)),all_tests,$(if $(filter core,$(1)),core_tests,sim))
test_helpers = $(call obj,$(1),$(CORE_HELPER_SRC) $(if $(filter all,$(2)),$(HELPER_SRC)))
test_ld     = $(if $(filter all,$(1)),$(CXX),$(CC))

TEST_BINS_ASAN := $(patsubst tests/%.c,build/asan/tests/bin/%,$(TEST_SRC))
TEST_BINS_TSAN := $(patsubst tests/%.c,build/tsan/tests/bin/%,$(TSAN_SRC))
BENCH_BINS     := $(patsubst tests/%.c,build/rel/tests/bin/%,$(BENCH_SRC))
# programs the shell tests run (it_chart.sh: an API server for ./epp --kubeconfig;
# it_serve.sh: an ext-proc request for ./epp, an independent msgpack-c KV-event reader)
TOOL_BINS      := build/rel/tests/bin/tools/fake_k8s_server build/rel/tests/bin/tools/extproc_route \
                  build/rel/tests/bin/tools/kv_msgpack_check

# $(1) variant, $(2) test name, $(3) its link set, $(4) extra libraries
define test_rule
build/$(1)/tests/bin/$(2): build/$(1)/tests/$(2).o $(call test_helpers,$(1),$(3)) $(LIBS_$(1)_$(3))
	@mkdir -p $$(@D); $(call test_ld,$(3)) $(FLAGS_$(1)) -o $$@ $$^ $$(call pkg_libs,$(call test_pkgs,$(3))) $(4)
endef
$(foreach t,$(TEST_SRC),$(eval $(call test_rule,asan,$(basename $(notdir $(t))),$(call test_set,$(basename $(notdir $(t)))),-lcmocka)))
$(foreach t,$(TSAN_SRC),$(eval $(call test_rule,tsan,$(basename $(notdir $(t))),$(call test_set,$(basename $(notdir $(t)))),-lcmocka)))
$(foreach t,$(BENCH_SRC),$(eval $(call test_rule,rel,$(basename $(notdir $(t))),$(call test_set,$(basename $(notdir $(t)))))))
$(foreach t,fake_k8s_server extproc_route kv_msgpack_check,$(eval $(call test_rule,rel,tools/$(t),all)))
$(eval $(call test_rule,rel,soak,all))

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
		$(call test_helpers,asan,all) $(LIBS_asan_all)
	@mkdir -p $(@D); $(CXX) $(FLAGS_asan) -o $@ $^ $(call pkg_libs,live)
# seeds the engine's encoders write (committed; rerun after changing the generator)
$(eval $(call test_rule,rel,fuzz/gen_corpus,all))
fuzz-corpus: build/rel/tests/bin/fuzz/gen_corpus
	$< tests/fuzz/corpus
build/fuzz/bin/fuzz_%: build/fuzz/tests/fuzz/fuzz_%.o $(call test_helpers,fuzz,all) $(LIBS_fuzz_all)
	@mkdir -p $(@D); $(FUZZ_CXX) $(subst fuzzer-no-link,fuzzer,$(FLAGS_fuzz)) -o $@ $^ $(call pkg_libs,live)

.PHONY: all deps demo demo-live test test-build check bench soak fuzz fuzz-campaign fuzz-corpus clean
.SECONDARY:

deps:
	@sh tests/deps.sh $(DEB_PKGS)

test-build: all $(TEST_BINS_ASAN) $(TEST_BINS_TSAN) $(TOOL_BINS) $(REPLAY_BINS)

# the test build runs one job per core (CI has two); JOBS=1 for a serial build
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) test-build
	@sh tests/run.sh $(TEST_BINS_ASAN) $(TEST_BINS_TSAN) $(REPLAY_BINS) $(wildcard tests/it_*.sh)

check_variant = $(if $(filter tsan_%,$(T)),tsan,asan)
check:
	@[ -n "$(T)" ] && [ -f tests/$(T).c ] || { echo "usage: make check T=NAME, tests/NAME.c a test (e.g. T=test_policies)" >&2; exit 2; }
	@$(MAKE) --no-print-directory build/$(check_variant)/tests/bin/$(T)
	build/$(check_variant)/tests/bin/$(T)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@for b in $(BENCH_BINS); do $$b || exit 1; done

SOAK_MINUTES ?= 30
soak: deps
	@$(MAKE) --no-print-directory build/rel/bin/epp build/rel/tests/bin/soak
	SOAK_MINUTES=$(SOAK_MINUTES) build/rel/tests/bin/soak build/rel/bin/epp

fuzz: deps
	@$(MAKE) --no-print-directory $(addprefix build/fuzz/bin/fuzz_,$(FUZZ))
	@sh tests/fuzz/fuzz.sh $(FUZZ_TIME) $(FUZZ)

# the campaign issue 10 asks for: 10^7 executions of each network-facing harness (request
# bodies, ext-proc streams, KV events), 10^6 of every other; hours on one core
FUZZ_NET := openai_body extproc_stream kvevents
fuzz-campaign: deps
	@$(MAKE) --no-print-directory $(addprefix build/fuzz/bin/fuzz_,$(FUZZ_NAMES))
	@FUZZ_RUNS=10000000 sh tests/fuzz/fuzz.sh 0 $(FUZZ_NET); a=$$?; \
	 FUZZ_RUNS=1000000 sh tests/fuzz/fuzz.sh 0 $(filter-out $(FUZZ_NET),$(FUZZ_NAMES)); exit $$(($$a | $$?))

demo: deps
	@$(MAKE) --no-print-directory all
	./sim scenarios/rate60.yaml

# DEMO_LIVE_SCENARIO, DEMO_LIVE_OUT: another scenario (its routers presets) and folder
DEMO_LIVE_SCENARIO ?= scenarios/rate60-live.yaml
demo-live: deps
	@$(MAKE) --no-print-directory all
	sh mk/demo-live.sh $(DEMO_LIVE_SCENARIO) $(DEMO_LIVE_OUT)

clean:
	rm -rf build $(BINS)

-include $(shell find build -name '*.d' 2>/dev/null)
