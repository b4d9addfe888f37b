/* secretkey: the key of secret parameter digests (secretkey.h). */
#include "secretkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "compat.h"

#define KEY_FILE "secret.key"

/* Reads exactly len bytes of fd; -EINVAL for a shorter file. */
static int read_all(int fd, uint8_t *buf, size_t len) {
  size_t got = 0;
  uint8_t extra;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EINVAL;
    got += (size_t)n;
  }
  return read(fd, &extra, 1) == 0 ? 0 : -EINVAL;
}

/* Writes a new key to path, all or nothing: a temporary file renamed into place, so
 * that a crash never leaves a short key behind. The bytes come from the system
 * (compat_random: getrandom(2) on Linux): OpenSSL's generator would set all of OpenSSL up (2 MiB of the idle server's memory)
 * in a server that may never use it. */
static int create_key(uint8_t *key, const char *path) {
  char tmp[4096 + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int rc = compat_random(key, SECRETKEY_LEN);
  if (rc < 0) return rc;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  rc =
      write(fd, key, SECRETKEY_LEN) == SECRETKEY_LEN && fsync(fd) == 0 ? 0 : -(errno ? errno : EIO);
  if (close(fd) < 0 && rc == 0) rc = -errno;
  if (rc == 0 && rename(tmp, path) < 0) rc = -errno;
  if (rc < 0) unlink(tmp);
  return rc;
}

int secretkey_load(uint8_t key[SECRETKEY_LEN], const char *data_dir, char *err, size_t errlen) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/" KEY_FILE, data_dir) >= (int)sizeof path) {
    snprintf(err, errlen, "data directory path too long");
    return -ENAMETOOLONG;
  }
  uint8_t k[SECRETKEY_LEN];
  int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    rc = read_all(fd, k, sizeof k);
    close(fd);
  } else {
    rc = errno == ENOENT ? create_key(k, path) : -errno;
  }
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", path, rc == -EINVAL ? "not a key of 32 bytes" : strerror(-rc));
    return rc;
  }
  memcpy(key, k, sizeof k);
  return 0;
}

void secretkey_digest(uint8_t out[SECRETKEY_DIGEST_LEN], const uint8_t key[SECRETKEY_LEN],
                      char *const *v) {
  /* One-shot HMAC over the concatenation: each string keeps its NUL, so no two lists
   * concatenate alike. */
  size_t len = 0;
  for (size_t i = 0; v[i]; i++) len += strlen(v[i]) + 1;
  uint8_t *buf = len ? OPENSSL_malloc(len) : NULL;
  if (len && !buf) abort();
  size_t o = 0;
  for (size_t i = 0; v[i]; i++) {
    size_t n = strlen(v[i]) + 1;
    memcpy(buf + o, v[i], n);
    o += n;
  }
  unsigned int outlen = SECRETKEY_DIGEST_LEN;
  if (!HMAC(EVP_sha256(), key, SECRETKEY_LEN, buf ? buf : (const uint8_t *)"", len, out, &outlen))
    abort();
  OPENSSL_clear_free(buf, len);
}
