/* profiles: model and hardware profiles as data. A model is one YAML file of its
 * config.json facts (models/<name>.yaml), a GPU one YAML file of its datasheet figures
 * (hardware/<name>.yaml); the step model and the KV sizing read them. Adding a model is
 * writing a file, not recompiling.
 *
 * Lookup: each directory in the order given (the caller's order: the scenario's own
 * models/, --models DIR, then the tree's models/), first DIR/NAME.yaml, then (for a name
 * that is not a plain file name, such as "Qwen/Qwen3-32B") any DIR/ *.yaml whose
 * hf_name is NAME. A NAME ending in .yaml is a file path, used as given (a scenario
 * resolves it against its own folder first).
 *
 * Every error names "file:line:col: field 'f': ...". A profile is one allocation, its
 * strings included: free() it. Pure functions of their files; any thread. */
#ifndef KVROUTE_SIM_PROFILES_H
#define KVROUTE_SIM_PROFILES_H

#include <stddef.h>

#include "kverr.h"
#include "stepmodel.h"

sm_model *sm_model_load(const char *path, kv_err *err);
sm_hardware *sm_hardware_load(const char *path, kv_err *err);

/* NULL dirs are skipped. KV_ENOTFOUND names the name and every directory searched. */
sm_model *sm_model_find(const char *const *dirs, size_t n_dirs, const char *name, kv_err *err);
sm_hardware *sm_hardware_find(const char *const *dirs, size_t n_dirs, const char *name, kv_err *err);

#endif
