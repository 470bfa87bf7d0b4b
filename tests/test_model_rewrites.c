/* test_model_rewrites: the InferenceModelRewrite table against GIE's semantics -- exact
 * matches, the catch-all rule, the oldest object winning a conflict (ties by name, then
 * rule order), weighted targets checked exactly with a counting random source and
 * statistically with a seeded one, put/remove/sync -- plus --model-rewrites manifests
 * (good files, and bad ones whose errors name file, line and field), API-server JSON and
 * creationTimestamp golden vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_rewrites.h"

/* 0, 1, 2, ...: x % total walks every weight slot once per total picks. */
static uint64_t counting(void *ctx) { return (*(uint64_t *)ctx)++; }

/* A seeded generator independent of the table's own (xorshift64*). */
static uint64_t seeded(void *ctx)
{
    uint64_t *s = ctx;
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* The pick for model; "" when no rule matches. The caller frees. */
static char *pick(model_rewrites *t, const char *model)
{
    char *to = NULL;
    assert_int_equal(model_rewrites_pick(t, model, &to, NULL), KV_OK);
    return to ? to : strdup("");
}

static void assert_pick(model_rewrites *t, const char *model, const char *want)
{
    char *got = pick(t, model);
    assert_string_equal(got, want);
    free(got);
}

/* One object with one rule: match (NULL: catch-all) -> target. */
static void put1(model_rewrites *t, const char *name, int64_t created, const char *match, const char *target)
{
    const char *models[] = {match};
    model_rewrite_target tg = {target, 0};
    model_rewrite_rule r = {models, match ? 1 : 0, &tg, 1};
    model_rewrite rw = {name, created, &r, 1};
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
}

static void test_exact_and_catch_all(void **state)
{
    model_rewrites *t = model_rewrites_new(NULL, NULL, NULL);
    assert_non_null(t);
    assert_pick(t, "small", "");
    put1(t, "alias", 100, "small", "small-v1");
    assert_pick(t, "small", "small-v1");
    assert_pick(t, "other", "");
    put1(t, "fallback", 200, NULL, "base");
    assert_pick(t, "small", "small-v1"); /* an exact match beats the catch-all */
    assert_pick(t, "other", "base");
    assert_pick(t, NULL, "base");
    /* a rule naming several models matches any of them */
    const char *models[] = {"a", "b"};
    model_rewrite_target tg = {"ab", 0};
    model_rewrite_rule r = {models, 2, &tg, 1};
    model_rewrite rw = {"multi", 300, &r, 1};
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
    assert_pick(t, "a", "ab");
    assert_pick(t, "b", "ab");
    assert_int_equal(model_rewrites_count(t), 3);
    model_rewrites_remove(t, "fallback");
    model_rewrites_remove(t, "absent");
    assert_pick(t, "other", "");
    assert_int_equal(model_rewrites_count(t), 2);
    model_rewrites_free(t);
}

static void test_conflicts(void **state)
{
    model_rewrites *t = model_rewrites_new(NULL, NULL, NULL);
    /* the oldest object wins, whatever the insertion order */
    put1(t, "young", 200, "x", "from-young");
    put1(t, "old", 100, "x", "from-old");
    assert_pick(t, "x", "from-old");
    /* an update that makes it younger hands x over */
    put1(t, "old", 300, "x", "from-old");
    assert_pick(t, "x", "from-young");
    /* equal timestamps: the smaller name */
    put1(t, "b-tie", 50, "y", "b");
    put1(t, "a-tie", 50, "y", "a");
    assert_pick(t, "y", "a");
    /* an exact match from a young object beats an old catch-all; among catch-alls the oldest */
    put1(t, "any-new", 20, NULL, "any-new");
    put1(t, "any-old", 10, NULL, "any-old");
    assert_pick(t, "x", "from-young");
    assert_pick(t, "z", "any-old");
    /* within one object the first matching rule wins */
    const char *m[] = {"w"};
    model_rewrite_target t1 = {"first", 0}, t2 = {"second", 0};
    model_rewrite_rule rules[] = {{m, 1, &t1, 1}, {m, 1, &t2, 1}};
    model_rewrite two = {"two-rules", 1, rules, 2};
    assert_int_equal(model_rewrites_put(t, &two, NULL), KV_OK);
    assert_pick(t, "w", "first");
    /* a re-list replaces everything */
    model_rewrite only = {"only", 5, &rules[1], 1};
    assert_int_equal(model_rewrites_sync(t, &only, 1, NULL), KV_OK);
    assert_int_equal(model_rewrites_count(t), 1);
    assert_pick(t, "w", "second");
    assert_pick(t, "x", "");
    assert_int_equal(model_rewrites_sync(t, NULL, 0, NULL), KV_OK);
    assert_pick(t, "w", "");
    model_rewrites_free(t);
}

static size_t count_picks(model_rewrites *t, const char *model, const char *target, size_t n)
{
    size_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        char *got = pick(t, model);
        hits += !strcmp(got, target);
        free(got);
    }
    return hits;
}

static void test_weights(void **state)
{
    uint64_t ctr = 0;
    model_rewrites *t = model_rewrites_new(counting, &ctr, NULL);
    const char *m[] = {"lora"};
    model_rewrite_target canary[] = {{"lora-v1", 90}, {"lora-v2", 10}};
    model_rewrite_rule r = {m, 1, canary, 2};
    model_rewrite rw = {"canary", 1, &r, 1};
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
    /* draws 0..89 land on v1, 90..99 on v2: exactly 90/10 per 100 picks */
    assert_int_equal(count_picks(t, "lora", "lora-v1", 90), 90);
    assert_int_equal(count_picks(t, "lora", "lora-v2", 10), 10);
    assert_int_equal(count_picks(t, "lora", "lora-v1", 1000), 900);
    /* no weights: uniform, round-robin under the counting source */
    model_rewrite_target even[] = {{"e0", 0}, {"e1", 0}, {"e2", 0}};
    r.targets = even, r.n_targets = 3;
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
    ctr = 0;
    assert_pick(t, "lora", "e0");
    assert_pick(t, "lora", "e1");
    assert_pick(t, "lora", "e2");
    assert_pick(t, "lora", "e0");
    /* some weighted (only API objects can be so): the unweighted are never chosen */
    model_rewrite_target mixed[] = {{"w0", 0}, {"w1", 3}, {"w2", 0}};
    r.targets = mixed;
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
    assert_int_equal(count_picks(t, "lora", "w1", 50), 50);
    model_rewrites_free(t);

    /* a seeded source: 70/20/10 over 100000 picks within 5 standard deviations */
    uint64_t seed = 42;
    t = model_rewrites_new(seeded, &seed, NULL);
    model_rewrite_target split[] = {{"a", 7}, {"b", 2}, {"c", 1}};
    r.targets = split;
    assert_int_equal(model_rewrites_put(t, &rw, NULL), KV_OK);
    size_t n = 100000, got[3] = {0};
    for (size_t i = 0; i < n; i++) {
        char *to = pick(t, "lora");
        got[to[0] - 'a']++;
        free(to);
    }
    double p[3] = {0.7, 0.2, 0.1};
    for (int i = 0; i < 3; i++)
        assert_true(fabs((double)got[i] - n * p[i]) < 5 * sqrt(n * p[i] * (1 - p[i])));
    model_rewrites_free(t);
}

static void test_parse_time(void **state)
{
    int64_t s = 1;
    assert_int_equal(model_rewrites_parse_time("1970-01-01T00:00:00Z", &s), KV_OK);
    assert_int_equal(s, 0);
    assert_int_equal(model_rewrites_parse_time("2025-06-01T12:00:00Z", &s), KV_OK);
    assert_int_equal(s, 1748779200);
    assert_int_equal(model_rewrites_parse_time("2000-02-29T23:59:59.123456Z", &s), KV_OK);
    assert_int_equal(s, 951868799);
    assert_int_equal(model_rewrites_parse_time("2025-06-01T14:00:00+02:00", &s), KV_OK);
    assert_int_equal(s, 1748779200);
    assert_int_equal(model_rewrites_parse_time("1969-12-31T00:00:00Z", &s), KV_OK);
    assert_int_equal(s, -86400);
    const char *bad[] = {"", "2025-06-01", "2025-06-01T12:00:00", "2025-13-01T12:00:00Z", "2025-06-01 12:00:00Z",
                         "2025-06-01T12:00:00Zjunk", "2025-06-01T12:00:00+0200"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(model_rewrites_parse_time(bad[i], &s), KV_EINVAL);
}

static void write_file(char *path, const char *text)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_manifests(void **state)
{
    uint64_t ctr = 0;
    kv_err err = {0};
    model_rewrites *t = model_rewrites_new(counting, &ctr, NULL);
    /* GIE's three documented examples; the catch-all is a List item. Without
     * creationTimestamp the file order decides: "first" (document 1) beats "second". */
    char path[] = "/tmp/test_model_rewrites_XXXXXX";
    write_file(path,
               "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModelRewrite\n"
               "metadata: {name: first}\nspec:\n  poolRef: {group: inference.networking.k8s.io, name: pool}\n"
               "  rules:\n  - matches:\n    - model: {type: Exact, value: small-segment-lora}\n"
               "    targets:\n    - modelRewrite: small-segment-lora-v1\n      weight: 90\n"
               "    - modelRewrite: small-segment-lora-v2\n      weight: 10\n"
               "---\nkind: InferenceModelRewrite\nmetadata: {name: second}\nspec:\n  poolRef: {name: pool}\n"
               "  rules:\n  - matches: [{model: {value: small-segment-lora}}]\n    targets: [{modelRewrite: other}]\n"
               "---\napiVersion: v1\nkind: List\nitems:\n- kind: InferenceModelRewrite\n"
               "  metadata: {name: fallback, creationTimestamp: \"2025-06-01T12:00:00Z\"}\n"
               "  spec:\n    poolRef: {name: pool}\n    rules:\n    - matches: []\n"
               "      targets: [{modelRewrite: Qwen/Qwen3-32B}]\n");
    assert_int_equal(model_rewrites_load(t, path, &err), KV_OK);
    unlink(path);
    assert_int_equal(model_rewrites_count(t), 3);
    assert_int_equal(count_picks(t, "small-segment-lora", "small-segment-lora-v1", 90), 90);
    assert_int_equal(count_picks(t, "small-segment-lora", "small-segment-lora-v2", 10), 10);
    assert_pick(t, "anything", "Qwen/Qwen3-32B");

    /* bad files: the message names file:line and the field */
    static const struct {
        const char *text, *line, *field;
    } bad[] = {
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n  - matches: [{model: {value: m}}]\n",
         ":5:", "'InferenceModelRewrite.spec.rules[0].targets': required"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n  - targets: []\n", ":5:",
         "needs at least one target"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n  - targets:\n"
         "    - {modelRewrite: x, weight: 5}\n    - {modelRewrite: y}\n",
         ":6:", "weight is set on 1 of 2 targets"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n"
         "  - matches: [{model: {type: Prefix, value: m}}]\n    targets: [{modelRewrite: x}]\n",
         ":5:", "'InferenceModelRewrite.spec.rules[0].matches[0].model.type': 'Prefix' is not supported"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n"
         "  - matches: [{model: {type: [Exact], value: m}}]\n    targets: [{modelRewrite: x}]\n",
         ":5:", "'InferenceModelRewrite.spec.rules[0].matches[0].model.type'"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n"
         "  - matches: [{model: {type: Exact}}]\n    targets: [{modelRewrite: x}]\n",
         ":5:", "'InferenceModelRewrite.spec.rules[0].matches[0].model.value': required"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules:\n"
         "  - targets: [{modelRewrite: x, weight: 0}]\n",
         ":5:", "spec.rules[0].targets[0].weight"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a, creationTimestamp: yesterday}\nspec: {rules: []}\n", ":2:",
         "'InferenceModelRewrite.metadata.creationTimestamp': 'yesterday' is not an RFC 3339 time"},
        {"kind: InferenceObjective\nmetadata: {name: a}\n", ":1:", "expected InferenceModelRewrite"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\n", ":1:", "'InferenceModelRewrite.spec': required"},
        {"kind: InferenceModelRewrite\nmetadata: {name: a}\nspec:\n  rules: {a: 1}\n", ":4:",
         "'InferenceModelRewrite.spec.rules': expected a list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char p[] = "/tmp/test_model_rewrites_XXXXXX";
        write_file(p, bad[i].text);
        assert_int_equal(model_rewrites_load(t, p, &err), KV_EINVAL);
        char want[128];
        snprintf(want, sizeof want, "%s%s", p, bad[i].line);
        if (!strstr(err.msg, want) || !strstr(err.msg, bad[i].field))
            fail_msg("case %zu: '%s' lacks '%s' or '%s'", i, err.msg, want, bad[i].field);
        unlink(p);
    }
    assert_int_equal(model_rewrites_load(t, "/nonexistent/rw.yaml", &err), KV_EIO);
    assert_non_null(strstr(err.msg, "--model-rewrites /nonexistent/rw.yaml"));
    /* failed loads left the table as it was */
    assert_int_equal(model_rewrites_count(t), 3);
    model_rewrites_free(t);
}

static void test_from_json(void **state)
{
    json_error_t je;
    json_t *obj = json_loads(
        "{\"metadata\":{\"name\":\"rw\",\"creationTimestamp\":\"2025-06-01T12:00:00Z\"},\"spec\":{"
        "\"poolRef\":{\"name\":\"pool\"},\"rules\":["
        "{\"matches\":[{\"model\":{\"type\":\"Prefix\",\"value\":\"p\"}}],\"targets\":[{\"modelRewrite\":\"no\"}]},"
        "{\"matches\":[{\"model\":{\"value\":\"m\"}}],\"targets\":[]},"
        "{\"matches\":[{\"model\":{\"type\":\"Exact\",\"value\":\"m\"}}],"
        "\"targets\":[{\"modelRewrite\":\"m-v1\",\"weight\":1},{\"modelRewrite\":\"m-v2\",\"weight\":3}]},"
        "{\"targets\":[{\"modelRewrite\":\"base\"}]}]}}",
        0, &je);
    assert_non_null(obj);
    model_rewrite *rw = model_rewrites_from_json(obj);
    json_decref(obj);
    assert_non_null(rw);
    assert_string_equal(rw->name, "rw");
    assert_int_equal(rw->created, 1748779200);
    /* the Prefix-only rule and the target-less one are dropped, not made catch-alls */
    assert_int_equal(rw->n_rules, 2);
    assert_int_equal(rw->rules[0].n_models, 1);
    assert_string_equal(rw->rules[0].models[0], "m");
    assert_int_equal(rw->rules[0].n_targets, 2);
    assert_string_equal(rw->rules[0].targets[1].model, "m-v2");
    assert_int_equal(rw->rules[0].targets[1].weight, 3);
    assert_int_equal(rw->rules[1].n_models, 0);
    uint64_t ctr = 0;
    model_rewrites *t = model_rewrites_new(counting, &ctr, NULL);
    assert_int_equal(model_rewrites_put(t, rw, NULL), KV_OK);
    free(rw);
    assert_pick(t, "m", "m-v1");
    assert_pick(t, "m", "m-v2");
    assert_pick(t, "p", "base");
    model_rewrites_free(t);
    obj = json_loads("{\"metadata\":{},\"spec\":{}}", 0, &je);
    assert_null(model_rewrites_from_json(obj));
    json_decref(obj);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_and_catch_all), cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_weights),             cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_manifests),           cmocka_unit_test(test_from_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
