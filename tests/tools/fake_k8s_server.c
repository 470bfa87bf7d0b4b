/* fake_k8s_server: tests/support/fake_k8s as a program, so a shell test can point ./epp
 * (--kubeconfig) at an API server that serves one InferencePool and its pods.
 *
 *   fake_k8s_server TOKEN NAMESPACE POOL MATCH_LABELS PORTS POD_LABELS N_PODS
 *
 * POOL "-" serves no pool; MATCH_LABELS and POD_LABELS are "k=v,..."; PORTS "8000,8001".
 * Pods vllm-0.. are Ready at 127.0.0.2, 127.0.0.3, ... Prints "port N" once serving, on
 * stdout, and runs until SIGTERM or SIGINT. Exit 2 on bad arguments. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fake_k8s.h"

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: fake_k8s_server TOKEN NAMESPACE POOL MATCH_LABELS PORTS POD_LABELS N_PODS\n");
        return 2;
    }
    int ports[8], n_ports = 0, n_pods = atoi(argv[7]);
    for (char *p = argv[5]; *p && n_ports < 8; p++) {
        ports[n_ports++] = (int)strtol(p, &p, 10);
        if (*p != ',')
            break;
    }
    if (n_ports == 0 || n_pods < 0 || n_pods > 200) {
        fprintf(stderr, "fake_k8s_server: bad PORTS '%s' or N_PODS '%s'\n", argv[5], argv[7]);
        return 2;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before the server's threads start */
    fake_k8s *k = fake_k8s_start(argv[1]);
    if (!k) {
        fprintf(stderr, "fake_k8s_server: cannot start\n");
        return 1;
    }
    if (strcmp(argv[3], "-"))
        fake_k8s_set_pool(k, argv[2], argv[3], argv[4], ports, n_ports);
    for (int i = 0; i < n_pods; i++) {
        char name[32], ip[32];
        snprintf(name, sizeof name, "vllm-%d", i);
        snprintf(ip, sizeof ip, "127.0.0.%d", 2 + i);
        fake_k8s_put_pod(k, name, ip, true, false, argv[6]);
    }
    printf("port %d\n", fake_k8s_port(k));
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    fake_k8s_stop(k);
    return 0;
}
