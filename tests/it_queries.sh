#!/bin/sh
# it_queries: every SQL query README.md and docs/sim-outputs.md show (between their
# "<!-- queries" and "<!-- /queries -->" markers) returns at least one row on a fresh
# run of the shipped scenario, ./sim scenarios/rate60.yaml. A query that matches nothing
# there (such as a request id the decision sampling never keeps) fails, naming it; so
# does a ```sql query outside the markers, which nothing would check.
set -u
. tests/support/sim_it.sh

"$SIM" scenarios/rate60.yaml --out "$tmp/run" --quiet --no-plots >/dev/null 2>"$tmp/err" || fail "rate60: $(cat "$tmp/err")"
n=0
for doc in README.md docs/sim-outputs.md; do
    # one file per statement: the lines of ```sql blocks between the markers, split at ';'
    rm -f "$tmp"/q.*
    awk -v out="$tmp/q." '
        /^<!-- queries/ { on = 1; next }
        /^<!-- \/queries -->/ { on = 0 }
        on && /^```sql/ { sql = 1; next }
        on && sql && /^```/ { sql = 0; next }
        on && sql { f = out sprintf("%03d", k); print >> f; if ($0 ~ /;[ \t]*$/) { close(f); k++ } }
    ' "$doc"
    found=0
    for q in "$tmp"/q.*; do
        [ -e "$q" ] || break
        found=$((found + 1))
        rows=$(sqlite3 "$tmp/run/runs.db" <"$q" 2>&1) || fail "$doc: query failed: $(cat "$q"): $rows"
        [ -n "$rows" ] || fail "$doc: no rows on rate60's runs.db: $(cat "$q")"
    done
    [ $found -ge 3 ] || fail "$doc: only $found queries between the markers"
    # and no query outside them: a ```sql block that starts with SELECT must be checked
    stray=$(awk '
        /^<!-- queries/ { on = 1; next }
        /^<!-- \/queries -->/ { on = 0; next }
        /^```sql/ { sql = 1; first = 1; next }
        sql && /^```/ { sql = 0; next }
        sql && first { first = 0; if (!on && toupper($1) == "SELECT") print FILENAME ":" NR ": " $0 }
    ' "$doc")
    [ -z "$stray" ] || fail "a query outside the <!-- queries --> markers (not checked): $stray"
    n=$((n + found))
done
echo "it_queries: ok ($n queries)"
