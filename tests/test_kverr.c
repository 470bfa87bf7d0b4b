/* test_kverr: kv_err_quote, the escaping every error that echoes user text goes through:
 * control bytes and DEL become escapes, printable text (UTF-8 included) is kept, and text
 * that does not fit ends in "..." without splitting an escape or overrunning cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kverr.h"

static void test_quote_escapes(void **state)
{
    (void)state;
    char out[64];
    const char in[] = "a\tb\r\nc\x1b[2J\x7f\x01 \xc3\xa9 \\";
    assert_string_equal(kv_err_quote(out, sizeof out, in, sizeof in - 1), "a\\tb\\r\\nc\\x1b[2J\\x7f\\x01 \xc3\xa9 \\");
    /* a NUL inside the text is text too */
    assert_string_equal(kv_err_quote(out, sizeof out, "x\0y", 3), "x\\x00y");
    assert_string_equal(kv_err_quote(out, sizeof out, "", 0), "");
}

static void test_quote_truncates(void **state)
{
    (void)state;
    char out[64];
    /* every cap from 1 up: the result fits, and is a prefix of the full escape, plus "..." when cut */
    const char in[] = "0123\x1b" "456789";
    const char full[] = "0123\\x1b456789";
    for (size_t cap = 1; cap <= sizeof full; cap++) {
        memset(out, 'Z', sizeof out);
        kv_err_quote(out, cap, in, sizeof in - 1);
        size_t n = strlen(out);
        assert_true(n < cap);
        assert_int_equal(out[cap], 'Z');
        if (n >= 3 && !strcmp(out + n - 3, "...")) {
            assert_memory_equal(out, full, n - 3);
            assert_true(n - 3 != 4 + 1 && n - 3 != 4 + 2 && n - 3 != 4 + 3);   /* "\x1b" is never split */
        } else {
            assert_string_equal(out, cap > 3 ? full : "");
        }
    }
    assert_string_equal(kv_err_quote(out, sizeof full, in, sizeof in - 1), full);
    assert_string_equal(kv_err_quote(out, 8, in, sizeof in - 1), "0123...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_escapes),
        cmocka_unit_test(test_quote_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
