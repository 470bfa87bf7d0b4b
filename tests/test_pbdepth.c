/* test_pbdepth: the protobuf nesting scan (live/pbdepth.c) against protobuf-c's own
 * packing and unpacking: good messages pass, nesting exactly at the limit passes (and
 * unpacks), one level more is refused, and malformed wire data is refused with its byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext_proc.pb-c.h"
#include "pbdepth.h"
#include "support/regress.h"

#define PREQ (&envoy__service__ext_proc__v3__processing_request__descriptor)
#define LISTV (&envoy__service__ext_proc__v3__list_value__descriptor)

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* A ListValue whose values[0] is a Value whose list_value is a ListValue ..., `levels`
 * sub-messages in all below the outer ListValue: the wire shape of the attack, built
 * inside out at the end of a buffer. Returns the start; *len its size. */
static uint8_t *list_chain(unsigned levels, size_t *len)
{
    size_t cap = 16 + (size_t)levels * 8;
    uint8_t *buf = malloc(cap), *end = buf + cap, *p = end;
    for (unsigned i = 0; i < levels; i++) {
        uint8_t hdr[11];
        size_t body = (size_t)(end - p);
        /* counted from the outside: even levels are Values in ListValue.values (field
         * 1), odd ones ListValues in Value.list_value (field 6) */
        hdr[0] = (levels - 1 - i) % 2 == 0 ? (1 << 3 | 2) : (6 << 3 | 2);
        size_t h = 1 + put_varint(hdr + 1, body);
        p -= h;
        memcpy(p, hdr, h);
    }
    *len = (size_t)(end - p);
    memmove(buf, p, *len);
    return buf;
}

static int check(const ProtobufCMessageDescriptor *d, const void *b, size_t n, unsigned max, kv_err *e)
{
    memset(e, 0, sizeof *e);
    return pbdepth_check(d, b, n, max, e);
}

static void expect(const ProtobufCMessageDescriptor *d, const char *b, size_t n, unsigned max, int code,
                   const char *needle)
{
    kv_err e;
    assert_int_equal(check(d, b, n, max, &e), code);
    if (needle && !strstr(e.msg, needle))
        fail_msg("error '%s' lacks '%s'", e.msg, needle);
}

/* A request as Envoy sends it (headers, metadata with a nested struct) and an empty one. */
static void test_good_messages(void **st)
{
    Envoy__Service__ExtProc__V3__HeaderValue hv = ENVOY__SERVICE__EXT_PROC__V3__HEADER_VALUE__INIT, *hvs[] = {&hv};
    hv.key = ":path", hv.raw_value = (ProtobufCBinaryData){.data = (uint8_t *)"/v1", .len = 3};
    Envoy__Service__ExtProc__V3__HeaderMap hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MAP__INIT;
    hm.n_headers = 1, hm.headers = hvs;
    Envoy__Service__ExtProc__V3__HttpHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
    hh.headers = &hm;
    Envoy__Service__ExtProc__V3__Value v = ENVOY__SERVICE__EXT_PROC__V3__VALUE__INIT;
    v.kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE, v.string_value = "10.0.0.1:8000";
    Envoy__Service__ExtProc__V3__Struct__FieldsEntry fe = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__FIELDS_ENTRY__INIT,
                                                     *fes[] = {&fe};
    fe.key = "x-gateway-destination-endpoint-subset", fe.value = &v;
    Envoy__Service__ExtProc__V3__Struct s = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__INIT;
    s.n_fields = 1, s.fields = fes;
    Envoy__Service__ExtProc__V3__Metadata__FilterMetadataEntry me =
        ENVOY__SERVICE__EXT_PROC__V3__METADATA__FILTER_METADATA_ENTRY__INIT, *mes[] = {&me};
    me.key = "envoy.lb.subset_hint", me.value = &s;
    Envoy__Service__ExtProc__V3__Metadata md = ENVOY__SERVICE__EXT_PROC__V3__METADATA__INIT;
    md.n_filter_metadata = 1, md.filter_metadata = mes;
    Envoy__Service__ExtProc__V3__ProcessingRequest rq = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
    rq.request_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_HEADERS;
    rq.request_headers = &hh, rq.metadata_context = &md, rq.observability_mode = true;
    uint8_t buf[512];
    size_t n = protobuf_c_message_pack(&rq.base, buf);
    kv_err e;
    /* deepest: metadata_context > entry > Struct > entry > Value, 5 levels */
    assert_int_equal(check(PREQ, buf, n, 5, &e), KV_OK);
    assert_int_equal(check(PREQ, buf, n, 4, &e), KV_EINVAL);
    assert_int_equal(check(PREQ, buf, n, 100, &e), KV_OK);
    assert_int_equal(check(PREQ, buf, 0, 0, &e), KV_OK);
}

/* Exactly at the limit: accepted, and protobuf-c unpacks it; one more: refused, naming it. */
static void test_limit(void **st)
{
    for (unsigned max = 0; max <= PBDEPTH_MAX; max += max < 4 ? 1 : 31) {
        size_t n;
        uint8_t *at = list_chain(max, &n);
        kv_err e;
        assert_int_equal(check(LISTV, at, n, max, &e), KV_OK);
        ProtobufCMessage *m = protobuf_c_message_unpack(LISTV, NULL, n, at);
        assert_non_null(m);
        protobuf_c_message_free_unpacked(m, NULL);
        free(at);
        uint8_t *over = list_chain(max + 1, &n);
        assert_int_equal(check(LISTV, over, n, max, &e), KV_EINVAL);
        char want[48];
        snprintf(want, sizeof want, "nested deeper than %u", max);
        assert_non_null(strstr(e.msg, want));
        free(over);
    }
    kv_err e;
    assert_int_equal(check(LISTV, "", 0, PBDEPTH_MAX + 1, &e), KV_EINVAL);
}

/* Bytes and unknown fields are stepped over, not entered, whatever they hold. */
static void test_opaque_fields(void **st)
{
    size_t n;
    uint8_t *deep = list_chain(300, &n);
    uint8_t *b = malloc(n + 32);
    for (int unknown = 0; unknown < 2; unknown++) {
        size_t k = 0;
        if (unknown) { /* field 111, wire type 2 */
            b[k++] = 0xfa, b[k++] = 0x06;
        } else { /* request_body: HttpBody (depth 1) whose body (bytes) holds the chain */
            uint8_t len[10];
            b[k++] = 4 << 3 | 2;
            k += put_varint(b + k, 1 + put_varint(len, n) + n);
            b[k++] = 1 << 3 | 2;
        }
        k += put_varint(b + k, n);
        memcpy(b + k, deep, n);
        k += n;
        kv_err e;
        assert_int_equal(check(PREQ, b, k, 1, &e), KV_OK);
        assert_int_equal(check(PREQ, b, k, 0, &e), unknown ? KV_OK : KV_EINVAL);
        ProtobufCMessage *m = protobuf_c_message_unpack(PREQ, NULL, k, b);
        assert_non_null(m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    free(b);
    free(deep);
}

static void test_malformed(void **st)
{
    expect(PREQ, "\x80", 1, 100, KV_EPARSE, "truncated field key at byte 0");
    expect(PREQ, "\x50\x80\x80", 3, 100, KV_EPARSE, "field 10: truncated varint at byte 0");
    expect(PREQ, "\x50\x01\x42\x80", 4, 100, KV_EPARSE, "field 8: truncated length at byte 2");
    expect(PREQ, "\x42\x05\x00", 3, 100, KV_EPARSE, "field 8: 5 bytes past the end of its message at byte 0");
    /* eleven continuation bytes: longer than any varint */
    expect(PREQ, "\x50\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, 100, KV_EPARSE, "truncated varint");
    /* a field inside metadata_context that runs past metadata_context's own end */
    expect(PREQ, "\x42\x02\x0a\x05\x00\x00\x00\x00\x00", 9, 100, KV_EPARSE, "past the end of its message at byte 2");
    expect(PREQ, "\x49\x00\x00\x00", 4, 100, KV_EPARSE, "field 9: 8 bytes past the end");
    expect(PREQ, "\x4d\x00\x00\x00\x00", 5, 100, KV_OK, NULL); /* fixed32: 4 bytes */
    expect(PREQ, "\x00\x00", 2, 100, KV_EPARSE, "field number 0 at byte 0");
    static const char *const wt[] = {"\x4b", "\x4c", "\x4e", "\x4f"}; /* groups, 6, 7 */
    for (size_t i = 0; i < 4; i++)
        expect(PREQ, wt[i], 1, 100, KV_EPARSE, "field 9: wire type");
}

/* Issue 10 finding 2: the 74 KB request nesting ListValues 10,000 deep in its
 * metadata_context (each inside a Value), which overflowed protobuf-c's stack. */
static void test_regress(void **st)
{
    size_t n;
    char *b = regress_read("extproc_stream", "nested-listvalue.bin", &n);
    assert_non_null(b);
    assert_true(n > 70000);
    expect(PREQ, b, n, 100, KV_EINVAL, "messages nested deeper than 100 (field ");
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_messages), cmocka_unit_test(test_limit), cmocka_unit_test(test_opaque_fields),
        cmocka_unit_test(test_malformed),     cmocka_unit_test(test_regress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
