/*
 * client_ctl.h - what client_ctl.c (control blocks, omnipkg.h) shares with
 * the Python extension (src/pyext), the fuzz harness and the tests; not
 * part of omnipkg.h.  client_ctl.c needs nothing but libc, so that the
 * extension compiles it as it is.
 */
#ifndef OMNI_CLIENT_CTL_H
#define OMNI_CLIENT_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "omnipkg.h"

/* Parses the text of a /proc/<pid>/stat (n bytes, not NUL-ended): the
 * state letter (field 3) into *state and the start time (field 22) into
 * *start.  0, or -EINVAL for text that is not one. */
int client_ctl_parse_stat(const char *text, size_t n, char *state, uint64_t *start);

/* omni_ctl_read, recovering a dead writer's claim only when may_write
 * (a read-only mapping of the block waits instead). */
int client_ctl_read(void *base, size_t len, uint64_t off, void *buf, size_t n, int timeout_ms,
		    int may_write, omni_ctl_snapshot *snap);

#endif
