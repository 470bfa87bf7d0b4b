/* prefill-header-handler (llm-d): the request-control plugin that, in llm-d, writes the
 * prefill pod into the x-prefiller-host-port request header before the request leaves.
 * In kvroute the scheduler hands the prefill pick to the driver in sched_result.others
 * and the EPP writes the header; this type exists so that P/D configs, which always list
 * the plugin, load unchanged. It takes no parameters. */
#include "scheduler.h"

const sched_plugin_type prefill_header_handler_type = {
    .type = "prefill-header-handler",
    .kind = SCHED_REQUEST_CONTROL,
};
