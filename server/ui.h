/* ui: the web page prismqd serves at / over HTTP/1.1 (http.c, docs/http.md): the
 * static files of server/ui/ (HTML, CSS, JavaScript, an icon), which the build embeds
 * in the binary (cmake/embed.cmake, server/CMakeLists.txt). The page is a client of
 * the JSON routes; nothing here knows HTTP beyond the names of content types and
 * entity tags. Single-threaded: call from the server's loop only. */
#ifndef PRISMQ_UI_H
#define PRISMQ_UI_H

#include <stddef.h>
#include <stdint.h>

/* One embedded file, as ui_lookup finds it. Everything points to static storage that
 * lives as long as the process: nothing is freed. */
typedef struct ui_asset {
  const uint8_t *data;      /* the file's bytes */
  size_t len;               /* their number */
  const char *content_type; /* e.g. "text/html; charset=utf-8" */
  const char *etag;         /* a strong entity tag, quoted: "\"<32 hex digits>\"" */
} ui_asset;

/* Finds the file served at the request path `path` (decoded, without the query): "/"
 * is index.html, any other file of server/ui/ is "/" and its name ("/app.js"). The
 * entity tag is a digest of the bytes (SHA-256, cut to 128 bits), computed at the
 * first lookup of the file and kept. Returns 0 and fills *out, or -ENOENT (*out
 * untouched) when no file is served at `path`. */
int ui_lookup(ui_asset *out, const char *path);

/* True (1) if the value of an If-None-Match header, `if_none_match` (NULL if there is
 * none), names the asset `a`: "*", or a comma-separated list holding its tag, weak
 * (W/"...") or not, as HTTP's weak comparison for If-None-Match wants (RFC 9110,
 * 13.1.2). Else 0. */
int ui_etag_matches(const ui_asset *a, const char *if_none_match);

#endif
