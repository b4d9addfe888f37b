/* What each kind of executor provides: exec.c's public functions dispatch through
 * these (exec.h says what each does). Private to exec.c and the executors. */
#ifndef PRISMQ_EXEC_IMPL_H
#define PRISMQ_EXEC_IMPL_H

#include "exec.h"

typedef struct exec_ops {
  int (*start)(executor *ex, exec_job **out, const exec_spec *spec, char *err, size_t errlen);
  void (*terminate)(exec_job *j, uint32_t grace_ms);
  void (*kill)(exec_job *j);
  void (*job_free)(exec_job *j);
  int (*started_before)(executor *ex, Prismq__Runner__V1__Run *run);
  int (*end_survivors)(executor *ex, const Prismq__Runner__V1__Run *run, int64_t boot_ms);
  size_t (*sweep)(executor *ex);
  void (*forget)(executor *ex, const Prismq__Runner__V1__Run *run);
  void (*quiesce)(executor *ex, void (*fn)(void *arg), void *arg);
  void (*free)(executor *ex);
} exec_ops;

/* The first member of every executor and of every job: the kind's functions. */
struct executor {
  const exec_ops *ops;
};

struct exec_job {
  const exec_ops *ops;
};

#endif
