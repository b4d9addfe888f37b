/* quota: counts per owner (an identity string), for limits such as the queued runs one
 * identity may have (limits.max_queued_per_identity). Core code: knows no protocol.
 *
 * Owners with a count of 0 take no memory. Out of memory aborts (server code).
 * Single-threaded. */
#ifndef PRISMQ_QUOTA_H
#define PRISMQ_QUOTA_H

#include <stdint.h>

typedef struct quota quota;

/* Creates an empty set of counts. Never fails (aborts on out of memory). Free with
 * quota_free. */
quota *quota_new(void);

/* Frees the counts. Accepts NULL. */
void quota_free(quota *q);

/* The count of `owner` ("" is an owner like any other): 0 if it has none. */
uint32_t quota_get(const quota *q, const char *owner);

/* Adds 1 to the count of `owner`. */
void quota_inc(quota *q, const char *owner);

/* Takes 1 from the count of `owner`, which must be above 0. */
void quota_dec(quota *q, const char *owner);

#endif
