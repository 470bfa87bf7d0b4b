/* tls: the serving certificate of the ext-proc port (docs/upstream/epp.md §4: TLS by default).
 *
 * Without --cert-path GIE generates a self-signed certificate at start-up; Envoy and
 * Istio connect with verification off, so only the handshake matters. We do the same
 * with OpenSSL: an EC P-256 key and an X.509 v3 certificate valid for ten years with
 * SANs localhost and 127.0.0.1. With --cert-path <dir>, tls.crt and tls.key are read
 * from the directory (GIE's file names) and checked to belong together, so a bad or
 * missing file fails start-up with a precise message instead of at the first handshake.
 * Pure functions; any thread. */
#ifndef KVROUTE_TLS_H
#define KVROUTE_TLS_H

#include "kverr.h"

typedef struct tls_pem {
    char *cert;   /* PEM certificate chain */
    char *key;    /* PEM private key */
} tls_pem;

int tls_self_signed(const char *common_name, tls_pem *out, kv_err *err);
int tls_load_dir(const char *dir, tls_pem *out, kv_err *err);
void tls_pem_free(tls_pem *p);

#endif
