#!/bin/sh
# it_presets: every preset keeps its expected behaviour (tests/data/scenarios/presets-regression.yaml,
# checked through ./sim's own expect: mechanism, as a user's CI would run it): exit 0 and
# a well-formed JUnit file with one passing testcase per check. Then the other side: a
# broken bound exits 3 with a readable FAIL line (value, bound, margin) and a JUnit
# failure; a bad check is refused at load with exit 2 and file:line:col; --baseline
# against the run's own runs.db passes, and against a better baseline fails.
set -u
. tests/support/sim_it.sh
scn=tests/data/scenarios/presets-regression.yaml

"$SIM" "$scn" --out "$tmp/a" --quiet --junit "$tmp/a.xml" >"$tmp/a.out" 2>"$tmp/a.err"
rc=$?
[ $rc -eq 0 ] || fail "presets regressed (exit $rc):$(grep '^FAIL' "$tmp/a.out") $(cat "$tmp/a.err")"
xmllint --noout "$tmp/a.xml" || fail "JUnit file is not well-formed XML"
checks=$(grep -c '^PASS' "$tmp/a.out")
[ "$checks" -ge 20 ] || fail "only $checks checks passed"
grep -q "<testsuite name=\"presets-regression\" tests=\"$checks\" failures=\"0\" skipped=\"0\">" "$tmp/a.xml" ||
    fail "JUnit testsuite line: $(grep '<testsuite ' "$tmp/a.xml")"
[ "$(grep -c '<testcase ' "$tmp/a.xml")" -eq "$checks" ] || fail "not one testcase per check"
grep -q "expect: $checks passed, 0 failed, 0 skipped" "$tmp/a.out" || fail "no summary line"

# a bound the precise scorer cannot meet
sed 's/that: \[failed == 0, ttft_p90 < 1s,/that: [failed == 0, ttft_p90 < 1ms,/' "$scn" >"$tmp/broken.yaml"
cmp -s "$scn" "$tmp/broken.yaml" && fail "the negative test's edit did not apply"
"$SIM" "$tmp/broken.yaml" --out "$tmp/b" --quiet --junit "$tmp/b.xml" >"$tmp/b.out" 2>&1
rc=$?
[ $rc -eq 3 ] || fail "a broken bound: exit $rc, not 3"
grep -q '^FAIL  llm-d-precise last stage: ttft_p90 < 1ms: 412.7 ms (bound < 1 ms, margin -411.7 ms)$' "$tmp/b.out" ||
    fail "FAIL line: $(grep '^FAIL' "$tmp/b.out")"
grep -q "expect: $((checks - 1)) passed, 1 failed, 0 skipped" "$tmp/b.out" || fail "summary after a failure"
xmllint --noout "$tmp/b.xml" || fail "JUnit file with a failure is not well-formed"
grep -q 'failures="1"' "$tmp/b.xml" || fail "JUnit failure count"
grep -q '<failure message="412.7 ms (bound &lt; 1 ms, margin -411.7 ms)"/>' "$tmp/b.xml" ||
    fail "JUnit failure message: $(grep '<failure' "$tmp/b.xml")"

# a bad check is refused before anything runs
sed 's/ttft_p90 < 1s,/ttft_p09 < 1s,/' "$scn" >"$tmp/bad.yaml"
"$SIM" "$tmp/bad.yaml" --out "$tmp/c" --quiet >/dev/null 2>"$tmp/c.err"
rc=$?
[ $rc -eq 2 ] || fail "unknown metric: exit $rc, not 2"
grep -q "bad.yaml:38:27: field 'expect.checks\[2\].that\[1\]': unknown metric 'ttft_p09'" "$tmp/c.err" ||
    fail "unknown metric message: $(cat "$tmp/c.err")"
[ -e "$tmp/c" ] && fail "a bad scenario still ran"

# --baseline: the same run is no worse than itself; a baseline twice as fast is beaten
"$SIM" "$scn" --out "$tmp/d" --quiet --baseline "$tmp/a/runs.db" >"$tmp/d.out" 2>&1 ||
    fail "no worse than itself: $(grep '^FAIL' "$tmp/d.out")"
grep -q '^PASS  llm-d-precise last stage: ttft_p90 no worse than the baseline by more than 5%' "$tmp/d.out" ||
    fail "baseline line missing"
sqlite3 "$tmp/a/runs.db" "UPDATE stages SET ttft_p90 = ttft_p90 / 2"
"$SIM" "$scn" --out "$tmp/e" --quiet --baseline "$tmp/a/runs.db" >"$tmp/e.out" 2>&1
rc=$?
[ $rc -eq 3 ] || fail "worse than a faster baseline: exit $rc, not 3"
grep -q '^FAIL  llm-d-precise last stage: ttft_p90 no worse than the baseline by more than 5%: 412.7 ms (bound <= 216.7 ms, baseline 206.4 ms' "$tmp/e.out" ||
    fail "baseline FAIL line: $(grep 'llm-d-precise.*baseline' "$tmp/e.out")"
echo "it_presets: ok ($checks checks)"
