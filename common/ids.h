/* ids: time and identifiers shared by server and client. */
#ifndef PRISMQ_IDS_H
#define PRISMQ_IDS_H

#include <stddef.h>
#include <stdint.h>

/* Length of a run id, without the NUL. */
#define ID_RUN_LEN 26

/* Wall-clock time in milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t id_now_ms(void);

/* Writes a new run id into out (ID_RUN_LEN + 1 bytes): a ULID, 48 bits of `now_ms`
 * then 80 random bits, in Crockford base32. Ids made by one process sort in creation
 * order (within one millisecond the random part is incremented), so sorting by id is
 * sorting by age. Not thread-safe: call from one thread. */
void id_run_new(char *out, int64_t now_ms);

/* True if s (len bytes) has the shape of a run id (26 Crockford base32 characters). */
int id_run_valid(const char *s, size_t len);

#endif
