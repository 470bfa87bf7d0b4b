/* endpoint-notification-source (llm-d-router data layer): delivers endpoint add/delete
 * events to the plugins that keep per-endpoint state (the in-flight and prefix producers,
 * per-pod KV-event subscribers). kvroute's drivers do this without a plugin: ./epp's
 * endpoint set (Kubernetes or --endpoints) drives the KV-event subscribers and the index's
 * endpoint removal, and per-endpoint plugin state is keyed by endpoint id. Declaring it,
 * and naming it under dataLayer.sources, is therefore accepted as is; it has no parameters. */
#include "policy_util.h"

const sched_plugin_type endpoint_notification_source_type = {
    .type = "endpoint-notification-source",
    .kind = SCHED_REQUEST_CONTROL,
};
