/* fuzzkit: what the libFuzzer harnesses of tests/fuzz share: quiet logs, a scratch
 * directory, checks that end the run as a crash (so that libFuzzer saves the input),
 * and the leak checks that LeakSanitizer cannot make (descriptors, child processes). */
#ifndef PRISMQ_FUZZKIT_H
#define PRISMQ_FUZZKIT_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points, which every harness defines (Initialize optionally). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Once per process: log lines below ERROR off (LOG_LEVEL overrides, e.g. DEBUG to
 * watch one input), SIGPIPE ignored as prismqd does. */
void fz_setup(void);

/* Makes a scratch directory for this process, on /dev/shm when there is one, named
 * after `what` and the pid. It is removed, with what it holds, when the process exits,
 * or else by the next fz_tempdir once the process is gone (libFuzzer often ends with
 * _Exit). Returns its path (static). */
const char *fz_tempdir(const char *what);

/* Removes the files directly inside `dir` (not sub-directories). */
void fz_clear_dir(const char *dir);

/* A property of the code under test failed: prints the message and aborts, which
 * libFuzzer reports as a crash with this input. */
void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define FZ_CHECK(cond, ...)            \
  do {                                 \
    if (!(cond)) fz_fail(__VA_ARGS__); \
  } while (0)

/* The lowest descriptor number free now. Equal before and after one input, or the
 * input leaked a descriptor (libFuzzer itself opens none between inputs). */
int fz_lowest_free_fd(void);

/* Fails unless this process has no child left (waitpid says ECHILD), but for the
 * sanitizers' own llvm-symbolizer. */
void fz_check_no_child(void);

#endif
