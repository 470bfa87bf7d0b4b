#!/bin/sh
# Runs every test program given, and prints one closing line: "N passed, N failed".
# cmocka binaries report per test; a shell integration test (tests/it_*.sh) counts once, and
# so does a fuzz replay (replay_<name>), run over tests/fuzz/corpus/<name> and
# tests/fuzz/regress/<name> (the folders that exist).
passed=0; failed=0; failures=""
for t in "$@"; do
    log=$(mktemp)
    case "$t" in
        *.sh) sh "$t" >"$log" 2>&1; rc=$? ;;
        */replay_*)
            h=${t##*/replay_}; set --
            for d in tests/fuzz/corpus/$h tests/fuzz/regress/$h; do [ -d "$d" ] && set -- "$@" "$d"; done
            "$t" "$@" >"$log" 2>&1; rc=$? ;;
        *)    "$t" >"$log" 2>&1; rc=$? ;;
    esac
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    case "$t" in *.sh|*/replay_*) if [ $rc -eq 0 ]; then p=1; f=0; else p=0; f=1; fi ;; esac
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # a crash or sanitizer report is a failure
    passed=$((passed + p)); failed=$((failed + f))
    name=$(basename "$t")
    if [ $rc -ne 0 ]; then
        echo "FAIL $name ($p passed, $f failed, exit $rc)"; sed 's/^/    /' "$log" | tail -40
        failures="$failures $name"
    else
        echo "ok   $name ($p passed)"
    fi
    rm -f "$log"
done
[ -n "$failures" ] && echo "failing:$failures"
echo "tests: $passed passed, $failed failed"
[ $failed -eq 0 ]
