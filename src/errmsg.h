/*
 * errmsg.h - the one way a module reports a readable reason next to its
 * -errno: into a caller's buffer, which may be NULL.
 */
#ifndef OMNI_ERRMSG_H
#define OMNI_ERRMSG_H

#include <stddef.h>

/* Formats the reason into err (errlen bytes; nothing when err is NULL)
 * and returns rc, so that `return errmsg_set(-EINVAL, err, n, "...")` reads
 * as the failure it is. */
int errmsg_set(int rc, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
