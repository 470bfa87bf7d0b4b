/* single-profile-handler: GIE's default handler. It runs the one profile once and makes
 * its result primary; that is exactly the framework's behaviour for a handler without
 * profiles/primary hooks (scheduler.c), so the type is only its name and kind. The config
 * loader rejects it with more than one profile, as GIE does. */
#include "scheduler.h"

const sched_plugin_type single_profile_handler_type = {
    .type = "single-profile-handler",
    .kind = SCHED_PROFILE_HANDLER,
};
