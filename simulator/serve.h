/* serve: the `./sim serve` command (emulated vLLM pods in real time; see serve.c). */
#ifndef KVROUTE_SIM_SERVE_H
#define KVROUTE_SIM_SERVE_H

#include "scenario.h"

/* argv[0] is "serve". Returns the process exit status: 0 stopped cleanly, 1 a runtime
 * failure (message on stderr), 2 bad usage or a bad scenario. */
int serve_main(int argc, char **argv, const scn_dirs *dirs);

#endif
