/* config: EndpointPickerConfig loading, defaulting and validation (see config.h).
 * The rules and their order follow GIE's config/loader (decode strictly, apply defaults,
 * then validate), so a file GIE rejects is rejected here with the position of the node
 * at fault, and a file GIE accepts builds the same profiles. */
#include "config.h"
#include "grow.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_PROFILE "default"
#define SINGLE_HANDLER "single-profile-handler"
#define MAX_SCORE_PICKER "max-score-picker"

typedef struct cfg_build {
    epc_config *cfg;
    const sched_plugin_type *const *registry;
    size_t cap_plugins;
    kv_err *err;
} cfg_build;

static int cfg_nomem(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "config: out of memory"); }

static int cfg_add_plugin(cfg_build *b, const char *name, const char *type, const sched_plugin_type *impl,
                          const yt_node *params, const yt_node *node)
{
    epc_config *c = b->cfg;
    if (!grow_array((void **)&c->plugins, &b->cap_plugins, c->n_plugins + 1, sizeof *c->plugins))
        return cfg_nomem(b->err);
    c->plugins[c->n_plugins++] = (epc_plugin){.name = name, .type = type, .impl = impl, .params = params,
                                              .node = node};
    return KV_OK;
}

int epc_plugin_index(const epc_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_plugins; i++)
        if (strcmp(cfg->plugins[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Strict decoding: every key of a map must be one the loader read. */
typedef struct cfg_unknown {
    const yt_doc *doc;
    const char *where, *expected;
    kv_err *err;
    int rc;
} cfg_unknown;

static void cfg_unknown_key(void *ctx, const char *key, const yt_node *keynode)
{
    cfg_unknown *u = ctx;
    if (u->rc)
        return;
    if (u->where[0])
        u->rc = yt_error(u->doc, keynode, u->err, KV_EINVAL, "field '%s': unknown field '%s' (expected %s)",
                         u->where, key, u->expected);
    else
        u->rc = yt_error(u->doc, keynode, u->err, KV_EINVAL, "unknown field '%s' (expected %s)", key,
                         u->expected);
}

static int cfg_strict(const yt_doc *d, const yt_node *map, const char *where, const char *expected, kv_err *err)
{
    cfg_unknown u = {.doc = d, .where = where, .expected = expected, .err = err};
    yt_each_unused(map, cfg_unknown_key, &u);
    return u.rc;
}

static int cfg_expect(const yt_doc *d, const yt_node *n, yt_kind kind, const char *what, kv_err *err)
{
    static const char *const names[] = {[YT_SCALAR] = "a scalar", [YT_MAP] = "a mapping", [YT_SEQ] = "a list"};
    if (n->kind == kind)
        return KV_OK;
    return yt_error(d, n, err, KV_EINVAL, "field '%s': expected %s, got %s", what, names[kind], names[n->kind]);
}

static int cfg_header(const yt_doc *d, const yt_node *root, epc_config *c, kv_err *err)
{
    const yt_node *api = yt_get(root, "apiVersion"), *kind = yt_get(root, "kind");
    c->api_version = "";
    if (!api && !kind)
        return KV_OK;
    if (!api)
        return yt_error(d, root, err, KV_EINVAL, "missing field 'apiVersion' (kind is set)");
    if (!kind)
        return yt_error(d, root, err, KV_EINVAL, "missing field 'kind' (apiVersion is set)");
    const char *a, *k;
    if (yt_string(d, api, "apiVersion", &a, err) || yt_string(d, kind, "kind", &k, err))
        return KV_EINVAL;
    if (strcmp(a, EPC_API_GIE) != 0 && strcmp(a, EPC_API_LLMD) != 0)
        return yt_error(d, api, err, KV_EINVAL, "field 'apiVersion': unsupported '%s' (expected %s or %s)", a,
                        EPC_API_GIE, EPC_API_LLMD);
    if (strcmp(k, "EndpointPickerConfig") != 0)
        return yt_error(d, kind, err, KV_EINVAL, "field 'kind': unsupported '%s' (expected EndpointPickerConfig)",
                        k);
    c->api_version = a;
    return KV_OK;
}

static int cfg_plugins(cfg_build *b, const yt_doc *d, const yt_node *list)
{
    kv_err *err = b->err;
    if (!list || yt_is_null(list))
        return KV_OK;
    if (cfg_expect(d, list, YT_SEQ, "plugins", err))
        return KV_EINVAL;
    for (size_t i = 0; i < list->n; i++) {
        const yt_node *e = list->items[i];
        char what[64];
        snprintf(what, sizeof what, "plugins[%zu]", i);
        if (cfg_expect(d, e, YT_MAP, what, err))
            return KV_EINVAL;
        const yt_node *tn = yt_get(e, "type"), *nn = yt_get(e, "name"), *pn = yt_get(e, "parameters");
        if (cfg_strict(d, e, what, "name, type, parameters", err))
            return KV_EINVAL;
        if (!tn || yt_is_null(tn))
            return yt_error(d, e, err, KV_EINVAL, "field '%s': missing field 'type'", what);
        const char *type, *name;
        char w2[80];
        snprintf(w2, sizeof w2, "%s.type", what);
        if (yt_string(d, tn, w2, &type, err))
            return KV_EINVAL;
        const sched_plugin_type *impl = sched_registry_find(b->registry, type);
        if (!impl)
            return yt_error(d, tn, err, KV_EINVAL, "field '%s': unknown plugin type '%s'", w2, type);
        name = type;
        const yt_node *at = tn;
        if (nn && !yt_is_null(nn)) {
            snprintf(w2, sizeof w2, "%s.name", what);
            if (yt_string(d, nn, w2, &name, err))
                return KV_EINVAL;
            at = nn;
        }
        int prev = epc_plugin_index(b->cfg, name);
        if (prev >= 0)
            return yt_error(d, at, err, KV_EINVAL, "field '%s': duplicate plugin name '%s' (first used at line %d)",
                            what, name, b->cfg->plugins[prev].node->line);
        if (pn && yt_is_null(pn))
            pn = NULL;
        if (pn && pn->kind != YT_MAP) {
            snprintf(w2, sizeof w2, "%s.parameters", what);
            return cfg_expect(d, pn, YT_MAP, w2, err);
        }
        if (cfg_add_plugin(b, name, type, impl, pn, e))
            return KV_ENOMEM;
    }
    return KV_OK;
}

static int cfg_add_ref(epc_profile *p, size_t *cap, size_t plugin, double weight, kv_err *err)
{
    if (!grow_array((void **)&p->refs, cap, p->n_refs + 1, sizeof *p->refs))
        return cfg_nomem(err);
    p->refs[p->n_refs++] = (epc_ref){.plugin = plugin, .weight = weight};
    return KV_OK;
}

static int cfg_profiles(cfg_build *b, const yt_doc *d, const yt_node *list)
{
    epc_config *c = b->cfg;
    kv_err *err = b->err;
    if (!list || yt_is_null(list))
        return KV_OK;
    if (cfg_expect(d, list, YT_SEQ, "schedulingProfiles", err))
        return KV_EINVAL;
    c->profiles = calloc(list->n ? list->n : 1, sizeof *c->profiles);
    if (!c->profiles)
        return cfg_nomem(err);
    for (size_t i = 0; i < list->n; i++) {
        const yt_node *e = list->items[i];
        char what[64], w2[96];
        snprintf(what, sizeof what, "schedulingProfiles[%zu]", i);
        if (cfg_expect(d, e, YT_MAP, what, err))
            return KV_EINVAL;
        const yt_node *nn = yt_get(e, "name"), *pl = yt_get(e, "plugins");
        if (cfg_strict(d, e, what, "name, plugins", err))
            return KV_EINVAL;
        if (!nn || yt_is_null(nn))
            return yt_error(d, e, err, KV_EINVAL, "field '%s': missing field 'name'", what);
        epc_profile *p = &c->profiles[c->n_profiles++];
        snprintf(w2, sizeof w2, "%s.name", what);
        if (yt_string(d, nn, w2, &p->name, err))
            return KV_EINVAL;
        for (size_t j = 0; j + 1 < c->n_profiles; j++)
            if (strcmp(c->profiles[j].name, p->name) == 0)
                return yt_error(d, nn, err, KV_EINVAL, "field '%s': duplicate profile name '%s'", w2, p->name);
        if (!pl || yt_is_null(pl))
            continue;
        snprintf(w2, sizeof w2, "%s.plugins", what);
        if (cfg_expect(d, pl, YT_SEQ, w2, err))
            return KV_EINVAL;
        size_t cap = 0;
        for (size_t j = 0; j < pl->n; j++) {
            const yt_node *r = pl->items[j];
            char rw[128], fw[160];
            snprintf(rw, sizeof rw, "%s.plugins[%zu]", what, j);
            if (cfg_expect(d, r, YT_MAP, rw, err))
                return KV_EINVAL;
            const yt_node *ref = yt_get(r, "pluginRef"), *wn = yt_get(r, "weight");
            if (cfg_strict(d, r, rw, "pluginRef, weight", err))
                return KV_EINVAL;
            if (!ref || yt_is_null(ref))
                return yt_error(d, r, err, KV_EINVAL, "field '%s': missing field 'pluginRef'", rw);
            const char *refname;
            snprintf(fw, sizeof fw, "%s.pluginRef", rw);
            if (yt_string(d, ref, fw, &refname, err))
                return KV_EINVAL;
            int k = epc_plugin_index(c, refname);
            if (k < 0)
                return yt_error(d, ref, err, KV_EINVAL, "field '%s': unknown plugin '%s'", fw, refname);
            const sched_plugin_type *t = c->plugins[k].impl;
            if (t->kind == SCHED_PROFILE_HANDLER)
                return yt_error(d, ref, err, KV_EINVAL, "field '%s': '%s' is a profile handler; it has no place in a profile",
                                fw, refname);
            for (size_t q = 0; q < p->n_refs; q++) {
                if (p->refs[q].plugin == (size_t)k)
                    return yt_error(d, ref, err, KV_EINVAL, "field '%s': plugin '%s' is referenced twice", fw,
                                    refname);
                if (t->kind == SCHED_PICKER && c->plugins[p->refs[q].plugin].impl->kind == SCHED_PICKER)
                    return yt_error(d, ref, err, KV_EINVAL, "field '%s': profile '%s' already has picker '%s'", fw,
                                    p->name, c->plugins[p->refs[q].plugin].name);
            }
            double w = 1;
            if (wn && !yt_is_null(wn)) {
                snprintf(fw, sizeof fw, "%s.weight", rw);
                if (yt_double(d, wn, fw, &w, err))
                    return KV_EINVAL;
            }
            if (cfg_add_ref(p, &cap, (size_t)k, w, err))
                return KV_ENOMEM;
        }
    }
    return KV_OK;
}

static int cfg_feature_gates(const yt_doc *d, const yt_node *n, epc_config *c, kv_err *err)
{
    if (!n || yt_is_null(n))
        return KV_OK;
    if (cfg_expect(d, n, YT_SEQ, "featureGates", err))
        return KV_EINVAL;
    c->feature_gates = calloc(n->n ? n->n : 1, sizeof *c->feature_gates);
    if (!c->feature_gates)
        return cfg_nomem(err);
    for (size_t i = 0; i < n->n; i++) {
        char what[48];
        snprintf(what, sizeof what, "featureGates[%zu]", i);
        if (yt_string(d, n->items[i], what, &c->feature_gates[i], err))
            return KV_EINVAL;
    }
    c->n_feature_gates = n->n;
    return KV_OK;
}

static int cfg_saturation(const yt_doc *d, const yt_node *n, epc_config *c, kv_err *err)
{
    c->saturation = (epc_saturation){.queue_depth = 5, .kv_util = 0.8, .staleness_s = 0.2};
    if (!n || yt_is_null(n))
        return KV_OK;
    if (cfg_expect(d, n, YT_MAP, "saturationDetector", err))
        return KV_EINVAL;
    const yt_node *q = yt_get(n, "queueDepthThreshold"), *kv = yt_get(n, "kvCacheUtilThreshold"),
                  *st = yt_get(n, "metricsStalenessThreshold");
    if (cfg_strict(d, n, "saturationDetector",
                   "queueDepthThreshold, kvCacheUtilThreshold, metricsStalenessThreshold", err))
        return KV_EINVAL;
    if (q && !yt_is_null(q)) {
        int64_t v;
        if (yt_int_range(d, q, "saturationDetector.queueDepthThreshold", 0, 1000000, &v, err))
            return KV_EINVAL;
        c->saturation.queue_depth = (int)v;
    }
    if (kv && !yt_is_null(kv)) {
        if (yt_double_range(d, kv, "saturationDetector.kvCacheUtilThreshold", 0, 1, &c->saturation.kv_util, err))
            return KV_EINVAL;
    }
    if (st && !yt_is_null(st) &&
        yt_duration(d, st, "saturationDetector.metricsStalenessThreshold", &c->saturation.staleness_s, err))
        return KV_EINVAL;
    return KV_OK;
}

/* A '{pluginRef: NAME}' entry of dataLayer: the name must be a declared plugin. */
static int cfg_datalayer_ref(const epc_config *c, const yt_node *e, const char *what, const char *also, kv_err *err)
{
    const yt_doc *d = c->doc;
    if (cfg_expect(d, e, YT_MAP, what, err))
        return KV_EINVAL;
    const yt_node *ref = yt_get(e, "pluginRef");
    if (also)
        yt_get(e, also);   /* read by the caller; marked here for the strict check */
    char fw[160];
    snprintf(fw, sizeof fw, "pluginRef%s%s", also ? ", " : "", also ? also : "");
    if (cfg_strict(d, e, what, fw, err))
        return KV_EINVAL;
    if (!ref || yt_is_null(ref))
        return yt_error(d, e, err, KV_EINVAL, "field '%s': missing field 'pluginRef'", what);
    const char *name;
    snprintf(fw, sizeof fw, "%s.pluginRef", what);
    if (yt_string(d, ref, fw, &name, err))
        return KV_EINVAL;
    if (epc_plugin_index(c, name) < 0)
        return yt_error(d, ref, err, KV_EINVAL, "field '%s': unknown plugin '%s'", fw, name);
    return KV_OK;
}

/* dataLayer{injectDefaults, sources[]{pluginRef, extractors[]{pluginRef}}, discovery{pluginRef}}:
 * llm-d-router's data-layer wiring. kvroute's drivers always scrape metrics and follow
 * endpoints, so the section is validated (strictly, refs to declared plugins) and kept as
 * written; the plugins it names say what they honour in their own files. */
static int cfg_datalayer(const yt_doc *d, const yt_node *n, epc_config *c, kv_err *err)
{
    if (!n || yt_is_null(n))
        return KV_OK;
    if (cfg_expect(d, n, YT_MAP, "dataLayer", err))
        return KV_EINVAL;
    const yt_node *inj = yt_get(n, "injectDefaults"), *src = yt_get(n, "sources"), *disc = yt_get(n, "discovery");
    if (cfg_strict(d, n, "dataLayer", "injectDefaults, sources, discovery", err))
        return KV_EINVAL;
    bool b;
    if (inj && !yt_is_null(inj) && yt_bool(d, inj, "dataLayer.injectDefaults", &b, err))
        return KV_EINVAL;
    if (disc && !yt_is_null(disc)) {
        if (cfg_datalayer_ref(c, disc, "dataLayer.discovery", NULL, err))
            return KV_EINVAL;
        c->discovery = yt_get(disc, "pluginRef")->str;
    }
    c->data_layer = n;
    if (!src || yt_is_null(src))
        return KV_OK;
    if (cfg_expect(d, src, YT_SEQ, "dataLayer.sources", err))
        return KV_EINVAL;
    for (size_t i = 0; i < src->n; i++) {
        char what[64], w2[112];
        snprintf(what, sizeof what, "dataLayer.sources[%zu]", i);
        if (cfg_datalayer_ref(c, src->items[i], what, "extractors", err))
            return KV_EINVAL;
        const yt_node *ex = yt_get(src->items[i], "extractors");
        if (!ex || yt_is_null(ex))
            continue;
        snprintf(w2, sizeof w2, "%s.extractors", what);
        if (cfg_expect(d, ex, YT_SEQ, w2, err))
            return KV_EINVAL;
        for (size_t j = 0; j < ex->n; j++) {
            snprintf(w2, sizeof w2, "%s.extractors[%zu]", what, j);
            if (cfg_datalayer_ref(c, ex->items[j], w2, NULL, err))
                return KV_EINVAL;
        }
    }
    return KV_OK;
}

/* Index of the first plugin of a type, or -1. */
static int cfg_find_type(const epc_config *c, const char *type)
{
    for (size_t i = 0; i < c->n_plugins; i++)
        if (strcmp(c->plugins[i].type, type) == 0)
            return (int)i;
    return -1;
}

/* A plugin the defaults need: the first of its type, else a new one named for the type. */
static int cfg_default_plugin(cfg_build *b, const char *type, size_t *out)
{
    int k = cfg_find_type(b->cfg, type);
    if (k < 0) {
        const sched_plugin_type *impl = sched_registry_find(b->registry, type);
        if (!impl)
            return kv_err_set(b->err, KV_ESTATE, "config: plugin type '%s' is not registered", type);
        if (epc_plugin_index(b->cfg, type) >= 0)
            return kv_err_set(b->err, KV_EINVAL, "%s: the name '%s' is taken by a plugin of another type",
                              yt_name(b->cfg->doc), type);
        if (cfg_add_plugin(b, type, type, impl, NULL, NULL))
            return KV_ENOMEM;
        k = (int)b->cfg->n_plugins - 1;
    }
    *out = (size_t)k;
    return KV_OK;
}

static int cfg_defaults(cfg_build *b, const yt_node *root, const yt_node *profiles_node)
{
    epc_config *c = b->cfg;
    kv_err *err = b->err;
    const yt_doc *d = c->doc;
    if (c->n_profiles == 0) {
        epc_profile *p = realloc(c->profiles, sizeof *p);
        if (!p)
            return cfg_nomem(err);
        c->profiles = p;
        *p = (epc_profile){.name = DEFAULT_PROFILE};
        c->n_profiles = 1;
        size_t cap = 0;
        int picker = -1;
        for (size_t i = 0; i < c->n_plugins; i++) {
            sched_kind k = c->plugins[i].impl->kind;
            if (k == SCHED_PICKER && picker >= 0)
                return yt_error(d, c->plugins[i].node, err, KV_EINVAL,
                                "field 'plugins[%zu]': the default profile would have two pickers ('%s' and '%s'); "
                                "list schedulingProfiles",
                                i, c->plugins[picker].name, c->plugins[i].name);
            if (k == SCHED_PICKER)
                picker = (int)i;
            if (k != SCHED_PROFILE_HANDLER && k != SCHED_REQUEST_CONTROL && cfg_add_ref(p, &cap, i, 1, err))
                return KV_ENOMEM;
        }
    }
    for (size_t i = 0; i < c->n_profiles; i++) {
        epc_profile *p = &c->profiles[i];
        bool has_picker = false;
        for (size_t j = 0; j < p->n_refs; j++)
            has_picker |= c->plugins[p->refs[j].plugin].impl->kind == SCHED_PICKER;
        if (has_picker)
            continue;
        size_t k, cap = p->n_refs;
        if (cfg_default_plugin(b, MAX_SCORE_PICKER, &k) || cfg_add_ref(p, &cap, k, 1, err))
            return err ? err->code : KV_EINVAL;
    }
    int handler = -1;
    for (size_t i = 0; i < c->n_plugins; i++) {
        if (c->plugins[i].impl->kind != SCHED_PROFILE_HANDLER)
            continue;
        if (handler >= 0)
            return yt_error(d, c->plugins[i].node, err, KV_EINVAL,
                            "field 'plugins[%zu]': more than one profile handler ('%s' and '%s')", i,
                            c->plugins[handler].name, c->plugins[i].name);
        handler = (int)i;
    }
    if (handler < 0) {
        if (c->n_profiles > 1)
            return yt_error(d, profiles_node ? profiles_node : root, err, KV_EINVAL,
                            "field 'schedulingProfiles': %zu profiles need a profile handler plugin", c->n_profiles);
        size_t k;
        if (cfg_default_plugin(b, SINGLE_HANDLER, &k))
            return err ? err->code : KV_EINVAL;
        handler = (int)k;
    }
    c->handler = (size_t)handler;
    if (strcmp(c->plugins[handler].type, SINGLE_HANDLER) == 0 && c->n_profiles > 1)
        return yt_error(d, profiles_node, err, KV_EINVAL,
                        "field 'schedulingProfiles': single-profile-handler '%s' cannot run %zu profiles",
                        c->plugins[handler].name, c->n_profiles);
    return KV_OK;
}

epc_config *epc_load_node(const yt_doc *d, const yt_node *root, const sched_plugin_type *const *registry,
                          kv_err *err)
{
    epc_config *c = calloc(1, sizeof *c);
    if (!c) {
        cfg_nomem(err);
        return NULL;
    }
    c->doc = d;
    c->api_version = "";
    cfg_build b = {.cfg = c, .registry = registry, .err = err};
    int rc;
    if (!root || yt_is_null(root)) {
        rc = kv_err_set(err, KV_EINVAL, "%s: empty config", yt_name(d));
        goto fail;
    }
    if ((rc = cfg_expect(d, root, YT_MAP, "(document)", err)))
        goto fail;
    const yt_node *plugins = yt_get(root, "plugins"), *profiles = yt_get(root, "schedulingProfiles"),
                  *gates = yt_get(root, "featureGates"), *sat = yt_get(root, "saturationDetector");
    c->data = yt_get(root, "data");
    const yt_node *dl = yt_get(root, "dataLayer");
    if ((rc = cfg_header(d, root, c, err)) ||
        (rc = cfg_strict(d, root, "",
                         "apiVersion, kind, plugins, schedulingProfiles, featureGates, saturationDetector, data, "
                         "dataLayer",
                         err)) ||
        (rc = cfg_plugins(&b, d, plugins)) || (rc = cfg_profiles(&b, d, profiles)) ||
        (rc = cfg_datalayer(d, dl, c, err)) ||
        (rc = cfg_feature_gates(d, gates, c, err)) || (rc = cfg_saturation(d, sat, c, err)) ||
        (rc = cfg_defaults(&b, root, profiles)))
        goto fail;
    return c;
fail:
    epc_free(c);
    return NULL;
}

static epc_config *cfg_own(yt_doc *doc, const sched_plugin_type *const *registry, kv_err *err)
{
    if (!doc)
        return NULL;
    epc_config *c = epc_load_node(doc, yt_root(doc), registry, err);
    if (!c) {
        yt_free(doc);
        return NULL;
    }
    c->owned = doc;
    return c;
}

epc_config *epc_load_file(const char *path, const sched_plugin_type *const *registry, kv_err *err)
{
    return cfg_own(yt_load_file(path, err), registry, err);
}

epc_config *epc_load_string(const char *text, size_t len, const char *name, const sched_plugin_type *const *registry,
                            kv_err *err)
{
    return cfg_own(yt_load_string(text, len, name, err), registry, err);
}

void epc_free(epc_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_profiles; i++)
        free(c->profiles[i].refs);
    free(c->profiles);
    free(c->plugins);
    free(c->feature_gates);
    yt_free(c->owned);
    free(c);
}

int epc_preset_path(const char *dir, const char *name, char *out, size_t cap, kv_err *err)
{
    if (!name || !name[0] || name[0] == '.')
        return kv_err_set(err, KV_EINVAL, "preset name '%s': must be letters, digits, '.', '_' or '-'",
                          name ? name : "");
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return kv_err_set(err, KV_EINVAL, "preset name '%s': must be letters, digits, '.', '_' or '-'", name);
    int n = snprintf(out, cap, "%s/%s.yaml", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return kv_err_set(err, KV_ERANGE, "preset '%s': path longer than %zu bytes", name, cap);
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISREG(st.st_mode))
        return kv_err_set(err, KV_ENOTFOUND, "preset '%s': no file %s", name, out);
    return KV_OK;
}

epc_config *epc_load_preset(const char *dir, const char *name, const sched_plugin_type *const *registry,
                            kv_err *err)
{
    char path[4096];
    if (epc_preset_path(dir, name, path, sizeof path, err))
        return NULL;
    return epc_load_file(path, registry, err);
}
