/* health: the standard grpc.health.v1.Health service (doc/health-checking.md).
 * Service "" is the server as a whole; the names given to health_register are known
 * too; any other name is NOT_FOUND. Everything is SERVING while the server is up. */
#ifndef PRISMQ_HEALTH_H
#define PRISMQ_HEALTH_H

#include "call.h"

/* Registers Check and Watch on `s`. `services` (NULL-terminated, static storage)
 * lists the service names reported SERVING besides "". Returns 0 or a negative errno
 * from call_server_add. */
int health_register(call_server *s, const char *const *services);

#endif
