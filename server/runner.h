/* runner: the prismq.runner.v1.Runner service. Decodes and checks requests, calls the
 * scheduler, and answers through the call API: unary methods, WaitRun and CancelRun
 * (which hold their call until the run changes), and StreamOutput followers (which
 * read the run's output log at the pace their client reads). */
#ifndef PRISMQ_RUNNER_H
#define PRISMQ_RUNNER_H

#include "admin.h"
#include "call.h"
#include "config.h"
#include "scheduler.h"

typedef struct runner runner;

/* Registers the Runner methods on `cs`, serving runs of `sch` and the modules and
 * authorization rules of its current configuration (sched_config; not owned, must
 * outlive the runner). Returns 0 and sets *out, or a
 * negative errno from call_server_add. Free with runner_free after the call server
 * (whose shutdown ends every call the runner holds). */
int runner_new(runner **out, call_server *cs, sched *sch);

/* Accepts NULL. */
void runner_free(runner *rn);

/* Counters for the Admin service (an admin_counters_fn; arg is the runner). */
void runner_counters(admin_counters *out, void *arg);

#endif
