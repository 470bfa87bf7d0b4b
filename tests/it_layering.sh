#!/bin/sh
# it_layering: the layering seen from the built programs (the include side is the build
# itself: each folder compiles with only its allowed -I paths, see the Makefile header).
#   - ./sim links no gRPC, TLS, curl or microhttpd (ldd);
#   - ./sim carries no symbol that live/'s objects define (nm): nothing of the EPP was
#     linked into the simulator;
#   - no source reaches another folder by a relative include ("../"), which the -I
#     paths would not catch;
#   - the engine and the policies read no clock (nm): their objects reference no
#     clock_gettime, gettimeofday, time, clock or timespec_get; the drivers supply time
#     through sched_env.now and kvindex_config.clock_ns, so ./sim's runs depend on
#     simulated time only.
# Run from the repository root after `make all`.
set -u
SIM=${SIM:-build/rel/bin/sim}
[ -x "$SIM" ] || { echo "missing $SIM (make all)"; exit 1; }
fail() { echo "FAIL: $*"; exit 1; }

libs=$(ldd "$SIM") || fail "ldd $SIM"
bad=$(echo "$libs" | grep -Ei 'grpc|gpr|libssl|libcrypto|curl|microhttpd' || true)
[ -z "$bad" ] || fail "$SIM links what only ./epp needs: $bad"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ls build/rel/live/*.o >/dev/null 2>&1 || fail "live/ objects not built (make all)"
nm --defined-only -g build/rel/live/*.o build/rel/build/gen/*.o 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u >"$tmp/live"
[ -s "$tmp/live" ] || fail "no symbols read from live/'s objects"
nm --defined-only -g "$SIM" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/sim"
both=$(comm -12 "$tmp/live" "$tmp/sim" | grep -v '^main$' || true)
[ -z "$both" ] || fail "$SIM carries live/ symbols: $(echo $both | head -c 300)"

for lib in ${ENGINE_LIB:-build/rel/libengine.a} ${POLICIES_LIB:-build/rel/libpolicies.a}; do
    [ -f "$lib" ] || fail "missing $lib (make all)"
    clocks=$(nm -A -u "$lib" | grep -Ew 'clock_gettime|gettimeofday|time|clock|timespec_get' || true)
    [ -z "$clocks" ] || fail "$lib reads a clock (the driver must supply it): $clocks"
done

rel=$(grep -n '#include *"\.\./' engine/* policies/*.[ch] simulator/*.[ch] live/*.[ch] live/*.cc 2>/dev/null || true)
[ -z "$rel" ] || fail "relative include across folders: $rel"
echo "it_layering: ok"
