/* secretkey: the server's key for digests of secret parameter values, kept in the data
 * directory, so that a StartRun retried with the same request_id is matched by its
 * secrets' values without the run table ever holding them.
 *
 * The key is 32 random bytes in DATA_DIR/secret.key (mode 0600), made at the first
 * start; a digest is HMAC-SHA256 under it, so it tells nothing of the values to anyone
 * without the key, and a guess cannot be checked against it offline. */
#ifndef PRISMQ_SECRETKEY_H
#define PRISMQ_SECRETKEY_H

#include <stddef.h>
#include <stdint.h>

#define SECRETKEY_LEN        32
#define SECRETKEY_DIGEST_LEN 32

/* Reads the key of data directory `data_dir` into key, creating it first if there is
 * none. Returns 0, or a negative errno with err (errlen bytes) saying why: the file
 * cannot be read or written, or has not SECRETKEY_LEN bytes (-EINVAL). */
int secretkey_load(uint8_t key[SECRETKEY_LEN], const char *data_dir, char *err, size_t errlen);

/* Sets out to the digest of the NULL-terminated strings of v (each with its NUL, in
 * order) under key. */
void secretkey_digest(uint8_t out[SECRETKEY_DIGEST_LEN], const uint8_t key[SECRETKEY_LEN],
                      char *const *v);

#endif
