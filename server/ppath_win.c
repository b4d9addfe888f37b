/* ppath on Windows: drive paths, normalised lexically as Win32 would but refusing the
 * forms it rewrites behind one's back (a trailing '.' or ' ' is dropped by Win32, so
 * ".. " would be ".." there and "x." would be "x"; "a:b" names a stream of a; "NUL" is a
 * device in any directory), then the longest existing prefix opened and asked for its
 * final path (GetFinalPathNameByHandleW: symbolic links and junctions resolved). Names are
 * compared as NTFS does by default, without case (CompareStringOrdinal). */
#include "ppath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wchar.h>

#include <windows.h>

#include "compat.h"

/* A drive-absolute path: "X:" and a separator. */
static int drive_abs(const char *p) {
  return ((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) && p[1] == ':' &&
         (p[2] == '\\' || p[2] == '/');
}

static int is_sep(char c) { return c == '\\' || c == '/'; }

/* Whether name (len bytes) is one of Windows' device names, with or without an
 * extension, and with spaces before it, which Win32 drops ("NUL", "nul.txt", "NUL .txt",
 * "COM1", "LPT0", "COM\u00b9"). */
static int device_name(const char *c, size_t len) {
  static const char *const dev[] = {"CON", "PRN", "AUX", "NUL"};
  size_t base = 0;
  while (base < len && c[base] != '.') base++;
  while (base > 0 && c[base - 1] == ' ') base--;
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    if (base == 3 && strncasecmp(c, dev[i], 3) == 0) return 1;
  if (base < 4 || (strncasecmp(c, "COM", 3) != 0 && strncasecmp(c, "LPT", 3) != 0)) return 0;
  /* A digit, or a superscript one, two or three (U+00B9, U+00B2, U+00B3 in UTF-8). */
  return (base == 4 && c[3] >= '0' && c[3] <= '9') ||
         (base == 5 && (unsigned char)c[3] == 0xC2 &&
          ((unsigned char)c[4] == 0xB9 || (unsigned char)c[4] == 0xB2 ||
           (unsigned char)c[4] == 0xB3));
}

/* Whether component c (len bytes, not "." or "..") is a name Win32 takes as written. */
static int plain_name(const char *c, size_t len) {
  if (c[len - 1] == '.' || c[len - 1] == ' ') return 0;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)c[i] < 32 || strchr("<>:\"|?*", c[i])) return 0;
  return !device_name(c, len);
}

/* Appends component c (len bytes) to the path in buf (length *n, starting "X:\"): "."
 * is nothing, ".." drops the last component (never above the drive's root). Returns 0,
 * -EINVAL for a name refused above, -ENAMETOOLONG. */
static int push_component(char *buf, size_t *n, const char *c, size_t len) {
  if (len == 0 || (len == 1 && c[0] == '.')) return 0;
  if (len == 2 && c[0] == '.' && c[1] == '.') {
    while (*n > 3 && buf[*n - 1] != '\\') (*n)--;
    if (*n > 3) (*n)--;
    buf[*n] = '\0';
    return 0;
  }
  if (!plain_name(c, len)) return -EINVAL;
  if (*n + 1 + len >= PPATH_MAX) return -ENAMETOOLONG;
  if (*n > 3) buf[(*n)++] = '\\';
  memcpy(buf + *n, c, len);
  *n += len;
  buf[*n] = '\0';
  return 0;
}

/* Appends the components of s (after its drive, if absolute) to buf. */
static int push_all(char *buf, size_t *n, const char *s) {
  while (*s) {
    size_t len = strcspn(s, "\\/");
    int rc = push_component(buf, n, s, len);
    if (rc < 0) return rc;
    s += len + (s[len] != '\0');
  }
  return 0;
}

/* The lexical form of v taken from base (a result of ppath_resolve) unless absolute. */
static int normalize(char *buf, const char *base, const char *v) {
  const char *root = drive_abs(v) ? v : base;
  if (!root || !drive_abs(root) || (root == base && (is_sep(v[0]) || strchr(v, ':'))))
    return -EINVAL;
  buf[0] = (char)(root[0] & ~0x20); /* the drive letter in upper case */
  memcpy(buf + 1, ":\\", 3);
  size_t n = 3;
  int rc = push_all(buf, &n, root + 3);
  return rc < 0 || root == v ? rc : push_all(buf, &n, v);
}

static int utf16(wchar_t *out, size_t cap, const char *s) {
  return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, out, (int)cap) > 0 ? 0 : -EINVAL;
}

static int errno_of(DWORD e) {
  switch (e) {
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND: return -ENOENT;
  case ERROR_ACCESS_DENIED: return -EACCES;
  case ERROR_DIRECTORY: return -ENOTDIR;
  case ERROR_CANT_RESOLVE_FILENAME: return -ELOOP;
  case ERROR_FILENAME_EXCED_RANGE: return -ENAMETOOLONG;
  default: return -EIO;
  }
}

/* The final path of the existing file or directory `path` into real (UTF-8, PPATH_MAX
 * bytes, "X:\..." or "\\server\share\..."). Returns 0, -ENOENT when it does not exist,
 * -ELOOP when it is a link that leads nowhere, or another negative errno. */
static int final_path(char *real, const char *path) {
  /* "\\?\": no MAX_PATH limit (a prefix past it would look missing), and the path is
   * taken as it is, which it may be: normal, and its names checked. */
  wchar_t w[PPATH_MAX + 4] = L"\\\\?\\", f[PPATH_MAX];
  if (utf16(w + 4, PPATH_MAX, path) < 0) return -EINVAL;
  /* Opened with no rights and, should a link lead to a named pipe, no identity to
   * borrow (SECURITY_IDENTIFICATION). */
  HANDLE h = CreateFileW(
      w, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, OPEN_EXISTING,
      FILE_FLAG_BACKUP_SEMANTICS | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION, NULL);
  if (h == INVALID_HANDLE_VALUE) {
    int rc = errno_of(GetLastError());
    /* A link whose target is missing is still an entry of its directory (names here
     * hold no wildcard: plain_name). FindFirstFileW reads the entry itself where
     * GetFileAttributesW may follow the link (Wine). */
    WIN32_FIND_DATAW fd;
    HANDLE fh = rc == -ENOENT ? FindFirstFileW(w, &fd) : INVALID_HANDLE_VALUE;
    if (fh != INVALID_HANDLE_VALUE) {
      FindClose(fh);
      rc = -ELOOP;
    }
    return rc;
  }
  DWORD n = GetFinalPathNameByHandleW(h, f, PPATH_MAX, FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
  CloseHandle(h);
  /* It exists but has no path with a drive (a volume mounted without a letter, a shadow
   * copy): never "missing", which would keep the rest unresolved. */
  if (n == 0) return -EXDEV;
  if (n >= PPATH_MAX) return -ENAMETOOLONG;
  /* "\\?\C:\x" is "C:\x"; "\\?\UNC\server\share" is "\\server\share". */
  const wchar_t *s = f;
  if (wcsncmp(s, L"\\\\?\\UNC\\", 8) == 0) {
    s += 6;
    f[6] = L'\\';
  } else if (wcsncmp(s, L"\\\\?\\", 4) == 0) {
    s += 4;
  }
  return WideCharToMultiByte(CP_UTF8, 0, s, -1, real, PPATH_MAX, NULL, NULL) > 0 ? 0
                                                                                 : -ENAMETOOLONG;
}

/* Resolves the links of the longest existing prefix of the normal path in buf, in
 * place; the rest stays as it is (as ppath.c's resolve_links). */
static int resolve_links(char *buf) {
  char real[PPATH_MAX];
  size_t cut = strlen(buf);
  for (;;) {
    char saved = buf[cut];
    buf[cut] = '\0';
    int rc = final_path(real, buf);
    buf[cut] = saved;
    if (rc == 0) break;
    if (rc != -ENOENT || cut <= 3) return rc; /* not even the drive's root exists */
    while (cut > 3 && buf[cut - 1] != '\\') cut--;
    if (cut > 3) cut--; /* the tail keeps its separator, but after the root's */
  }
  size_t tlen = strlen(buf + cut), rlen = strlen(real);
  if (rlen > 0 && real[rlen - 1] == '\\' && buf[cut] == '\\') rlen--; /* "D:\" + "\x" */
  if (rlen + tlen >= PPATH_MAX) return -ENAMETOOLONG;
  memmove(buf + rlen, buf + cut, tlen + 1);
  memcpy(buf, real, rlen);
  return 0;
}

int ppath_resolve(char *out, const char *base, const char *v) {
  /* What a program reading its command line in the ANSI code page would see as a
   * separator, a dot or a stream's colon must be one here too. */
  if (!*v || (!base && !drive_abs(v)) || !compat_ansi_safe(v, "\\/.:\"")) return -EINVAL;
  int rc = normalize(out, base, v);
  return rc < 0 ? rc : resolve_links(out);
}

/* The first n UTF-16 units of a and b equal without case, as NTFS compares names. */
static int same_prefix(const char *a, const char *b, size_t n) {
  wchar_t wa[PPATH_MAX], wb[PPATH_MAX];
  int la = MultiByteToWideChar(CP_UTF8, 0, a, (int)n, wa, PPATH_MAX);
  int lb = MultiByteToWideChar(CP_UTF8, 0, b, (int)n, wb, PPATH_MAX);
  return la > 0 && la == lb && CompareStringOrdinal(wa, la, wb, lb, TRUE) == CSTR_EQUAL;
}

int ppath_under(const char *path, const char *base) {
  size_t blen = strlen(base);
  if (blen > 0 && base[blen - 1] == '\\') blen--; /* a drive's root, "C:\" */
  return strlen(path) >= blen && same_prefix(path, base, blen) &&
         (path[blen] == '\0' || path[blen] == '\\');
}
