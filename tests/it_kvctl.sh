#!/bin/sh
# it_kvctl: ./kvctl against the golden vectors (docs/upstream/kv-events-and-index.md §5) and
# worked-example bytes (§1), its usage errors (exit 2), bad input (exit 1), and a clean
# Ctrl-C exit from listen. Run from the repo root after `make all`.
K=./kvctl
[ -x "$K" ] || { echo "it_kvctl: $K is not built (run make all)"; exit 1; }
fail=0
differs() {   # name, value that must not come out, actual
    if [ "$3" != "$2" ] && [ -n "$3" ]; then echo "ok   $1"; else echo "FAIL $1 (got $3)"; fail=1; fi
}
check() {
    if [ "$3" = "$2" ]; then echo "ok   $1"; else echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fail=1; fi
}
status() {   # name, expected exit status, command...
    name=$1; want=$2; shift 2
    "$@" >/dev/null 2>&1
    check "$name" "exit $want" "exit $?"
}

FNV="9540012594951042066
16921089685996993662"
XXH="13553460584553255540
9887990258693334188"
check "fnv64a-cbor golden keys" "$FNV" "$($K keys --model test-model --algo fnv64a-cbor 1..32)"
check "xxh64 golden keys (the default)" "$XXH" "$($K keys --model test-model 1..32)"
check "xxh64 explicit, seed \"\", block size 16" "$XXH" "$($K keys --model test-model --algo xxh64 --seed '' --block-size 16 1..32)"
check "tokens as ranges, lists and singles" "$XXH" "$($K keys --model test-model 1..10 11,12 13 14..32)"
check "a partial trailing block is dropped" "13553460584553255540" "$($K keys --model test-model 1..31)"
check "the LoRA name replaces the model" "$FNV" "$($K keys --model base --lora test-model --algo fnv64a-cbor 1..32)"
check "two keys for 64 tokens at block size 32" "2" "$($K keys --model test-model --block-size 32 1..64 | wc -l | tr -d ' ')"
first=$($K keys --model test-model --extra 1=img-abc 1..32 | head -1)
second=$($K keys --model test-model --extra 1=img-abc 1..32 | tail -1)
check "--extra 1=ID leaves block 0 alone" "13553460584553255540" "$first"
differs "--extra 1=ID taints block 1" "9887990258693334188" "$second"
salted=$($K keys --model test-model --cache-salt tenant 1..16)
differs "--cache-salt taints block 0" "13553460584553255540" "$salted"

EX_ARRAY=93cb41d954fc402000009198ab426c6f636b53746f72656491cf2ceabcfae6d332eac0dc00100102030405060708090a0b0c0d0e0f1010c0a3475055c000
EX_MAP=93cb41d954fc40200000918ba474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657391cf2ceabcfae6d332eab1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f696473dc00100102030405060708090a0b0c0d0e0f10aa626c6f636b5f73697a6510a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0aa65787472615f6b65797391c0a967726f75705f69647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6e00
EX_REMOVED=93cb41d954fc402000009193ac426c6f636b52656d6f76656491cf2ceabcfae6d332eaa347505500
STORED='{"type":"BlockStored","block_hashes":[3236607068019569386],"parent_block_hash":null,"token_ids":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"block_size":16,"lora_id":null,"medium":"GPU","lora_name":null'
check "decode: the spec's array-form example" "$STORED}" "$($K decode --hex $EX_ARRAY)"
check "decode: the spec's map-form example" "$STORED"',"extra_keys":[null],"group_idx":0,"kv_cache_spec_kind":"full_attention"}' "$($K decode --hex $EX_MAP)"
check "decode: BlockRemoved" '{"type":"BlockRemoved","block_hashes":[3236607068019569386],"medium":"GPU"}' "$($K decode --hex $EX_REMOVED)"
check "decode: a hash >= 2^63 stays unsigned" '{"type":"BlockRemoved","block_hashes":[18446744073709551615],"medium":null}' \
    "$($K decode --hex '92 00 91 92 ac426c6f636b52656d6f766564 91cfffffffffffffffff')"
tmp=$(mktemp)
printf '\223\313\101\331\124\374\100\040\000\000\221\221\260AllBlocksCleared\000' >"$tmp"
check "decode: a payload file (AllBlocksCleared)" '{"type":"AllBlocksCleared"}' "$($K decode "$tmp")"
check "decode: stdin" '{"type":"AllBlocksCleared"}' "$($K decode - <"$tmp")"
rm -f "$tmp"
check "decode: truncated input names the reason and offset" \
    "kvctl: kvevents: truncated: array at offset 10 declares 1 elements, 0 bytes remain" "$($K decode --hex 93cb41d954fc4020000091 2>&1)"
status "decode: truncated input exits 1" 1 $K decode --hex 93cb41d954fc4020000091

status "usage: no command" 2 $K
status "usage: unknown command" 2 $K frobnicate
status "usage: keys without --model" 2 $K keys 1..32
status "usage: block size 0" 2 $K keys --model m --block-size 0 1..32
status "usage: unknown algorithm" 2 $K keys --model m --algo sha256 1..32
status "usage: doctor without a URL" 2 $K doctor
status "usage: doctor with a bad --since" 2 $K doctor http://127.0.0.1:1 --since soon
status "usage: bad token range" 2 $K keys --model m 5..x
status "usage: negative token" 2 $K keys --model m 1..3 -3
status "usage: bad --extra" 2 $K keys --model m --extra img 1..32
status "usage: odd hex" 2 $K decode --hex abc
status "usage: listen without an endpoint" 2 $K listen

# The port comes from the pid, and 40000-59999 lies in Linux's ephemeral range, so another
# process's connection may hold it: listen then exits 1 at once ("Address already in use").
# That is the environment, not kvctl, so try the next port; any other early exit is a failure.
err=$(mktemp)
for try in 1 2 3 4 5; do
    port=$((40000 + ($$ + try * 997) % 20000))
    $K listen tcp://127.0.0.1:$port --bind >/dev/null 2>"$err" &
    pid=$!
    sleep 0.5
    if kill -INT $pid 2>/dev/null; then wait $pid; rc=$?; break; fi
    wait $pid; rc=$?
    grep -q 'Address already in use' "$err" || break
done
rm -f "$err"
check "listen: Ctrl-C exits cleanly" "exit 0" "exit $rc"
status "listen: a bad endpoint exits 1" 1 $K listen nowhere://x

D=tests/data/llm-d-router
status "config: the precise-routing guide loads" 0 $K config $D/guide-precise-prefix-cache-routing.yaml
check "config: defaults shown (token-load threshold)" "    queueThresholdTokens: 4194304" \
    "$($K config $D/guide-optimized-baseline.yaml 2>/dev/null | grep queueThresholdTokens)"
check "config: a removed parameter is a named warning" "1" \
    "$($K config $D/guide-optimized-baseline.yaml 2>&1 >/dev/null | grep -c 'guide-optimized-baseline.yaml:22:31: plugin .prefix-cache-affinity-filter.: maxTokensInFlightPenalty was removed')"
check "config: an unmodelled plugin fails with its reason" \
    "kvctl: $D/epp-mm-embeddings-cache-config.yaml: plugin 'mm-embeddings-cache-producer' (mm-embeddings-cache-producer): not available in kvroute: it needs a multimodal encoder (embeddings) cache, which kvroute does not model" \
    "$($K config $D/epp-mm-embeddings-cache-config.yaml 2>&1 >/dev/null | grep -v warning)"
status "config: that failure exits 1" 1 $K config $D/epp-mm-embeddings-cache-config.yaml
check "config: a bad file names file:line:col and field" \
    "kvctl: tests/data/configs/bad-weight.yaml:6:39: field 'schedulingProfiles[0].plugins[0].weight': expected a number, got 'heavy'" \
    "$($K config tests/data/configs/bad-weight.yaml 2>&1)"
status "usage: config without a file" 2 $K config

[ $fail -eq 0 ] && echo "it_kvctl: all passed"
exit $fail
