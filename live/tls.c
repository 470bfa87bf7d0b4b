/* tls: self-signed and on-disk serving certificates with OpenSSL (see tls.h). */
#include "tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    return e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown OpenSSL error" : "unknown error";
}

static char *bio_text(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = 0;
    }
    return s;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return 0;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

int tls_self_signed(const char *common_name, tls_pem *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = KV_EIO;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    if (!key || !x || !bc || !bk) {
        kv_err_set(err, KV_EIO, "tls: cannot generate a key: %s", ssl_reason());
        goto out;
    }
    unsigned char serial[16];
    FILE *ur = fopen("/dev/urandom", "rb");
    size_t got = ur ? fread(serial, 1, sizeof serial, ur) : 0;
    if (ur)
        fclose(ur);
    serial[0] &= 0x7f; /* a positive serial */
    BIGNUM *bn = BN_bin2bn(serial, (int)(got ? got : 1), NULL);
    X509_set_version(x, 2);
    if (bn) {
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
    }
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Inference Ext", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)common_name, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[300];
    snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1", common_name);
    if (!add_ext(x, NID_subject_alt_name, san) || !add_ext(x, NID_basic_constraints, "critical,CA:TRUE") ||
        !add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign") ||
        !add_ext(x, NID_ext_key_usage, "serverAuth") || !X509_sign(x, key, EVP_sha256())) {
        kv_err_set(err, KV_EIO, "tls: cannot sign the self-signed certificate: %s", ssl_reason());
        goto out;
    }
    if (!PEM_write_bio_X509(bc, x) || !PEM_write_bio_PrivateKey(bk, key, NULL, NULL, 0, NULL, NULL)) {
        kv_err_set(err, KV_EIO, "tls: cannot encode the certificate: %s", ssl_reason());
        goto out;
    }
    out->cert = bio_text(bc);
    out->key = bio_text(bk);
    if (!out->cert || !out->key) {
        tls_pem_free(out);
        kv_err_set(err, KV_ENOMEM, "tls: out of memory");
        goto out;
    }
    rc = KV_OK;
out:
    EVP_PKEY_free(key);
    X509_free(x);
    BIO_free(bc);
    BIO_free(bk);
    return rc;
}

static char *read_file(const char *path, kv_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kv_err_set(err, KV_EIO, "tls: cannot open %s: %m", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *b = realloc(buf, cap);
            if (!b || cap > (16u << 20)) {
                free(b ? b : buf);
                fclose(f);
                kv_err_set(err, KV_ERANGE, "tls: %s is too large for a PEM file", path);
                return NULL;
            }
            buf = b;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

int tls_load_dir(const char *dir, tls_pem *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    char cpath[4096], kpath[4096];
    snprintf(cpath, sizeof cpath, "%s/tls.crt", dir);
    snprintf(kpath, sizeof kpath, "%s/tls.key", dir);
    if (!(out->cert = read_file(cpath, err)) || !(out->key = read_file(kpath, err))) {
        tls_pem_free(out);
        return err ? err->code : KV_EIO;
    }
    BIO *bc = BIO_new_mem_buf(out->cert, -1), *bk = BIO_new_mem_buf(out->key, -1);
    X509 *x = bc ? PEM_read_bio_X509(bc, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = bk ? PEM_read_bio_PrivateKey(bk, NULL, NULL, NULL) : NULL;
    int rc = KV_OK;
    if (!x)
        rc = kv_err_set(err, KV_EINVAL, "tls: %s: no PEM certificate: %s", cpath, ssl_reason());
    else if (!k)
        rc = kv_err_set(err, KV_EINVAL, "tls: %s: no PEM private key: %s", kpath, ssl_reason());
    else if (X509_check_private_key(x, k) != 1)
        rc = kv_err_set(err, KV_EINVAL, "tls: %s does not match the certificate in %s", kpath, cpath);
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(bc);
    BIO_free(bk);
    if (rc != KV_OK)
        tls_pem_free(out);
    return rc;
}

void tls_pem_free(tls_pem *p)
{
    free(p->cert);
    free(p->key);
    p->cert = p->key = NULL;
}
