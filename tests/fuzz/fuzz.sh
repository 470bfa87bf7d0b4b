#!/bin/sh
# fuzz.sh SECONDS NAME...: runs each libFuzzer harness build/fuzz/bin/fuzz_NAME for
# SECONDS, one after the other, and prints per harness the executions, coverage (cov:,
# ft:) and what it found. Called by `make fuzz` (FUZZ_TIME, FUZZ=name).
# With FUZZ_RUNS=N in the environment each harness instead runs N executions, however
# long that takes (SECONDS is then ignored): `make fuzz-campaign` uses it for the
# issue's targets, printing the seconds each took.
#
# Each harness starts from build/fuzz/corpus/NAME, a working copy that the seed corpus
# tests/fuzz/corpus/NAME is copied into (the fuzzer adds what it finds there, so the
# tree's seeds stay small and a later run resumes where this one stopped), plus the
# reproducers in tests/fuzz/regress/NAME (read only). Inputs may be 256 KiB long, or
# what tests/fuzz/fuzz_NAME.options says (libFuzzer flags, one a line, e.g.
# -max_len=1048576): libFuzzer's default cap of 4 KB cannot reach deep nesting or
# multi-window token arrays. Crash, leak, timeout and out-of-memory inputs land in
# build/fuzz/crashes/NAME/ (emptied when that harness starts); the script exits 1 if
# any harness left one or failed to run.
secs=$1; shift
status=0
for name in "$@"; do
    bin=build/fuzz/bin/fuzz_$name
    work=build/fuzz/corpus/$name
    crashes=build/fuzz/crashes/$name
    log=build/fuzz/log/$name.txt
    mkdir -p "$work" "$crashes" build/fuzz/log
    rm -f "$crashes"/*
    [ -d tests/fuzz/corpus/$name ] && cp -f tests/fuzz/corpus/$name/* "$work"/ 2>/dev/null
    dirs=$work
    [ -d tests/fuzz/regress/$name ] && dirs="$dirs tests/fuzz/regress/$name"
    opts=
    [ -f tests/fuzz/fuzz_$name.options ] && opts=$(grep -v '^#' tests/fuzz/fuzz_$name.options)
    # shellcheck disable=SC2086 # opts and dirs are lists of words
    if [ -n "$FUZZ_RUNS" ]; then limit="-runs=$FUZZ_RUNS"; else limit="-max_total_time=$secs"; fi
    t0=$(date +%s)
    "$bin" -max_len=262144 -timeout=10 -rss_limit_mb=2048 $limit -print_final_stats=1 \
        -artifact_prefix="$crashes"/ $opts $dirs >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    # a slow unit (over libFuzzer's 10 s report mark, short of the timeout) is kept for a
    # look but is not a finding: on a loaded machine a stalled process makes them
    found=$(ls "$crashes" | grep -v '^slow-unit-' | tr '\n' ' ')
    slow=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log" | tail -1)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        status=1
        printf 'FAIL %-16s %s execs, %s, exit %d, found: %s(log %s)\n' "$name" "${execs:-?}" "${cov:-no cov}" $rc \
            "${found:-nothing saved }" "$log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -5 | sed 's/^/    /'
    else
        printf 'ok   %-16s %s execs, %s, %ss, slowest input %ss, nothing found\n' "$name" "${execs:-?}" \
            "${cov:-no cov}" "$took" "${slow:-?}"
    fi
done
exit $status
