/* fx_pool: a scheduler fixture's endpoints as a front door's pool (live/route.h), for
 * tests whose endpoints never change while the router runs, so acquire and release need
 * no lock. The fixture must outlive the pool. */
#ifndef KVROUTE_TEST_FX_POOL_H
#define KVROUTE_TEST_FX_POOL_H

#include "route.h"
#include "sched_fixture.h"

route_pool fx_pool(fx *f);

#endif
