/* test_kvevents: the worked-example bytes (docs/upstream/kv-events-and-index.md §1) decoded and
 * re-encoded byte for byte, hash encodings, every field in all three encodings via round
 * trips, tolerated extra/missing fields, every rejection reason with its counter, and a
 * truncation + mutation loop over valid payloads (run under ASan+UBSan) in which
 * msgpack-c, an independent reader, must accept whatever the decoder accepts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "kvevents.h"

/* Hex with spaces allowed and "quoted" ASCII runs, like the spec writes bytes. */
static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ' || *s == '\n') {
            s++;
        } else if (*s == '"') {
            for (s++; *s != '"'; s++) out[n++] = (uint8_t)*s;
            s++;
        } else {
            unsigned v;
            assert_int_equal(sscanf(s, "%2x", &v), 1);
            out[n++] = (uint8_t)v;
            s += 2;
        }
    }
    return n;
}

#define TOKENS16 "01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10"
static const char EX_ARRAY[] =
    "93 cb 41d954fc40200000 91 98 ab\"BlockStored\" 91 cf 2ceabcfae6d332ea c0 dc 0010 " TOKENS16
    " 10 c0 a3\"GPU\" c0 00";
static const char EX_MAP[] =
    "93 cb 41d954fc40200000 91 8b a4\"type\" ab\"BlockStored\" ac\"block_hashes\" 91 cf 2ceabcfae6d332ea"
    " b1\"parent_block_hash\" c0 a9\"token_ids\" dc 0010 " TOKENS16 " aa\"block_size\" 10 a7\"lora_id\" c0"
    " a6\"medium\" a3\"GPU\" a9\"lora_name\" c0 aa\"extra_keys\" 91 c0 a9\"group_idx\" 00"
    " b2\"kv_cache_spec_kind\" ae\"full_attention\" 00";
static const char EX_REMOVED[] = "93 cb 41d954fc40200000 91 93 ac\"BlockRemoved\" 91 cf 2ceabcfae6d332ea a3\"GPU\" 00";
static const char EX_CLEARED[] = "93 cb 41d954fc40200000 91 91 b0\"AllBlocksCleared\" 00";

static const uint32_t TOK16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint64_t EX_HASH = 3236607068019569386ULL;

static kvev_event example_stored(void)
{
    kvev_event e = {0};
    e.type = KVEV_BLOCK_STORED;
    e.block_hashes = &EX_HASH;
    e.n_block_hashes = 1;
    e.token_ids = TOK16;
    e.n_token_ids = 16;
    e.block_size = 16;
    e.medium = kvev_str_c("GPU");
    return e;
}

static void assert_encodes_to(const kvev_batch *b, kvev_encoding enc, const char *hex)
{
    uint8_t want[4096];
    size_t n = unhex(hex, want);
    kvev_buf buf = {0};
    kv_err err;
    assert_int_equal(kvev_encode(b, enc, &buf, &err), KV_OK);
    assert_int_equal(buf.len, n);
    assert_memory_equal(buf.data, want, n);
    kvev_buf_free(&buf);
}

static void assert_example_event(const kvev_event *e)
{
    assert_int_equal(e->type, KVEV_BLOCK_STORED);
    assert_int_equal(e->n_block_hashes, 1);
    assert_true(e->block_hashes[0] == EX_HASH);
    assert_false(e->has_parent);
    assert_int_equal(e->n_token_ids, 16);
    assert_memory_equal(e->token_ids, TOK16, sizeof TOK16);
    assert_int_equal(e->block_size, 16);
    assert_false(e->has_lora_id);
    assert_string_equal(e->medium.s, "GPU");
    assert_int_equal(e->medium.len, 3);
    assert_null(e->lora_name.s);
}

static void test_worked_example_array(void **state)
{
    (void)state;
    uint8_t p[512];
    size_t n = unhex(EX_ARRAY, p);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    kv_err err;
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_true(b.ts == 1700000000.5);
    assert_true(b.has_dp_rank);
    assert_int_equal(b.data_parallel_rank, 0);
    assert_int_equal(b.n_events, 1);
    assert_example_event(&b.events[0]);
    assert_false(b.events[0].has_extra_keys);
    assert_false(b.events[0].has_group_idx);
    assert_null(b.events[0].kv_cache_spec_kind.s);
    assert_int_equal(kvev_decoder_stats(d)->batches, 1);
    assert_int_equal(kvev_decoder_stats(d)->events[KVEV_BLOCK_STORED], 1);

    /* the encoder reproduces the bytes from structs built by hand and from the decoded ones */
    kvev_event e = example_stored();
    kvev_batch mine = {1700000000.5, true, 0, &e, 1};
    assert_encodes_to(&mine, KVEV_ENC_ARRAY, EX_ARRAY);
    assert_encodes_to(&b, KVEV_ENC_ARRAY, EX_ARRAY);
    kvev_decoder_free(d);
}

static void test_worked_example_map(void **state)
{
    (void)state;
    uint8_t p[512];
    size_t n = unhex(EX_MAP, p);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_int_equal(b.n_events, 1);
    const kvev_event *e = &b.events[0];
    assert_example_event(e);
    assert_true(e->has_extra_keys);
    assert_int_equal(e->n_extra_keys, 1);
    assert_true(e->extra_keys[0].none);
    assert_true(e->has_group_idx);
    assert_int_equal(e->group_idx, 0);
    assert_string_equal(e->kv_cache_spec_kind.s, "full_attention");
    assert_false(e->has_sliding_window);

    kvev_event mine = example_stored();
    kvev_block_extra none = {.none = true};
    mine.has_extra_keys = true;
    mine.extra_keys = &none;
    mine.n_extra_keys = 1;
    mine.has_group_idx = true;
    mine.kv_cache_spec_kind = kvev_str_c("full_attention");
    kvev_batch mb = {1700000000.5, true, 0, &mine, 1};
    assert_encodes_to(&mb, KVEV_ENC_MAP_EVENTS, EX_MAP);
    assert_encodes_to(&b, KVEV_ENC_MAP_EVENTS, EX_MAP);
    kvev_decoder_free(d);
}

static void test_removed_and_cleared(void **state)
{
    (void)state;
    uint8_t p[512];
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    size_t n = unhex(EX_REMOVED, p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_int_equal(b.n_events, 1);
    assert_int_equal(b.events[0].type, KVEV_BLOCK_REMOVED);
    assert_int_equal(b.events[0].n_block_hashes, 1);
    assert_true(b.events[0].block_hashes[0] == EX_HASH);
    assert_string_equal(b.events[0].medium.s, "GPU");
    assert_false(b.events[0].has_group_idx);
    assert_encodes_to(&b, KVEV_ENC_ARRAY, EX_REMOVED);

    n = unhex(EX_CLEARED, p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_int_equal(b.n_events, 1);
    assert_int_equal(b.events[0].type, KVEV_ALL_BLOCKS_CLEARED);
    assert_encodes_to(&b, KVEV_ENC_ARRAY, EX_CLEARED);
    const kvev_stats *st = kvev_decoder_stats(d);
    assert_int_equal(st->events[KVEV_BLOCK_REMOVED], 1);
    assert_int_equal(st->events[KVEV_ALL_BLOCKS_CLEARED], 1);
    assert_string_equal(kvev_type_name(KVEV_ALL_BLOCKS_CLEARED), "AllBlocksCleared");
    kvev_decoder_free(d);
}

/* Old vLLM (2-element batch), a map-form batch, and a batch with an extra trailing element. */
static void test_batch_shapes(void **state)
{
    (void)state;
    uint8_t p[512];
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    size_t n = unhex("92 cb 41d954fc40200000 91 98 ab\"BlockStored\" 91 cf 2ceabcfae6d332ea c0 dc 0010 " TOKENS16
                     " 10 c0 a3\"GPU\" c0", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_false(b.has_dp_rank);
    assert_example_event(&b.events[0]);

    n = unhex("83 a2\"ts\" cb 41d954fc40200000 a6\"events\" 91 91 b0\"AllBlocksCleared\" b2\"data_parallel_rank\" 03", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_true(b.ts == 1700000000.5);
    assert_true(b.has_dp_rank);
    assert_int_equal(b.data_parallel_rank, 3);
    assert_int_equal(b.events[0].type, KVEV_ALL_BLOCKS_CLEARED);
    /* the same map comes out of the encoder */
    assert_encodes_to(&b, KVEV_ENC_MAP_ALL,
                      "83 a2\"ts\" cb 41d954fc40200000 a6\"events\" 91 81 a4\"type\" b0\"AllBlocksCleared\""
                      " b2\"data_parallel_rank\" 03");

    n = unhex("94 cb 41d954fc40200000 90 c0 a5\"extra\"", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, NULL), KV_OK);
    assert_int_equal(b.n_events, 0);
    assert_false(b.has_dp_rank);
    kvev_decoder_free(d);
}

/* Hashes as uint64 >= 2^63, negative int64, 32/8/3/0-byte bin, also for the parent. */
static void test_hash_encodings(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint8_t digest[32];
    for (int i = 0; i < 32; i++) digest[i] = (uint8_t)(0xa0 + i);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_double(&pk, 1.0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_str_with_body(&pk, "BlockStored", 11);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_uint64(&pk, 0xfedcba9876543210ULL);
    msgpack_pack_int64(&pk, -2);
    msgpack_pack_bin_with_body(&pk, digest, 32);
    msgpack_pack_bin_with_body(&pk, digest, 8);
    msgpack_pack_bin_with_body(&pk, digest, 3);
    msgpack_pack_bin_with_body(&pk, digest, 0);
    msgpack_pack_bin_with_body(&pk, digest + 16, 16);   /* parent as xxh3-128 bytes */
    msgpack_pack_array(&pk, 0);
    msgpack_pack_uint8(&pk, 16);
    msgpack_pack_nil(&pk);

    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    kv_err err;
    assert_int_equal(kvev_decode_batch(d, sb.data, sb.size, &b, &err), KV_OK);
    const kvev_event *e = &b.events[0];
    assert_int_equal(e->n_block_hashes, 6);
    assert_true(e->block_hashes[0] == 0xfedcba9876543210ULL);
    assert_true(e->block_hashes[1] == 0xfffffffffffffffeULL);
    assert_true(e->block_hashes[2] == 0xb8b9babbbcbdbebfULL);
    assert_true(e->block_hashes[3] == 0xa0a1a2a3a4a5a6a7ULL);
    assert_true(e->block_hashes[4] == 0xa0a1a2ULL);
    assert_true(e->block_hashes[5] == 0);
    assert_true(e->has_parent);
    assert_true(e->parent_block_hash == 0xb8b9babbbcbdbebfULL);
    assert_int_equal(e->n_token_ids, 0);
    assert_false(b.has_dp_rank);
    kvev_decoder_free(d);
    msgpack_sbuffer_destroy(&sb);
}

static void assert_same_event(const kvev_event *a, const kvev_event *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->n_block_hashes, b->n_block_hashes);
    if (a->n_block_hashes) assert_memory_equal(a->block_hashes, b->block_hashes, a->n_block_hashes * 8);
    assert_int_equal(a->medium.s == NULL, b->medium.s == NULL);
    if (a->medium.s) assert_string_equal(a->medium.s, b->medium.s);
    assert_int_equal(a->has_group_idx, b->has_group_idx);
    assert_true(a->group_idx == b->group_idx);
    if (a->type != KVEV_BLOCK_STORED) return;
    assert_int_equal(a->has_parent, b->has_parent);
    assert_true(a->parent_block_hash == b->parent_block_hash);
    assert_int_equal(a->n_token_ids, b->n_token_ids);
    if (a->n_token_ids) assert_memory_equal(a->token_ids, b->token_ids, a->n_token_ids * 4);
    assert_int_equal(a->block_size, b->block_size);
    assert_int_equal(a->has_lora_id, b->has_lora_id);
    assert_true(a->lora_id == b->lora_id);
    assert_int_equal(a->lora_name.s == NULL, b->lora_name.s == NULL);
    if (a->lora_name.s) assert_string_equal(a->lora_name.s, b->lora_name.s);
    assert_int_equal(a->has_extra_keys, b->has_extra_keys);
    assert_int_equal(a->n_extra_keys, b->n_extra_keys);
    for (size_t i = 0; i < a->n_extra_keys; i++) {
        const kvev_block_extra *x = &a->extra_keys[i], *y = &b->extra_keys[i];
        assert_int_equal(x->none, y->none);
        assert_int_equal(x->n_items, y->n_items);
        for (size_t k = 0; k < x->n_items; k++) {
            assert_int_equal(x->items[k].kind, y->items[k].kind);
            assert_int_equal(x->items[k].id.len, y->items[k].id.len);
            assert_memory_equal(x->items[k].id.s, y->items[k].id.s, x->items[k].id.len);
            assert_true(x->items[k].offset == y->items[k].offset);
        }
    }
    assert_int_equal(a->kv_cache_spec_kind.s == NULL, b->kv_cache_spec_kind.s == NULL);
    if (a->kv_cache_spec_kind.s) assert_string_equal(a->kv_cache_spec_kind.s, b->kv_cache_spec_kind.s);
    assert_int_equal(a->has_sliding_window, b->has_sliding_window);
    assert_true(a->kv_cache_spec_sliding_window == b->kv_cache_spec_sliding_window);
}

/* A batch using every field and value kind. */
static kvev_event RICH[5];
static kvev_batch rich_batch(void)
{
    static const uint64_t h1[3] = {1, 0x8000000000000000ULL, 0xffffffffffffffffULL};
    static const uint64_t h2[2] = {77, 78};
    static uint32_t tok[48];
    for (uint32_t i = 0; i < 48; i++) tok[i] = i * 40000u + (i == 47 ? 0xffffffffu - 47 * 40000u : 0);
    static kvev_extra_item it0[2], it2[1];
    it0[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("img-sha-abc"), 0};
    it0[1] = (kvev_extra_item){KVEV_EXTRA_PAIR, kvev_str_c("img-legacy"), 5};
    it2[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("salt"), 0};
    static kvev_block_extra bx[3];
    bx[0] = (kvev_block_extra){false, it0, 2};
    bx[1] = (kvev_block_extra){true, NULL, 0};
    bx[2] = (kvev_block_extra){false, it2, 1};
    memset(RICH, 0, sizeof RICH);
    RICH[0] = (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = h1, .n_block_hashes = 3, .has_parent = true,
                           .parent_block_hash = 0x1234567890abcdefULL, .token_ids = tok, .n_token_ids = 48,
                           .block_size = 16, .has_lora_id = true, .lora_id = -1, .medium = kvev_str_c("CPU"),
                           .lora_name = kvev_str_c("sql-lora"), .has_extra_keys = true, .extra_keys = bx,
                           .n_extra_keys = 3, .has_group_idx = true, .group_idx = 2,
                           .kv_cache_spec_kind = kvev_str_c("sliding_window"), .has_sliding_window = true,
                           .kv_cache_spec_sliding_window = 4096};
    /* group_idx set, extra_keys absent: the positional form needs a nil in between */
    RICH[1] = (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = h2, .n_block_hashes = 2, .token_ids = tok,
                           .n_token_ids = 32, .block_size = 16, .has_group_idx = true, .group_idx = 1};
    RICH[2] = (kvev_event){.type = KVEV_BLOCK_REMOVED, .block_hashes = h1, .n_block_hashes = 3,
                           .has_group_idx = true, .group_idx = 7};
    RICH[3] = (kvev_event){.type = KVEV_BLOCK_REMOVED, .block_hashes = h2, .n_block_hashes = 2};
    RICH[4] = (kvev_event){.type = KVEV_ALL_BLOCKS_CLEARED};
    return (kvev_batch){-3.25, true, 1, RICH, 5};
}

static void test_round_trip_all_fields(void **state)
{
    (void)state;
    kvev_batch b = rich_batch();
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    for (int enc = KVEV_ENC_ARRAY; enc <= KVEV_ENC_MAP_ALL; enc++) {
        kvev_buf buf = {0}, again = {0};
        kv_err err;
        assert_int_equal(kvev_encode(&b, (kvev_encoding)enc, &buf, &err), KV_OK);
        kvev_batch out;
        assert_int_equal(kvev_decode_batch(d, buf.data, buf.len, &out, &err), KV_OK);
        assert_true(out.ts == -3.25);
        assert_true(out.has_dp_rank);
        assert_int_equal(out.data_parallel_rank, 1);
        assert_int_equal(out.n_events, 5);
        for (size_t i = 0; i < 5; i++) assert_same_event(&b.events[i], &out.events[i]);
        assert_int_equal(kvev_encode(&out, (kvev_encoding)enc, &again, &err), KV_OK);
        assert_int_equal(again.len, buf.len);
        assert_memory_equal(again.data, buf.data, buf.len);
        /* appended: what was there stays, and the payload's bytes are the same */
        assert_int_equal(kvev_encode_append(&b, (kvev_encoding)enc, &again, &err), KV_OK);
        assert_int_equal(again.len, 2 * buf.len);
        assert_memory_equal(again.data, buf.data, buf.len);
        assert_memory_equal(again.data + buf.len, buf.data, buf.len);
        kvev_buf_free(&buf);
        kvev_buf_free(&again);
    }
    kvev_decoder_free(d);
}

/* Other extra_keys items (bytes, ints) decode as OTHER and cannot be encoded. */
static void test_extra_key_kinds(void **state)
{
    (void)state;
    uint8_t p[512];
    size_t n = unhex("92 00 91 99 ab\"BlockStored\" 90 c0 90 10 c0 c0 c0"
                     " 92 93 a1\"a\" c4 02 abcd 92 a1\"b\" c0 c0", p);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    kv_err err;
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    const kvev_event *e = &b.events[0];
    assert_int_equal(e->n_extra_keys, 2);
    assert_int_equal(e->extra_keys[0].n_items, 3);
    assert_int_equal(e->extra_keys[0].items[0].kind, KVEV_EXTRA_STR);
    assert_string_equal(e->extra_keys[0].items[0].id.s, "a");
    assert_int_equal(e->extra_keys[0].items[1].kind, KVEV_EXTRA_OTHER);
    assert_int_equal(e->extra_keys[0].items[2].kind, KVEV_EXTRA_PAIR);   /* [str, nil]: llm-d keeps the id */
    assert_string_equal(e->extra_keys[0].items[2].id.s, "b");
    assert_true(e->extra_keys[1].none);
    kvev_buf buf = {0};
    assert_int_equal(kvev_encode(&b, KVEV_ENC_ARRAY, &buf, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "extra_keys[0][1]"));
    /* a failed append leaves the bytes before it, and only those */
    uint8_t head[64];
    buf.len = 0;
    assert_int_equal(kvev_encode_append(&(kvev_batch){.n_events = 0}, KVEV_ENC_ARRAY, &buf, &err), KV_OK);
    size_t before = buf.len;
    assert_true(before > 0 && before <= sizeof head);
    memcpy(head, buf.data, before);
    assert_int_equal(kvev_encode_append(&b, KVEV_ENC_ARRAY, &buf, &err), KV_EINVAL);
    assert_int_equal(buf.len, before);
    assert_memory_equal(buf.data, head, before);
    kvev_buf_free(&buf);
    kvev_decoder_free(d);
}

/* Extra trailing fields (newer vLLM) and missing optional ones (older vLLM). */
static void test_tolerated_fields(void **state)
{
    (void)state;
    uint8_t p[512];
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_batch b;
    kv_err err;
    /* 11 fields + 2 unknown trailing ones */
    size_t n = unhex("92 00 91 9e ab\"BlockStored\" 91 05 06 90 10 c0 c0 c0 c0 01 ae\"full_attention\" c0"
                     " a3\"new\" 92 01 02", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_true(b.events[0].block_hashes[0] == 5);
    assert_true(b.events[0].parent_block_hash == 6);
    assert_int_equal(b.events[0].group_idx, 1);
    /* only the four required BlockStored fields */
    n = unhex("92 00 91 95 ab\"BlockStored\" 91 05 c0 90 40", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_int_equal(b.events[0].block_size, 64);
    assert_null(b.events[0].medium.s);
    /* a map event with unknown keys, fields out of order, missing parent */
    n = unhex("92 00 91 85 a9\"token_ids\" 91 07 a3\"zzz\" 01 aa\"block_size\" 01 a4\"type\" ab\"BlockStored\""
              " ac\"block_hashes\" 91 09", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_int_equal(b.events[0].token_ids[0], 7);
    assert_false(b.events[0].has_parent);
    /* BlockRemoved with hashes only, and with an extra field */
    n = unhex("92 00 92 92 ac\"BlockRemoved\" 91 01 95 ac\"BlockRemoved\" 91 02 c0 03 04", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_null(b.events[0].medium.s);
    assert_int_equal(b.events[1].group_idx, 3);
    /* an unknown trailing field nested far deeper than any vLLM value is skipped */
    n = unhex("92 00 91 95 ac\"BlockRemoved\" 91 01 c0 c0 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91"
              " 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 d6 ff 00000000", p);
    assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
    assert_true(b.events[0].block_hashes[0] == 1);
    assert_int_equal(kvev_decoder_stats(d)->errors[KVEV_ERR_MISSING_FIELD], 0);
    kvev_decoder_free(d);
}

typedef struct bad_case {
    const char *hex;
    kvev_reason reason;
    const char *msg_part;
} bad_case;

static const bad_case BAD[] = {
    {"", KVEV_ERR_TRUNCATED, "empty"},
    {"93 cb 41d954fc40200000 91", KVEV_ERR_TRUNCATED, "offset 10"},
    {"93 cb 41d954fc402000", KVEV_ERR_TRUNCATED, "offset 1"},
    {"92 00 91 92 ab\"BlockStor\"", KVEV_ERR_TRUNCATED, "offset 4"},
    {"92 00 90 00", KVEV_ERR_TRAILING, "offset 3"},
    {"92 00 dd ffffffff", KVEV_ERR_LENGTH, "4294967295 elements"},
    {"92 00 91 df 7fffffff", KVEV_ERR_LENGTH, "map at offset 3"},
    {"92 00 91 db ffffffff", KVEV_ERR_LENGTH, "offset 3"},
    {"92 00 dc 0100 00 00", KVEV_ERR_TRUNCATED, "256 elements"},
    {"92 00 91 c1", KVEV_ERR_TYPE, "0xc1"},
    {"a3\"abc\"", KVEV_ERR_TYPE, "batch is str"},
    {"91 00", KVEV_ERR_MISSING_FIELD, "1 elements"},
    {"81 a2\"ts\" 00", KVEV_ERR_MISSING_FIELD, "events"},
    {"92 a1\"x\" 90", KVEV_ERR_TYPE, "ts at offset 1 is str"},
    {"92 00 a1\"x\"", KVEV_ERR_TYPE, "events at offset 2 is str"},
    {"93 00 90 a1\"x\"", KVEV_ERR_TYPE, "data_parallel_rank"},
    {"92 00 92 91 b0\"AllBlocksCleared\" 91 a9\"Exploded!\"", KVEV_ERR_UNKNOWN_EVENT, "event 1: unknown event type \"Exploded!\""},
    {"92 00 91 91 05", KVEV_ERR_TYPE, "event tag"},
    {"92 00 91 90", KVEV_ERR_MISSING_FIELD, "no tag"},
    {"92 00 91 81 a1\"x\" 01", KVEV_ERR_MISSING_FIELD, "\"type\""},
    {"92 00 91 05", KVEV_ERR_TYPE, "event at offset 3 is int"},
    {"92 00 91 94 ab\"BlockStored\" 91 05 c0 90", KVEV_ERR_MISSING_FIELD, "block_size"},
    {"92 00 91 92 ab\"BlockStored\" 91 05", KVEV_ERR_MISSING_FIELD, "token_ids"},
    {"92 00 91 91 ab\"BlockStored\"", KVEV_ERR_MISSING_FIELD, "block_hashes"},
    {"92 00 91 91 ac\"BlockRemoved\"", KVEV_ERR_MISSING_FIELD, "block_hashes"},
    {"92 00 91 95 ab\"BlockStored\" 05 c0 90 10", KVEV_ERR_TYPE, "block_hashes at offset 16 is int"},
    {"92 00 91 95 ab\"BlockStored\" 91 a1\"x\" c0 90 10", KVEV_ERR_TYPE, "block_hashes[0] at offset 17 is str"},
    {"92 00 91 95 ab\"BlockStored\" 90 c3 90 10", KVEV_ERR_TYPE, "parent_block_hash"},
    {"92 00 91 95 ab\"BlockStored\" 90 c0 92 01 ff 10", KVEV_ERR_TYPE, "token_ids[1]"},
    {"92 00 91 95 ab\"BlockStored\" 90 c0 91 cf 0000000100000000 10", KVEV_ERR_TYPE, "token_ids[0]"},
    {"92 00 91 95 ab\"BlockStored\" 90 c0 90 ff", KVEV_ERR_TYPE, "block_size"},
    {"92 00 91 97 ab\"BlockStored\" 90 c0 90 10 c0 05", KVEV_ERR_TYPE, "medium at offset 21 is int"},
    {"92 00 91 98 ab\"BlockStored\" 90 c0 90 10 c0 c0 90", KVEV_ERR_TYPE, "lora_name"},
    {"92 00 91 99 ab\"BlockStored\" 90 c0 90 10 c0 c0 c0 a1\"x\"", KVEV_ERR_TYPE, "extra_keys at offset 23 is str"},
    {"92 00 91 99 ab\"BlockStored\" 90 c0 90 10 c0 c0 c0 91 05", KVEV_ERR_TYPE, "extra_keys[0]"},
    {"92 00 91 9a ab\"BlockStored\" 90 c0 90 10 c0 c0 c0 c0 ff", KVEV_ERR_TYPE, "group_idx at offset 24 is negative"},
    {"92 00 91 9b ab\"BlockStored\" 90 c0 90 10 c0 c0 c0 c0 00 01", KVEV_ERR_TYPE, "kv_cache_spec_kind"},
    {"92 00 91 9c ab\"BlockStored\" 90 c0 90 10 c0 c0 c0 c0 00 c0 a1\"x\"", KVEV_ERR_TYPE, "sliding_window"},
    {"92 00 91 93 ac\"BlockRemoved\" 90 c2", KVEV_ERR_TYPE, "medium at offset 18 is bool"},
    {"92 00 91 94 ac\"BlockRemoved\" 90 c0 ca 3f800000", KVEV_ERR_TYPE, "group_idx at offset 19 is float"},
    {"92 00 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 00", KVEV_ERR_TYPE, "event tag at offset 4 is array"},
    {"92 00 91 d4 01 02", KVEV_ERR_TYPE, "event at offset 3 is ext"},
    {"92 00 91 c7 05 01 02", KVEV_ERR_TRUNCATED, "declares 6 bytes"},
};

/* Every width msgpack gives a token id (fixint, uint8/16/32/64, positive int8/16/32),
 * each largest value, decoded the same with plenty of payload after the ids, with the
 * ids at the very end of the payload, and after 20 canonical ids (the decoder's fast
 * runs then succeed before one meets an int8 head and falls back). */
static void test_token_widths(void **state)
{
    (void)state;
    static const char *const ids = "9c 05 cc ff cd 1234 ce 89abcdef ce ffffffff d0 05 d1 0102 d2 00010000"
                                   " cf 00000000ffffffff 00 7f cc 80";
    static const uint32_t want[12] = {5, 255, 0x1234, 0x89abcdef, 0xffffffff, 5, 258, 65536, 0xffffffff, 0, 127, 128};
    char hex[3][1024], prefix[512] = "";
    snprintf(hex[0], sizeof hex[0], "92 00 91 95 ab\"BlockStored\" 91 05 c0 %s 40", ids);
    snprintf(hex[1], sizeof hex[1], "92 00 91 98 ab\"BlockStored\" 91 05 c0 %s 40 c0 a3\"GPU\" c0", ids);
    for (int i = 0; i < 20; i++) strcat(prefix, i % 3 ? "ce 00012345 " : "cd 0102 ");
    snprintf(hex[2], sizeof hex[2], "92 00 91 95 ab\"BlockStored\" 91 05 c0 dc 0020 %s%s 40", prefix, ids + 3);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    for (int k = 0; k < 3; k++) {
        uint8_t p[512];
        size_t n = unhex(hex[k], p), skip = k == 2 ? 20 : 0;
        kvev_batch b;
        kv_err err;
        assert_int_equal(kvev_decode_batch(d, p, n, &b, &err), KV_OK);
        assert_int_equal(b.events[0].n_token_ids, 12 + skip);
        for (size_t i = 0; i < skip; i++) assert_int_equal(b.events[0].token_ids[i], i % 3 ? 0x12345 : 0x102);
        assert_memory_equal(b.events[0].token_ids + skip, want, sizeof want);
        assert_int_equal(b.events[0].block_size, 64);
    }
    kvev_decoder_free(d);
}

/* The encoder against msgpack-c as a reference: token arrays of every length to 40 and
 * every width (fixint, 0xcc, 0xcd, 0xce, each boundary), in each encoding. msgpack-c packs
 * what it unpacks in the smallest form, so the payload must come back byte for byte from
 * msgpack_unpack then msgpack_pack_object, and decode to the same ids. Where the CPU has
 * AVX-512 VBMI2 this runs the vector path (eight ids at a time) and the scalar tail. */
static void test_encode_token_widths(void **state)
{
    (void)state;
    static const uint32_t edge[] = {0, 1, 127, 128, 129, 255, 256, 257, 65535, 65536, 65537, 128255, 0xffffff,
                                    0x1000000, UINT32_MAX};
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    kvev_buf buf = {0};
    uint32_t tok[40];
    for (int round = 0; round < 600; round++) {
        size_t n = (size_t)round % 41;
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            unsigned pick = (unsigned)(rng >> 59) % 5;
            tok[i] = pick == 0   ? edge[(rng >> 8) % (sizeof edge / sizeof *edge)]
                     : pick == 1 ? (uint32_t)(rng % 128)
                     : pick == 2 ? (uint32_t)(rng % 65536)
                     : pick == 3 ? (uint32_t)(rng % 151936)
                                 : (uint32_t)rng;
        }
        uint64_t hash = rng;
        kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = &hash, .n_block_hashes = 1, .token_ids = tok,
                        .n_token_ids = n, .block_size = 16, .medium = kvev_str_c("GPU")};
        kvev_batch b = {.ts = 1.5, .events = &e, .n_events = 1};
        kvev_encoding enc = (kvev_encoding)(round % 3);
        kv_err err;
        assert_int_equal(kvev_encode(&b, enc, &buf, &err), KV_OK);

        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&up, (const char *)buf.data, buf.len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, buf.len);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, up.data);
        assert_int_equal(sb.size, buf.len);
        assert_memory_equal(sb.data, buf.data, buf.len);
        msgpack_sbuffer_destroy(&sb);
        msgpack_unpacked_destroy(&up);

        kvev_batch back;
        assert_int_equal(kvev_decode_batch(d, buf.data, buf.len, &back, &err), KV_OK);
        assert_int_equal(back.events[0].n_token_ids, n);
        if (n) assert_memory_equal(back.events[0].token_ids, tok, n * sizeof *tok);
    }
    kvev_buf_free(&buf);
    kvev_decoder_free(d);
}

static void test_malformed_by_reason(void **state)
{
    (void)state;
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    uint64_t want[KVEV_ERR_COUNT] = {0};
    int bad_seen = 0;
    size_t nb = sizeof BAD / sizeof BAD[0];
    for (size_t i = 0; i < nb; i++) {
        uint8_t p[512];
        size_t n = unhex(BAD[i].hex, p);
        kvev_batch b;
        kv_err err = {0};
        int rc = kvev_decode_batch(d, p, n, &b, &err);
        if (rc == KV_OK || kvev_decoder_last_reason(d) != BAD[i].reason || !strstr(err.msg, BAD[i].msg_part))
            print_error("case %zu (%s): rc %d reason %s msg \"%s\", want %s / \"%s\"\n", i, BAD[i].hex, rc,
                     kvev_reason_name(kvev_decoder_last_reason(d)), err.msg, kvev_reason_name(BAD[i].reason),
                     BAD[i].msg_part), bad_seen++;
        assert_int_equal(rc, BAD[i].reason == KVEV_ERR_LENGTH ? KV_ERANGE : KV_EPARSE);
        assert_int_equal(err.code, rc);
        want[BAD[i].reason]++;
    }
    assert_int_equal(bad_seen, 0);
    const kvev_stats *st = kvev_decoder_stats(d);
    assert_memory_equal(st->errors, want, sizeof want);
    assert_int_equal(st->batches, 0);
    /* the payload limit */
    kvev_decoder *small = kvev_decoder_new(8, NULL);
    uint8_t p[512];
    size_t n = unhex(EX_ARRAY, p);
    kvev_batch b;
    kv_err err;
    assert_int_equal(kvev_decode_batch(small, p, n, &b, &err), KV_ERANGE);
    assert_int_equal(kvev_decoder_stats(small)->errors[KVEV_ERR_LENGTH], 1);
    kvev_decoder_free(small);
    /* reason names are stable metric labels */
    assert_string_equal(kvev_reason_name(KVEV_ERR_TRUNCATED), "truncated");
    assert_string_equal(kvev_reason_name(KVEV_ERR_UNKNOWN_EVENT), "unknown_event");
    for (int r = 0; r < KVEV_ERR_COUNT; r++) assert_string_not_equal(kvev_reason_name((kvev_reason)r), "unknown");
    kvev_decoder_free(d);
}

static void test_topic_and_seq(void **state)
{
    (void)state;
    kvev_topic t;
    const char *ok = "kv@10.0.0.7:8000@Qwen/Qwen3-0.6B";
    assert_true(kvev_topic_parse(ok, strlen(ok), &t));
    assert_int_equal(t.pod.len, 13);
    assert_memory_equal(t.pod.s, "10.0.0.7:8000", 13);
    assert_int_equal(t.model.len, strlen("Qwen/Qwen3-0.6B"));
    assert_memory_equal(t.model.s, "Qwen/Qwen3-0.6B", t.model.len);
    const char *bad[] = {"", "kv", "kv@pod", "kv@a@b@c", "xx@pod@model", "kvv@pod@m", "@pod@model"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(kvev_topic_parse(bad[i], strlen(bad[i]), &t));
        assert_int_equal(t.pod.len, strlen(bad[i]));   /* reported as such */
        assert_int_equal(t.model.len, 0);
    }
    uint8_t seq[9] = {0, 0, 0, 1, 0, 0, 0, 2, 0xff};
    uint64_t s;
    kv_err err;
    assert_int_equal(kvev_seq_parse(seq, 8, &s, NULL), KV_OK);
    assert_true(s == 0x0000000100000002ULL);
    assert_int_equal(kvev_seq_parse(seq, 9, &s, NULL), KV_OK);
    assert_true(s == 0x0000000100000002ULL);
    assert_int_equal(kvev_seq_parse(seq, 7, &s, &err), KV_EPARSE);
    assert_non_null(strstr(err.msg, "7 bytes"));
}

static void test_decode_message(void **state)
{
    (void)state;
    uint8_t p[512];
    size_t n = unhex(EX_REMOVED, p);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    const char *topic = "kv@pod-a@my-model";
    uint8_t seq[8] = {0, 0, 0, 0, 0, 0, 1, 0};
    kvev_message m;
    kv_err err;
    assert_int_equal(kvev_decode_message(d, topic, strlen(topic), seq, 8, p, n, &m, &err), KV_OK);
    assert_string_equal(m.pod.s, "pod-a");
    assert_string_equal(m.model.s, "my-model");
    assert_true(m.seq == 256);
    assert_int_equal(m.batch.n_events, 1);
    assert_int_equal(kvev_decode_message(d, "other", 5, seq, 8, p, n, &m, &err), KV_EPARSE);
    assert_int_equal(kvev_decoder_last_reason(d), KVEV_ERR_TOPIC);
    assert_non_null(strstr(err.msg, "\"other\""));
    assert_int_equal(kvev_decode_message(d, topic, strlen(topic), seq, 4, p, n, &m, &err), KV_EPARSE);
    assert_int_equal(kvev_decoder_last_reason(d), KVEV_ERR_SEQ);
    assert_int_equal(kvev_decode_message(d, topic, strlen(topic), seq, 8, p, n - 1, &m, &err), KV_EPARSE);
    assert_int_equal(kvev_decoder_last_reason(d), KVEV_ERR_TRUNCATED);
    const kvev_stats *st = kvev_decoder_stats(d);
    assert_int_equal(st->errors[KVEV_ERR_TOPIC], 1);
    assert_int_equal(st->errors[KVEV_ERR_SEQ], 1);
    assert_int_equal(st->errors[KVEV_ERR_TRUNCATED], 1);
    assert_int_equal(st->batches, 1);
    kvev_decoder_free(d);
}

/* A large batch (several arena chunks), then small ones reusing the decoder. */
static void test_large_batch_and_reuse(void **state)
{
    (void)state;
    enum { NE = 200, NT = 1024 };
    static kvev_event ev[NE];
    static uint32_t tok[NT];
    static uint64_t h[NT / 16];
    for (size_t i = 0; i < NT; i++) tok[i] = (uint32_t)(i * 997 + 100000);
    for (size_t i = 0; i < NT / 16; i++) h[i] = i * 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < NE; i++)
        ev[i] = (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = NT / 16,
                             .has_parent = i > 0, .parent_block_hash = i, .token_ids = tok, .n_token_ids = NT,
                             .block_size = 16, .medium = kvev_str_c("GPU")};
    kvev_batch b = {2.0, true, 0, ev, NE};
    kvev_buf buf = {0};
    assert_int_equal(kvev_encode(&b, KVEV_ENC_ARRAY, &buf, NULL), KV_OK);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    for (int round = 0; round < 3; round++) {
        kvev_batch out;
        assert_int_equal(kvev_decode_batch(d, buf.data, buf.len, &out, NULL), KV_OK);
        assert_int_equal(out.n_events, NE);
        for (size_t i = 0; i < NE; i++) assert_same_event(&ev[i], &out.events[i]);
        uint8_t p[512];
        size_t n = unhex(EX_ARRAY, p);
        assert_int_equal(kvev_decode_batch(d, p, n, &out, NULL), KV_OK);
        assert_example_event(&out.events[0]);
    }
    kvev_buf_free(&buf);
    kvev_decoder_free(d);
}

static uint64_t rng = 0x243f6a8885a308d3ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Every truncation fails; random mutations never crash, and every call is accounted for
 * exactly once (a batch or one error reason). Memory safety is ASan's to prove. */
static void test_truncation_and_mutation(void **state)
{
    (void)state;
    kvev_batch rich = rich_batch();
    kvev_buf bufs[5] = {{0}};
    uint8_t p[512];
    for (int enc = 0; enc < 3; enc++) assert_int_equal(kvev_encode(&rich, (kvev_encoding)enc, &bufs[enc], NULL), KV_OK);
    size_t n = unhex(EX_MAP, p);
    bufs[3].data = malloc(n);
    memcpy(bufs[3].data, p, n);
    bufs[3].len = n;
    n = unhex(EX_ARRAY, p);
    bufs[4].data = malloc(n);
    memcpy(bufs[4].data, p, n);
    bufs[4].len = n;

    kvev_decoder *d = kvev_decoder_new(0, NULL);
    uint64_t calls = 0, accepted = 0;
    for (int k = 0; k < 5; k++) {
        size_t len = bufs[k].len;
        for (size_t cut = 0; cut < len; cut++) {
            /* copy to an exact-size heap block so ASan catches any overread */
            uint8_t *t = malloc(cut ? cut : 1);
            memcpy(t, bufs[k].data, cut);
            kvev_batch out;
            assert_int_not_equal(kvev_decode_batch(d, t, cut, &out, NULL), KV_OK);
            calls++;
            free(t);
        }
        for (int iter = 0; iter < 4000; iter++) {
            uint8_t *t = malloc(len);
            memcpy(t, bufs[k].data, len);
            int flips = 1 + (int)(next_rand() % 3);
            for (int f = 0; f < flips; f++) {
                size_t at = next_rand() % len;
                uint64_t r = next_rand();
                t[at] = (r & 1) ? (uint8_t)(r >> 8) : (uint8_t)(t[at] ^ (1u << ((r >> 8) % 8)));
            }
            size_t tl = (next_rand() % 4 == 0) ? next_rand() % len + 1 : len;
            kvev_batch out;
            kv_err err;
            if (kvev_decode_batch(d, t, tl, &out, &err) == KV_OK) {
                /* msgpack-c, as an independent reader, agrees it is exactly one value */
                msgpack_zone z;
                msgpack_zone_init(&z, 4096);
                msgpack_object o;
                size_t off = 0;
                assert_int_equal(msgpack_unpack((const char *)t, tl, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
                assert_int_equal(off, tl);
                msgpack_zone_destroy(&z);
                accepted++;
                /* whatever decoded must be internally consistent and re-encodable */
                kvev_buf re = {0};
                int rc = kvev_encode(&out, KVEV_ENC_MAP_EVENTS, &re, NULL);
                assert_true(rc == KV_OK || rc == KV_EINVAL);
                kvev_buf_free(&re);
            } else {
                assert_true(err.msg[0] != 0);
            }
            calls++;
            free(t);
        }
    }
    const kvev_stats *st = kvev_decoder_stats(d);
    uint64_t accounted = st->batches;
    for (int r = 0; r < KVEV_ERR_COUNT; r++) accounted += st->errors[r];
    assert_true(accounted == calls);
    assert_true(st->errors[KVEV_ERR_TRUNCATED] > 0);
    assert_true(accepted > 100);   /* mutants that stay valid exercise the success path too */
    kvev_decoder_free(d);
    for (int k = 0; k < 5; k++) kvev_buf_free(&bufs[k]);
}

/* --- token ids: vector path against scalar path ---------------------------------------- */

typedef struct tok_payload {
    uint8_t b[4096];
    size_t len;
    uint32_t want[3][256];   /* the ids as generated, per event */
    size_t n_want[3];
    size_t n_events;
    bool valid;              /* no error injected: must decode to want */
} tok_payload;

static void put(tok_payload *tp, const void *s, size_t n)
{
    memcpy(tp->b + tp->len, s, n);
    tp->len += n;
}

static void put_be(tok_payload *tp, uint8_t head, uint64_t v, size_t n)
{
    tp->b[tp->len++] = head;
    for (size_t i = n; i-- > 0;) tp->b[tp->len++] = (uint8_t)(v >> (8 * i));
}

/* One id in one of the four accepted encodings (minimal or not), chosen by enc 0..3. */
static uint32_t put_id(tok_payload *tp, int enc)
{
    uint64_t r = next_rand();
    switch (enc) {
    case 0: tp->b[tp->len++] = (uint8_t)(r & 0x7f); return (uint32_t)(r & 0x7f);
    case 1: put_be(tp, 0xcc, r & 0xff, 1); return (uint32_t)(r & 0xff);
    case 2: put_be(tp, 0xcd, r & 0xffff, 2); return (uint32_t)(r & 0xffff);
    default: {
        /* mostly vocabulary-sized, sometimes any 32-bit value */
        uint32_t v = (r >> 32) % 4 ? (uint32_t)(r % 151000) : (uint32_t)(r >> 8);
        put_be(tp, 0xce, v, 4);
        return v;
    }
    }
}

/* A value in a token array that the fast paths do not accept. Some the careful path still
 * reads as an id (uint64 and signed encodings of values in range); the rest are errors.
 * Returns true, with *v, for the former. */
static bool put_odd(tok_payload *tp, uint32_t *v)
{
    uint64_t r = next_rand();
    *v = (uint32_t)(r >> 40);
    switch (r % 10) {
    case 0: put_be(tp, 0xcf, *v, 8); return true;
    case 1: put_be(tp, 0xd2, *v >> 1, 4); *v >>= 1; return true;
    case 2: put_be(tp, 0xd1, *v & 0x7fff, 2); *v &= 0x7fff; return true;
    case 3: put_be(tp, 0xd0, *v & 0x7f, 1); *v &= 0x7f; return true;
    case 4: put_be(tp, 0xcf, (uint64_t)1 << 32 | *v, 8); return false;   /* above uint32 */
    case 5: put_be(tp, 0xd1, 0x8000 | *v, 2); return false;              /* negative */
    case 6: tp->b[tp->len++] = (uint8_t)(0xe0 | (r >> 8 & 0x1f)); return false;   /* negative fixint */
    case 7: tp->b[tp->len++] = 0xc0; return false;                        /* nil */
    case 8: tp->b[tp->len++] = 0xc1; return false;                        /* never used */
    default: put(tp, "\xa1x", 2); return false;                           /* str */
    }
}

/* A batch [0, [event...]] of 1..3 BlockStored events ["BlockStored", [5], nil, ids, 64,
 * ...], the last one's ids ending one byte before the payload does. Arrays of 0..200 ids
 * in random mixes of the four encodings, or in runs of one; sometimes an odd value, or
 * a count larger than the ids written. */
static void tok_generate(tok_payload *tp)
{
    memset(tp, 0, offsetof(tok_payload, b) + 16);
    tp->len = 0;
    tp->valid = true;
    tp->n_events = 1 + next_rand() % 3;
    put(tp, "\x92\x00", 2);
    tp->b[tp->len++] = (uint8_t)(0x90 | tp->n_events);
    for (size_t e = 0; e < tp->n_events; e++) {
        bool last = e + 1 == tp->n_events;
        bool trailing = !last || next_rand() % 2;
        tp->b[tp->len++] = trailing ? 0x98 : 0x95;
        put(tp, "\xab" "BlockStored" "\x91\x05\xc0", 15);
        size_t n = next_rand() % 4 == 0 ? next_rand() % 16 : next_rand() % 201, declared = n;
        if (next_rand() % 16 == 0) declared += 1 + next_rand() % 40, tp->valid = false;
        if (declared < 16) tp->b[tp->len++] = (uint8_t)(0x90 | declared);
        else put_be(tp, 0xdc, declared, 2);
        int style = (int)(next_rand() % 4);   /* 0: mixed, 1: runs, 2: vocabulary ids, 3: one encoding */
        int enc = (int)(next_rand() % 4);
        size_t odd_at = next_rand() % 8 == 0 && n ? next_rand() % n : SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
            if (i == odd_at) {
                if (!put_odd(tp, &tp->want[e][i])) tp->valid = false;
                continue;
            }
            if (style == 0 || (style == 1 && next_rand() % 24 == 0)) enc = (int)(next_rand() % 4);
            if (style == 2) {
                uint32_t v = (uint32_t)(next_rand() % 151000);
                enc = v < 0x80 ? 0 : v <= 0xff ? 1 : v <= 0xffff ? 2 : 3;
                tp->want[e][i] = v;
                if (enc == 0) tp->b[tp->len++] = (uint8_t)v;
                else put_be(tp, (uint8_t)(0xcb + enc), v, enc == 3 ? 4 : (size_t)enc);
                continue;
            }
            tp->want[e][i] = put_id(tp, enc);
        }
        tp->n_want[e] = n;
        tp->b[tp->len++] = 0x40;
        if (trailing) put(tp, "\xc0\xa3GPU\xc0", 6);
    }
}

/* Decodes b[0..len) (an exact-size heap copy, for ASan) with both decoders; they must
 * agree on the result code, message, reason and every decoded id. Returns the rc. */
static int tok_both(kvev_decoder *dv, kvev_decoder *ds, const uint8_t *b, size_t len, kvev_batch *out)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, b, len);
    kv_err ev = {0}, es = {0};
    kvev_batch bs;
    int rv = kvev_decode_batch(dv, copy, len, out, &ev);
    int rs = kvev_decode_batch(ds, copy, len, &bs, &es);
    free(copy);
    assert_int_equal(rv, rs);
    if (rv != KV_OK) {
        assert_string_equal(ev.msg, es.msg);
        assert_int_equal(kvev_decoder_last_reason(dv), kvev_decoder_last_reason(ds));
        return rv;
    }
    assert_int_equal(out->n_events, bs.n_events);
    for (size_t e = 0; e < out->n_events; e++) {
        assert_int_equal(out->events[e].n_token_ids, bs.events[e].n_token_ids);
        assert_memory_equal(out->events[e].token_ids, bs.events[e].token_ids, bs.events[e].n_token_ids * 4);
        assert_int_equal(out->events[e].block_size, bs.events[e].block_size);
    }
    return rv;
}

/* A vector decoder (where the CPU has VBMI) and a scalar one. A CPU with VBMI must get the
 * vector path, or the tests that use these compare scalar with itself and pass silently. */
static bool tok_decoders(kvev_decoder **dv, kvev_decoder **ds, const char *test)
{
    *dv = kvev_decoder_new(0, NULL);
    *ds = kvev_decoder_new(0, NULL);
    bool vector = kvev_decoder_set_tokens_path(*dv, KVEV_TOKENS_VECTOR) == KVEV_TOKENS_VECTOR;
    assert_int_equal(kvev_decoder_set_tokens_path(*ds, KVEV_TOKENS_SCALAR), KVEV_TOKENS_SCALAR);
#if defined(__x86_64__) && defined(__GNUC__)
    bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("bmi2");
    assert_int_equal(vector, cpu);
#endif
    if (!vector) print_message("%s: this CPU has no AVX-512 VBMI; only the scalar path runs\n", test);
    return vector;
}

static void test_token_paths_agree(void **state)
{
    (void)state;
    kvev_decoder *dv, *ds;
    bool vector = tok_decoders(&dv, &ds, "test_token_paths_agree");
    static tok_payload tp;
    size_t ok = 0, bad = 0, cuts = 0;
    for (int iter = 0; iter < 6000; iter++) {
        tok_generate(&tp);
        kvev_batch out;
        int rc = tok_both(dv, ds, tp.b, tp.len, &out);
        if (tp.valid) {
            /* and both read what was written */
            assert_int_equal(rc, KV_OK);
            assert_int_equal(out.n_events, tp.n_events);
            for (size_t e = 0; e < tp.n_events; e++) {
                assert_int_equal(out.events[e].n_token_ids, tp.n_want[e]);
                assert_memory_equal(out.events[e].token_ids, tp.want[e], tp.n_want[e] * 4);
            }
        }
        rc == KV_OK ? ok++ : bad++;
        /* truncated: at every byte for some payloads, at a few random bytes for the rest */
        if (iter % 100 == 0) {
            for (size_t cut = 0; cut < tp.len; cut++, cuts++)
                assert_int_not_equal(tok_both(dv, ds, tp.b, cut, &out), KV_OK);
        } else {
            for (int k = 0; k < 3; k++, cuts++)
                assert_int_not_equal(tok_both(dv, ds, tp.b, next_rand() % tp.len, &out), KV_OK);
        }
    }
    assert_true(ok > 1000 && bad > 300 && cuts > 20000);
    assert_memory_equal(kvev_decoder_stats(dv), kvev_decoder_stats(ds), sizeof(kvev_stats));
    assert_int_equal(kvev_decoder_vector_ids(ds), 0);
    if (vector) assert_true(kvev_decoder_vector_ids(dv) > 100000);
    kvev_decoder_free(dv);
    kvev_decoder_free(ds);
}

/* One id of encoding enc whose head is byte `at` of its array (the vector path's windows
 * start at the array's first id, so at % 64 is its place in a window), after fixints or
 * after 3-byte ids padded with fixints (style), followed by `after` mixed ids (0: it ends
 * the array). A second event of 150 fixints keeps the payload long enough for the vector
 * path to reach the first array's end. */
static void tok_window_case(tok_payload *tp, size_t at, int enc, int style, size_t after)
{
    tp->len = 0;
    tp->valid = true;
    tp->n_events = 2;
    put(tp, "\x92\x00\x92", 3);
    size_t wide = style ? at / 3 : 0, n0 = wide + (at - 3 * wide) + 1 + after;
    size_t ns[2] = {n0, 150};
    for (size_t e = 0; e < 2; e++) {
        put(tp, "\x98\xab" "BlockStored" "\x91\x05\xc0", 16);
        put_be(tp, 0xdc, ns[e], 2);
        size_t start = tp->len, i = 0;
        if (e == 0) {
            for (size_t k = 0; k < wide; k++) tp->want[0][i++] = put_id(tp, 2);
            while (tp->len - start < at) tp->want[0][i++] = put_id(tp, 0);
            assert_int_equal(tp->len - start, at);
            tp->want[0][i++] = put_id(tp, enc);
            while (i < n0) tp->want[0][i++] = put_id(tp, (int)(next_rand() % 4));
        } else {
            while (i < ns[e]) tp->want[1][i++] = put_id(tp, 0);
        }
        tp->n_want[e] = ns[e];
        put(tp, "\x40\xc0\xa3GPU\xc0", 7);
    }
}

/* Both paths decode every tok_window_case to the ids written: each head position 0..191
 * (three windows), each width, at the array's end or not. */
static void test_token_window_boundaries(void **state)
{
    (void)state;
    kvev_decoder *dv, *ds;
    bool vector = tok_decoders(&dv, &ds, "test_token_window_boundaries");
    static tok_payload tp;
    static const size_t AFTER[] = {0, 1, 2, 40};
    for (size_t at = 0; at < 192; at++)
        for (int enc = 0; enc < 4; enc++)
            for (int style = 0; style < 2; style++)
                for (size_t a = 0; a < sizeof AFTER / sizeof *AFTER; a++) {
                    tok_window_case(&tp, at, enc, style, AFTER[a]);
                    kvev_batch out;
                    assert_int_equal(tok_both(dv, ds, tp.b, tp.len, &out), KV_OK);
                    for (size_t e = 0; e < 2; e++) {
                        assert_int_equal(out.events[e].n_token_ids, tp.n_want[e]);
                        assert_memory_equal(out.events[e].token_ids, tp.want[e], tp.n_want[e] * 4);
                    }
                }
    assert_int_equal(kvev_decoder_stats(dv)->batches, 192 * 4 * 2 * 4);
    if (vector) assert_true(kvev_decoder_vector_ids(dv) > 192 * 4 * 2 * 4 * 100);
    kvev_decoder_free(dv);
    kvev_decoder_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worked_example_array),
        cmocka_unit_test(test_worked_example_map),
        cmocka_unit_test(test_removed_and_cleared),
        cmocka_unit_test(test_batch_shapes),
        cmocka_unit_test(test_hash_encodings),
        cmocka_unit_test(test_round_trip_all_fields),
        cmocka_unit_test(test_extra_key_kinds),
        cmocka_unit_test(test_tolerated_fields),
        cmocka_unit_test(test_token_widths),
        cmocka_unit_test(test_encode_token_widths),
        cmocka_unit_test(test_malformed_by_reason),
        cmocka_unit_test(test_topic_and_seq),
        cmocka_unit_test(test_decode_message),
        cmocka_unit_test(test_large_batch_and_reuse),
        cmocka_unit_test(test_truncation_and_mutation),
        cmocka_unit_test(test_token_paths_agree),
        cmocka_unit_test(test_token_window_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
