/*
 * fair.h - fair share between tenants: weighted fair queuing over the tokens
 * each tenant is served, in the manner of the Virtual Token Counter (Sheng
 * et al., "Fairness in Serving Large Language Models", OSDI 2024).
 *
 * Each tenant has a counter of the service it received: every prompt row
 * prefilled adds w_prompt / weight, every token generated w_gen / weight,
 * as the engine serves them (not when a request ends), so a tenant with
 * long generations running is seen as served while it runs. The waiting
 * job admitted next is the one of the highest priority class, then of the
 * tenant with the lowest counter, then the earliest; prompts already
 * admitted get the step's prefill rows in the same order. A tenant that
 * comes back after having nothing waiting or running has its counter
 * lifted to the lowest counter of those that do (or of the last one that
 * left): idle time is not banked, so it cannot return and starve the
 * others, and a busy tenant is never behind it by more than one request.
 * The policy only orders: no capacity is held back while anyone waits.
 *
 *     gw_fair *f;
 *     gw_fair_create(&f, 1.0, 2.0);
 *     params.policy = gw_fair_policy(f);     // for gw_sched_start
 *     ... job->tenant, job->weight, job->priority set before submit ...
 *     gw_fair_free(f);                       // after gw_sched_stop
 *
 * Engine thread only (the scheduler calls the hooks), except
 * gw_fair_snapshot, which takes the policy's lock.
 */
#ifndef GW_FAIR_H
#define GW_FAIR_H

#include "scheduler.h"

typedef struct gw_fair gw_fair;

/* w_prompt, w_gen: the cost of a prompt row and of a generated token
 * (> 0; the VTC paper's 1 and 2). 0, or MOE_EINVAL / MOE_ENOMEM. */
int gw_fair_create(gw_fair **out, double w_prompt, double w_gen);
void gw_fair_free(gw_fair *f);

/* The scheduling policy (scheduler.h), valid while f lives. */
const gw_policy *gw_fair_policy(gw_fair *f);

/* A tenant's state, for tests and /metrics. */
typedef struct gw_fair_tenant {
    char name[MOE_TENANT_NAME_MAX + 1];
    double counter; /* service received, in weighted tokens */
    int waiting, running;
} gw_fair_tenant;

/* Copies up to cap tenants (those with state) into out; returns how many
 * there are. Any thread. */
int gw_fair_snapshot(gw_fair *f, gw_fair_tenant *out, int cap);

#endif
