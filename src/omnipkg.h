/*
 * omnipkg.h - libomnipkg, the client library of omnipkgd.
 *
 *   omni_client *c;
 *   omni_reply *r;
 *   omni_exec_opts o = { .spec = "numpy==1.26.4", .python = "3.11",
 *                        .code = "import numpy; print(numpy.__version__)" };
 *   if (omni_connect(&c, NULL, OMNI_CONNECT_AUTOSTART) == 0 &&
 *       omni_exec(c, &o, &r) == 0) {
 *       fputs(omni_reply_str(r, "stdout"), stdout);   // "1.26.4\n"
 *       omni_reply_free(r);
 *   }
 *   omni_close(c);
 *
 * Errors: every function that can fail returns 0 (or a documented count)
 * or a negative errno value; omni_strerror() turns it into text.  A failed
 * job is not a failed call: omni_exec returns 0 and omni_reply_ok() is 0.
 * The library never exits and never writes to stdout/stderr.
 *
 * Threads: a client handle is used by one thread at a time.
 */
#ifndef OMNIPKG_H
#define OMNIPKG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct omni_client omni_client;
typedef struct omni_reply omni_reply;

typedef struct omni_exec_opts {
	const char *spec;    /* required: "numpy==1.26.4", "a==1,b==2" or "base" */
	const char *python;  /* "3.11", "3.11.7", an absolute path; NULL: daemon default */
	const char *code;    /* required: Python source */
	double timeout;      /* seconds; <= 0: the daemon's default */
	const char *tag;     /* NULL or a worker tag: same spec, separate worker */
	int once;            /* nonzero: ephemeral worker, gone after the job */
} omni_exec_opts;

#define OMNI_CONNECT_AUTOSTART 0x1  /* start omnipkgd if none answers (never
                                       inside a worker: OMNIPKG_DAEMON_CHILD) */

/* The default socket path into buf; 0 or -errno. */
int omni_default_socket(char *buf, size_t n);

/* Connects to socket_path (NULL: default) and checks the protocol version.
 * *out is owned by the caller until omni_close().  -ECONNREFUSED when no
 * daemon answers (also for a missing socket file), -EPROTONOSUPPORT for a
 * daemon of another protocol version. */
int omni_connect(omni_client **out, const char *socket_path, int flags);
void omni_close(omni_client *c);   /* c may be NULL; fails nothing in flight */
int omni_fd(const omni_client *c); /* for poll(); borrowed.  Replies already
                                      read (see omni_call) are not signalled
                                      by it: try omni_recv(c, &r, 0) first */

/* Runs code and waits for its reply.  *out: caller frees with omni_reply_free. */
int omni_exec(omni_client *c, const omni_exec_opts *o, omni_reply **out);

/* Pipelining: send now, collect later with omni_recv in any order. */
int omni_exec_send(omni_client *c, const omni_exec_opts *o, uint64_t *id_out);
/* Sends any op with arguments given as a JSON object text (NULL: none). */
int omni_send(omni_client *c, const char *op, const char *args_json, uint64_t *id_out);
/* Receives the next reply, whichever request it answers.  timeout_ms < 0:
 * wait; -ETIMEDOUT when none came in time (the handle stays usable).
 * After a stream error (-EMSGSIZE, -EBADMSG, -ECONNRESET...) every later
 * call returns that error: close the handle. */
int omni_recv(omni_client *c, omni_reply **out, int timeout_ms);

/* Sends op and waits for its own reply (others received meanwhile are kept
 * and returned by later omni_recv calls). */
int omni_call(omni_client *c, const char *op, const char *args_json, omni_reply **out);
int omni_status(omni_client *c, omni_reply **out);

/* Reply accessors; strings are borrowed, valid until omni_reply_free. */
uint64_t omni_reply_id(const omni_reply *r);
int omni_reply_ok(const omni_reply *r);
const char *omni_reply_str(const omni_reply *r, const char *key);  /* "" if absent */
double omni_reply_num(const omni_reply *r, const char *key);       /* 0 if absent;
                                                                      true: 1, false: 0 */
const char *omni_reply_json(const omni_reply *r);                  /* whole reply */
void omni_reply_free(omni_reply *r);

/* Creates the bubbles of spec for python (see bubble.h); blocks while pip
 * runs, showing its output unless quiet.  err receives a reason. */
int omni_install(const char *spec, const char *python, int quiet, char *err, size_t errlen);

/* Starts the daemon: runs `omnipkgd --daemon` and waits until its socket
 * accepts (the daemon's own errors go to stderr).  The binary is $OMNIPKGD,
 * else omnipkgd beside the running executable, in the build directory, in
 * the install bindir, else on PATH.  The daemon listens on the default
 * socket only, so socket_path must be NULL or that path (-EINVAL).  Does
 * not check for a live daemon first.  0 or -errno with a reason in err
 * (may be NULL); -EPERM inside a worker.  OMNI_CONNECT_AUTOSTART uses it. */
int omni_daemon_start(const char *socket_path, char *err, size_t errlen);

const char *omni_strerror(int err);
const char *omni_version(void);

#ifdef __cplusplus
}
#endif
#endif
