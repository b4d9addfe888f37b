/* admin: prismq.admin.v1.Admin, counters that show resources coming back (live
 * calls and connections, descriptors, memory, runs, followers). */
#ifndef PRISMQ_ADMIN_H
#define PRISMQ_ADMIN_H

#include <stdint.h>

#include "call.h"

typedef struct admin admin;

/* Counters owned by the layers below the call layer (the Runner service). */
typedef struct admin_counters {
  uint64_t runs_active; /* QUEUED + RUNNING */
  uint64_t runs_total;
  uint64_t followers;
  /* Connections open beside the call layer's (prismqd's front: HTTP/1.1 ones, and those
   * whose first bytes are awaited), added to live_connections. */
  uint64_t conns;
} admin_counters;

/* Fills *out; called for each GetStats. */
typedef void (*admin_counters_fn)(admin_counters *out, void *arg);

/* Registers Admin/GetStats on `s`. `fn` may be NULL (run counters read 0).
 * Returns 0 and sets *out (free with admin_free after the call server), or a negative
 * errno from call_server_add. */
int admin_new(admin **out, call_server *s, admin_counters_fn fn, void *arg);

/* Accepts NULL. */
void admin_free(admin *a);

#endif
