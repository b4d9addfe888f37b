/* progress: how far a run has come, as the module reports it in one of two ways
 * (config.h, "Progress"):
 *
 *   - lines of its stdout that match the module's progress pattern: a POSIX extended
 *     regular expression (regcomp REG_EXTENDED) in which some groups say what they hold,
 *     written the Python way: (?P<done>...), (?P<total>...), (?P<percent>...),
 *     (?P<message>...). (?:...) is a group that captures nothing and \d, \D stand for
 *     [0-9], [^0-9] (outside bracket expressions, where a backslash is itself, as POSIX
 *     says). Without named groups, capturing groups 1, 2 and 3 hold done, total and
 *     message. The pattern is searched in each line (its newline, and a carriage return
 *     before it, left out): anchor it with ^...$ to match whole lines;
 *   - lines written to a descriptor of its own (PRISMQ_PROGRESS_FD): "DONE/TOTAL",
 *     "PERCENT%" or "DONE", each optionally followed by a space and a message.
 *
 * Numbers are decimal (digits, a fraction, an exponent), finite and >= 0; a percent P
 * is reported as done P of total 100, and a missing total as 0 (unknown). Messages are
 * cut to PROGRESS_MESSAGE_MAX bytes and made valid UTF-8 (utf8_sanitize). A line longer
 * than PROGRESS_LINE_MAX bytes is never a progress line, wherever the reads split it.
 *
 * A scanner follows one stream, chunk by chunk, and hands back each update with the
 * position in the chunk where its line ends, so the caller can store the output up to
 * there, then the update: a reader sees the update right after the bytes of its line.
 * Lines that begin with the pattern's literal prefix (the text after a leading ^ up to
 * the first special character) are the only ones matched, and are found by searching
 * for the prefix (memchr, memmem): the other lines cost no more than that search over
 * their bytes. A pattern without such a prefix is matched against every line, at a
 * cost per line (a few hundred ns here).
 *
 * The only protocol knowledge here is the contract's Progress message, which updates
 * come as. A compiled pattern is read-only, shareable; a scanner belongs to one stream.
 * Out of memory aborts (server code). */
#ifndef PRISMQ_PROGRESS_H
#define PRISMQ_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "prismq/runner/v1/runner.pb-c.h"

/* Longest progress line, in bytes before its newline; a longer one is ignored. It is
 * also what a scanner buffers of a line that a read split. */
#define PROGRESS_LINE_MAX 4096u

/* Longest message kept, in bytes: a longer one is cut (never inside a UTF-8 sequence). */
#define PROGRESS_MESSAGE_MAX 256u

typedef struct progress_pattern progress_pattern;
typedef struct progress_scan progress_scan;

/* Compiles `pattern` as described above. Returns 0 and sets *out (free with
 * progress_pattern_free), or -EINVAL with *out untouched and a one-line reason in err
 * (errlen bytes): a group name other than done, total, percent and message, or one
 * named twice; (?...) other than (?:...) and (?P<name>...); both done and percent,
 * neither of them (without names: no capturing group), or total without done; what
 * regcomp refuses. */
int progress_pattern_new(progress_pattern **out, const char *pattern, char *err, size_t errlen);

/* Accepts NULL. */
void progress_pattern_free(progress_pattern *p);

/* A scanner of the lines of a module's stdout that match `pat` (which must outlive
 * it), or with `pat` NULL of the lines written to its progress descriptor. Free with
 * progress_scan_free. */
progress_scan *progress_scan_new(const progress_pattern *pat);

/* Accepts NULL. */
void progress_scan_free(progress_scan *s);

/* Looks for the next progress line in chunk data[*pos, len): the caller starts each
 * chunk at *pos 0, and calls again from where the last call left *pos until it returns
 * 0. Returns 1 for a line that gives an update: *pos is just past its newline, and
 * out's done, total and message are set (message points into the scanner, valid until
 * the next call; updated_at_ms is left alone). Returns 0 when the rest of the chunk
 * holds no more (*pos = len): a line it leaves unfinished is carried over to the next
 * chunk, bounded by PROGRESS_LINE_MAX. */
int progress_scan_next(progress_scan *s, const uint8_t *data, size_t len, size_t *pos,
                       Prismq__Runner__V1__Progress *out);

/* The stream has ended: a last line without a newline is a line too. Returns 1 with
 * *out set as progress_scan_next does if it gives an update, else 0. */
int progress_scan_end(progress_scan *s, Prismq__Runner__V1__Progress *out);

/* Lines that were meant as progress but gave none: on a descriptor, every line that is
 * not in its format (an empty or too long one included); with a pattern, matching
 * lines whose numbers are not valid. */
uint64_t progress_scan_rejected(const progress_scan *s);

#endif
