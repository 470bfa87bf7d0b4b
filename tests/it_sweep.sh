#!/bin/sh
# it_sweep: a sweep's points, run by ./sim in parallel processes, equal the same points
# run one at a time as plain scenarios through ./sim's ordinary path (runs.db's stages
# table); and README's worked example (scenarios/capacity-plan.yaml) prints what README
# shows, so the example stays real.
set -u
. tests/support/sim_it.sh

scn=tests/data/scenarios/sweep-small.yaml
"$SIM" "$scn" --out "$tmp/sweep" --jobs 3 --no-plots >"$tmp/out" 2>"$tmp/err" || fail "sweep: $(cat "$tmp/err")"
[ -s "$tmp/sweep/sweep.csv" ] || fail "no sweep.csv"
grep -q '^plan (slo: ttft_p90 <= 150 ms' "$tmp/out" || fail "no plan answer: $(cat "$tmp/out")"
[ -s "$tmp/sweep/plan.txt" ] || fail "no plan.txt"

# The scenario without its questions, one point's values put in by hand.
base() { sed '/^slo:/,$d' "$scn"; }
# point ROUTER REPLICAS RATE WEIGHT: ttft_p90, output tok/s and e2e p90 from a plain run
point() {
    base | sed -e "s/^cluster: {replicas: 2,/cluster: {replicas: $2,/" \
               -e "s/{rate: 8, duration: 6}/{rate: $3, duration: 6}/" \
               -e "s/precise-prefix-cache-scorer, weight: 2}/precise-prefix-cache-scorer, weight: $4}/" \
        >"$tmp/p.yaml"
    rm -rf "$tmp/p"
    "$SIM" "$tmp/p.yaml" --router "$1" --out "$tmp/p" --quiet --no-plots >/dev/null 2>"$tmp/err" ||
        fail "point $*: $(cat "$tmp/err")"
    sqlite3 -separator ' ' "$tmp/p/runs.db" \
        "SELECT printf('%.9g', ttft_p90), printf('%.9g', output_tokens_per_sec), printf('%.9g', latency_p90)
         FROM stages WHERE stage = 1"
}
# the same three figures of the CSV row for ROUTER REPLICAS RATE [WEIGHT]
row() {
    awk -F, -v r="$1" -v n="$2" -v q="$3" -v w="${4:-}" \
        '$1 == r && $2 == n && $5 == q && (w == "" || $4 == w) { printf "%.9g %.9g %.9g\n", $10, $7, $13 }' \
        "$tmp/sweep/sweep.csv"
}
n=0
for p in "rr 1 8 2" "rr 2 32 2" "precise 1 32 1" "precise 2 8 3" "precise 2 32 3"; do
    set -- $p
    want=$(point "$1" "$2" "$3" "$4")
    if [ "$1" = rr ]; then got=$(row "$1" "$2" "$3"); else got=$(row "$1" "$2" "$3" "$4"); fi
    [ -n "$got" ] || fail "sweep.csv has no row for $p"
    [ "$got" = "$want" ] || fail "point $p: sweep.csv says '$got', a plain run '$want'"
    n=$((n + 1))
done

# README's worked example: the block after the command line, as printed
awk '/^`\.\/sim scenarios\/capacity-plan\.yaml`/ { on = 1; next }
     on && /^```$/ { if (++fence == 2) exit; next }
     on && fence == 1 { print }' README.md >"$tmp/readme"
[ -s "$tmp/readme" ] || fail "README has no capacity-plan example"
"$SIM" scenarios/capacity-plan.yaml --out "$tmp/cap-run" --no-plots >"$tmp/cap" 2>"$tmp/err" ||
    fail "capacity-plan: $(cat "$tmp/err")"
sed -i "s|^wrote $tmp/cap-run/|wrote runs/capacity-plan/|" "$tmp/cap"
diff "$tmp/readme" "$tmp/cap" >"$tmp/diff" || fail "README's capacity-plan output differs from ./sim's: $(cat "$tmp/diff")"
echo "it_sweep: ok ($n points equal their plain runs; README's example reproduced)"
