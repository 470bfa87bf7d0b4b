/* extproc_route: plays Envoy for one request against ./epp's ext-proc port and prints
 * the endpoint the picker chose (x-gateway-destination-endpoint), so a shell test can
 * route requests to real (or emulated) vLLM pods.
 *
 *   extproc_route HOST:PORT PATH BODY_FILE     (plaintext gRPC)
 *
 * Exit 0 with the endpoint on stdout; 1 when no destination came back; 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>

#include "../support/extproc_client.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: extproc_route HOST:PORT PATH BODY_FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[3], "rb");
    if (!f) {
        fprintf(stderr, "extproc_route: cannot read %s\n", argv[3]);
        return 2;
    }
    char *body = NULL;
    size_t len = 0, cap = 0, k;
    char buf[65536];
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
        char *g = len + k > cap ? realloc(body, cap = (len + k) * 2) : body;
        if (!g) return 1;
        body = g;
        for (size_t i = 0; i < k; i++) body[len + i] = buf[i];
        len += k;
    }
    fclose(f);
    grpc_init();
    int rc = 1;
    xpc_client *c = xpc_connect(argv[1], NULL, NULL);
    xpc_stream *s = c ? xpc_open(c, 5000) : NULL;
    const char *hdrs[] = {":path", argv[2], ":method", "POST", "content-type", "application/json", NULL};
    if (s && xpc_send_request_headers(s, hdrs, false, NULL, 0, 0) == 0 && xpc_send_body(s, false, body, len, true) == 0) {
        xpc_resp *r = xpc_recv(s, 5000);
        const char *d = r ? xpc_dest_metadata(r) : NULL;
        if (d) {
            printf("%s\n", d);
            rc = 0;
        } else {
            fprintf(stderr, "extproc_route: no destination in the reply\n");
        }
        if (r) xpc_resp_free(r);
    }
    if (s) xpc_close(s);
    if (c) xpc_disconnect(c);
    free(body);
    grpc_shutdown();
    return rc;
}
