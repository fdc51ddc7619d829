/*
 * activate.h - serving a socket that a service manager made, and telling
 * it when the daemon is ready: the two parts of systemd's protocol that a
 * daemon needs (sd_listen_fds(3), sd_notify(3)), written out here so that
 * omnipkgd links no libsystemd.
 *
 *   LISTEN_PID=<our pid> LISTEN_FDS=1 [LISTEN_FDNAMES=<name>]
 *       fd 3 is a listening socket to serve instead of binding one;
 *   NOTIFY_SOCKET=<path, or @name in the abstract namespace>
 *       a datagram socket to tell "READY=1" once clients are served and
 *       "STOPPING=1" when the daemon stops.
 *
 * Both are read once at start-up and unset, so that no worker, and no code
 * a job runs, takes them for its own.  Errors: -errno with a readable
 * reason in err (which may be NULL).
 */
#ifndef OMNI_ACTIVATE_H
#define OMNI_ACTIVATE_H

#include <stddef.h>

#define ACTIVATE_FD 3   /* where the first passed descriptor is */

/*
 * Takes the socket passed to this process.  LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES are unset whatever they say.  1 when one was passed: *fd
 * is it, made close-on-exec and non-blocking, checked to be a listening
 * AF_UNIX stream socket bound to path, whose file is a socket of our uid
 * and which a process of our uid set listening (clients require both: a
 * client's SO_PEERCRED names that process); name (namelen bytes) holds
 * its name from LISTEN_FDNAMES, or "".  0 when none was passed to this
 * process (no LISTEN_FDS, none, or a LISTEN_PID that is another
 * process's).  -errno when the variables or the descriptor are not what
 * the daemon can serve.
 */
int activate_listen(const char *path, int *fd, char *name, size_t namelen, char *err,
		    size_t errlen);

/* Takes NOTIFY_SOCKET (unset afterwards) into addr (n bytes): "" when it is
 * not set, or on an error: -EINVAL when it is neither a path nor an
 * @name, -ENAMETOOLONG when it does not fit a socket address. */
int activate_notify_take(char *addr, size_t n, char *err, size_t errlen);

/* Sends state ("READY=1") to addr in one datagram; nothing when addr is
 * "".  0 or -errno. */
int activate_notify(const char *addr, const char *state);

#endif
