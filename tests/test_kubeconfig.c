/* test_kubeconfig: the kubeconfig reader -- the current context's server, CA (file
 * relative to the kubeconfig, or base64 data), insecure-skip-tls-verify, token and
 * tokenFile; other entries ignored even when unsupported; errors naming file:line:col
 * and the field for missing or unsupported settings; which file is used (flag,
 * $KUBECONFIG, in cluster, ~/.kube/config); and discovery through it against the fake
 * API server (right token: the pool's pods; wrong token: a start-up failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "endpoints.h"
#include "k8s.h"
#include "kubeconfig.h"
#include "log.h"
#include "support/fake_k8s.h"

static char dir[64];

static void write_file(const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/kvroute-kubeconfig-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* "-----BEGIN CERTIFICATE-----\nAB\n-----END CERTIFICATE-----\n" */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFCCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"

static void test_current_context(void **state)
{
    char path[128];
    write_file("good.yaml",
               "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
               "clusters:\n"
               "- name: prod\n  cluster: {server: 'https://prod:6443', proxy-url: 'http://proxy'}\n"
               "- name: kind\n  cluster:\n    server: https://127.0.0.1:6443/\n"
               "    certificate-authority-data: " CA_B64 "\n"
               "contexts:\n"
               "- name: prod\n  context: {cluster: prod, user: sso}\n"
               "- name: dev\n  context: {cluster: kind, user: me, namespace: llm-d}\n"
               "users:\n"
               "- name: sso\n  user: {exec: {command: gcloud}}\n"
               "- name: me\n  user: {token: abc.def}\n",
               path, sizeof path);
    kubeconfig kc;
    kv_err err = {0};
    if (kubeconfig_load(&kc, path, &err) != KV_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(kc.context, "dev");
    assert_string_equal(kc.server, "https://127.0.0.1:6443");
    assert_string_equal(kc.ca_pem, "-----BEGIN CERTIFICATE-----\nAB\n-----END CERTIFICATE-----\n");
    assert_int_equal(kc.ca_pem_len, strlen(kc.ca_pem));
    assert_string_equal(kc.ca_path, "");
    assert_false(kc.insecure);
    assert_string_equal(kc.token, "abc.def");
    assert_string_equal(kc.token_path, "");
    kubeconfig_free(&kc);

    /* files relative to the kubeconfig's folder; absolute ones as they are */
    write_file("files.yaml",
               "current-context: c\nclusters:\n- name: k\n  cluster:\n    server: http://127.0.0.1:1\n"
               "    certificate-authority: pki/ca.crt\n    insecure-skip-tls-verify: true\n"
               "contexts:\n- name: c\n  context: {cluster: k, user: u}\n"
               "users:\n- name: u\n  user: {tokenFile: /var/run/token}\n",
               path, sizeof path);
    if (kubeconfig_load(&kc, path, &err) != KV_OK)
        fail_msg("%s", err.msg);
    char want[128];
    snprintf(want, sizeof want, "%s/pki/ca.crt", dir);
    assert_string_equal(kc.ca_path, want);
    assert_null(kc.ca_pem);
    assert_true(kc.insecure);
    assert_null(kc.token);
    assert_string_equal(kc.token_path, "/var/run/token");
    kubeconfig_free(&kc);

    /* a context without a user is anonymous */
    write_file("anon.yaml",
               "current-context: c\nclusters:\n- name: k\n  cluster: {server: 'http://h:1'}\n"
               "contexts:\n- name: c\n  context: {cluster: k}\n",
               path, sizeof path);
    if (kubeconfig_load(&kc, path, &err) != KV_OK)
        fail_msg("%s", err.msg);
    assert_null(kc.token);
    assert_string_equal(kc.token_path, "");
    kubeconfig_free(&kc);
}

static void test_errors_name_the_field(void **state)
{
    static const char *const head = "clusters:\n- name: k\n  cluster: {server: 'https://h:1'}\n"
                                    "contexts:\n- name: c\n  context: {cluster: k, user: u}\n";
    static const struct {
        const char *text, *want;   /* want: after "<path>:" */
    } cases[] = {
        {"clusters: []\n", "1:1: field 'current-context': not set"},
        {"current-context: x\ncontexts: []\n", "1:18: field 'current-context': no entry named 'x' in contexts"},
        {"current-context: c\ncontexts:\n- name: c\n  context: {user: u}\n",
         "4:12: field 'contexts[0].context.cluster': missing"},
        {"current-context: c\ncontexts:\n- name: c\n  context: {cluster: gone}\n",
         "4:22: field 'contexts[0].context.cluster': no entry named 'gone' in clusters"},
        {"current-context: c\nclusters:\n- name: k\n  cluster: {certificate-authority: ca}\n"
         "contexts:\n- name: c\n  context: {cluster: k}\n",
         "4:12: field 'clusters[0].cluster.server': missing"},
        {"current-context: c\nclusters:\n- name: k\n  cluster: {server: 'ftp://h'}\n"
         "contexts:\n- name: c\n  context: {cluster: k}\n",
         "4:21: field 'clusters[0].cluster.server': expected an https:// (or http://) URL, got 'ftp://h'"},
        {"current-context: c\nclusters:\n- name: k\n  cluster: {server: 'https://h', certificate-authority-data: "
         "'not base64!'}\n"
         "contexts:\n- name: c\n  context: {cluster: k}\n",
         "4:62: field 'clusters[0].cluster.certificate-authority-data': not valid base64"},
        {"current-context: c\nclusters:\n- name: k\n  cluster: {server: 'https://h', tls-server-name: x}\n"
         "contexts:\n- name: c\n  context: {cluster: k}\n",
         "4:51: field 'clusters[0].cluster.tls-server-name': tls-server-name is not supported"},
        {"current-context: c\nclusters:\n- name: k\n  cluster: {server: 'https://h', insecure-skip-tls-verify: "
         "maybe}\n"
         "contexts:\n- name: c\n  context: {cluster: k}\n",
         "4:60: field 'clusters[0].cluster.insecure-skip-tls-verify': expected"},
        {"current-context: c\nusers:\n- name: v\n- name: u\n  user:\n    client-certificate-data: AAAA\n"
         "    client-key-data: AAAA\n",
         "6:30: field 'users[1].user.client-certificate-data': client certificates are not supported (give the user "
         "a bearer token: token or tokenFile)"},
        {"current-context: c\nusers:\n- name: u\n  user: {exec: {command: aws}}\n",
         "4:16: field 'users[0].user.exec': exec credential plugins are not supported"},
        {"current-context: c\nusers:\n- name: u\n  user: {auth-provider: {name: oidc}}\n",
         "4:25: field 'users[0].user.auth-provider': auth providers are not supported"},
        {"current-context: c\nusers:\n- name: u\n  user: {username: a, password: b}\n",
         "4:20: field 'users[0].user.username': basic authentication is not supported"},
        {"current-context: c\nusers:\n- name: x\n", "9:31: field 'contexts[0].context.user': no entry named 'u' in users"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024], path[128], name[32];
        /* the user cases share the cluster and context lines after the users */
        bool users = strstr(cases[i].text, "users:") != NULL;
        snprintf(text, sizeof text, "%s%s", cases[i].text, users ? head : "");
        snprintf(name, sizeof name, "bad%zu.yaml", i);
        write_file(name, text, path, sizeof path);
        kubeconfig kc;
        kv_err err = {0};
        assert_int_equal(kubeconfig_load(&kc, path, &err), KV_EINVAL);
        char want[512];
        snprintf(want, sizeof want, "%s:%s", path, cases[i].want);
        if (strncmp(err.msg, want, strlen(want)))
            fail_msg("case %zu:\n got  %s\n want %s", i, err.msg, want);
    }
    kubeconfig kc;
    kv_err err = {0};
    assert_int_equal(kubeconfig_load(&kc, "/nonexistent/kubeconfig", &err), KV_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/kubeconfig"));
}

static const char *fake_env[8][2];

static char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < 8 && fake_env[i][0]; i++)
        if (!strcmp(fake_env[i][0], name))
            return (char *)fake_env[i][1];
    return NULL;
}

static void test_locate(void **state)
{
    char out[256];
    kv_err err = {0};
    memset(fake_env, 0, sizeof fake_env);
    fake_env[0][0] = "KUBECONFIG", fake_env[0][1] = "/env/config";
    fake_env[1][0] = "KUBERNETES_SERVICE_HOST", fake_env[1][1] = "10.96.0.1";
    fake_env[2][0] = "HOME", fake_env[2][1] = dir;
    assert_int_equal(kubeconfig_locate("/flag/config", fake_getenv, out, sizeof out, &err), KV_OK);
    assert_string_equal(out, "/flag/config");
    assert_int_equal(kubeconfig_locate(NULL, fake_getenv, out, sizeof out, &err), KV_OK);
    assert_string_equal(out, "/env/config");
    fake_env[0][1] = "/a:/b";
    assert_int_equal(kubeconfig_locate(NULL, fake_getenv, out, sizeof out, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "--kubeconfig"));
    fake_env[0][1] = "";   /* in cluster: the service account */
    assert_int_equal(kubeconfig_locate(NULL, fake_getenv, out, sizeof out, &err), KV_OK);
    assert_string_equal(out, "");
    fake_env[1][1] = "";   /* outside: ~/.kube/config only if it exists */
    assert_int_equal(kubeconfig_locate(NULL, fake_getenv, out, sizeof out, &err), KV_OK);
    assert_string_equal(out, "");
    char kube[128], path[128];
    snprintf(kube, sizeof kube, "%s/.kube", dir);
    assert_int_equal(mkdir(kube, 0700), 0);
    write_file(".kube/config", "current-context: c\n", path, sizeof path);
    assert_int_equal(kubeconfig_locate(NULL, fake_getenv, out, sizeof out, &err), KV_OK);
    assert_string_equal(out, path);
}

static void quiet(void *ctx, const char *line) { (void)ctx; (void)line; }

/* What ./epp does with --kubeconfig: the fake API server reached with the file's token. */
static void test_discovery_through_kubeconfig(void **state)
{
    log_setup(0, quiet, NULL);
    fake_k8s *api = fake_k8s_start("s3cret");
    assert_non_null(api);
    int ports[] = {8000};
    fake_k8s_set_pool(api, "llm-d", "pool", "app=vllm", ports, 1);
    fake_k8s_put_pod(api, "vllm-0", "10.0.0.9", true, false, "app=vllm");
    char text[512], path[128], tok[128];
    write_file("token", "s3cret\n", tok, sizeof tok);
    for (int wrong = 0; wrong < 2; wrong++) {
        snprintf(text, sizeof text,
                 "current-context: fake\nclusters:\n- name: f\n  cluster: {server: 'http://127.0.0.1:%d'}\n"
                 "contexts:\n- name: fake\n  context: {cluster: f, user: u}\n"
                 "users:\n- name: u\n  user: {%s}\n",
                 fake_k8s_port(api), wrong ? "token: nope" : "tokenFile: token");
        write_file("fake.yaml", text, path, sizeof path);
        kubeconfig kc;
        kv_err err = {0};
        if (kubeconfig_load(&kc, path, &err) != KV_OK)
            fail_msg("%s", err.msg);
        epset *eps = epset_new(0, NULL, NULL, NULL);
        k8s_config cfg = {.endpoints = eps, .base_url = kc.server, .token = kc.token,
                          .token_path = kc.token_path[0] ? kc.token_path : NULL, .ns = "llm-d",
                          .pool_name = "pool", .retry_ms = 20};
        k8s_watcher *w = k8s_start(&cfg, &err);
        if (wrong) {
            assert_null(w);
            assert_non_null(strstr(err.msg, "401"));
        } else {
            if (!w)
                fail_msg("%s", err.msg);
            sched_endpoint *const *e;
            assert_int_equal(epset_acquire(eps, &e), 1);
            assert_string_equal(e[0]->name, "10.0.0.9:8000");
            assert_string_equal(e[0]->pod, "vllm-0-rank-0");
            epset_release(eps);
            k8s_stop(w);
        }
        epset_free(eps);
        kubeconfig_free(&kc);
    }
    fake_k8s_stop(api);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_current_context),
    cmocka_unit_test(test_errors_name_the_field),
    cmocka_unit_test(test_locate),
    cmocka_unit_test(test_discovery_through_kubeconfig),
};

int main(void) { return cmocka_run_group_tests(tests, setup, teardown); }
