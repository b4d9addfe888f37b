/* Aligned text tables. Cells are measured in UTF-8 characters, so names with accents
 * line up; wide (CJK) characters are not accounted for. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct cli_table {
  size_t ncols;
  size_t nrows; /* headers included */
  char **cells; /* nrows * ncols, row by row */
};

cli_table *cli_table_new(size_t ncols, const char *const *headers) {
  cli_table *t = cli_xcalloc(1, sizeof *t);
  t->ncols = ncols;
  cli_table_add(t, headers);
  return t;
}

void cli_table_add(cli_table *t, const char *const *cells) {
  t->cells = cli_xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *t->cells);
  for (size_t c = 0; c < t->ncols; c++) {
    char *cell = cli_xstrdup(cells[c] ? cells[c] : "");
    /* One line per row, and nothing from the server that drives the terminal. */
    for (char *p = cell; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    t->cells[t->nrows * t->ncols + c] = cell;
  }
  t->nrows++;
}

/* Characters in a UTF-8 string: every byte but continuation bytes. */
static size_t text_width(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
  return n;
}

void cli_table_print(const cli_table *t, FILE *f) {
  size_t *width = cli_xcalloc(t->ncols, sizeof *width);
  for (size_t i = 0; i < t->nrows * t->ncols; i++) {
    size_t w = text_width(t->cells[i]);
    if (w > width[i % t->ncols]) width[i % t->ncols] = w;
  }
  for (size_t r = 0; r < t->nrows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      const char *cell = t->cells[r * t->ncols + c];
      fputs(cell, f);
      if (c + 1 < t->ncols) fprintf(f, "%*s", (int)(width[c] - text_width(cell) + 2), "");
    }
    fputc('\n', f);
  }
  free(width);
}

void cli_table_free(cli_table *t) {
  if (!t) return;
  for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
  free(t->cells);
  free(t);
}
