/*
 * spawner.h - starting worker processes: a fresh interpreter (fork + exec),
 * or a fork of a warm zygote, one zygote per interpreter, started on
 * demand.
 *
 *   spawner_exec(s, &py, cfd, paths, &pid);          // pid known at once
 *   spawner_fork(s, &py, cfd, paths, tag, fail, ud, &wait);
 *                                                  // the worker says "ready" on
 *                                                  // its channel; fail(ud, why)
 *                                                  // if the zygote cannot fork it
 *
 * Either way the worker runs `<python> -E -s <entry> worker FD [PATH...]`
 * (or is forked from `<entry> zygote FD`), talks on its end of a private
 * socketpair, and its exit reaches the daemon, a child subreaper.  The
 * zygote never runs user code.
 *
 * A zygote lives until it dies (or the daemon stops).  An interpreter
 * kept warm (spawner_keep, the idle_config op) has its zygote started at
 * once and started again whenever it dies, after a pause that grows while
 * it keeps dying before it is ready.
 */
#ifndef OMNI_SPAWNER_H
#define OMNI_SPAWNER_H

#include <sys/types.h>
#include <cjson/cJSON.h>
#include "interp.h"
#include "loop.h"

struct spawner;
struct spawner_wait;

/* A wait ended: why is NULL once the worker was handed to its zygote,
 * else the reason it could not be. */
typedef void (*spawner_fail_cb)(void *ud, const char *why);

/* entry (the worker runtime's entry script) is borrowed and must outlive s. */
struct spawner *spawner_new(struct loop *l, const char *entry);
/* Kills every zygote and fails the workers still waiting for one; their
 * exits still reach spawner_reaped. */
void spawner_kill(struct spawner *s);
/* Are zygotes left that were not reaped yet? */
int spawner_live(const struct spawner *s);
/* Kills what is left and frees s (NULL is fine); unreaped zygotes are
 * given up on. */
void spawner_free(struct spawner *s);

/* Fork + exec a fresh worker on channel end cfd (always closed here).
 * 0 with *pid set, or -errno. */
int spawner_exec(struct spawner *s, const struct interp *py, int cfd, const cJSON *paths, pid_t *pid);

/*
 * Asks py's zygote (started if needed) to fork a worker on cfd.  On
 * success cfd is taken (closed once handed over); paths and tag are
 * borrowed until the wait ends: fail is called (why NULL: handed over), or
 * spawner_wait_cancel.  *wait is set while the zygote is not ready yet.
 * -errno when no zygote can take it: cfd is still the caller's.
 */
int spawner_fork(struct spawner *s, const struct interp *py, int cfd, const cJSON *paths,
		 const char *tag, spawner_fail_cb fail, void *ud, struct spawner_wait **wait);
void spawner_wait_cancel(struct spawner_wait *w);

/* A child exited: 1 if it was a zygote (handled), 0 otherwise. */
int spawner_reaped(struct spawner *s, pid_t pid, int status);
/* Does pid belong to a zygote (live or not yet reaped)? */
int spawner_owns(const struct spawner *s, pid_t pid);

struct spawner_zygote_info {
	const char *python;
	pid_t pid;
	int ready;
	double start_ms;
	unsigned long long forks;
};
/* Calls cb for each live zygote until it returns nonzero. */
int spawner_each(struct spawner *s, int (*cb)(const struct spawner_zygote_info *z, void *ud), void *ud);

/* Records count for py (copied): count >= 1 keeps its zygote started
 * from now on, 0 forgets it (its zygote, if any, lives on as any other).
 * 0, or -ENOMEM. */
int spawner_keep(struct spawner *s, const struct interp *py, int count);

struct spawner_kept_info {
	const char *python;        /* the interpreter's path */
	int count;                 /* as recorded, >= 1 */
	pid_t zygote_pid;          /* 0 while none runs */
	int ready;
};
/* Calls cb for each kept interpreter, in the order recorded, until it
 * returns nonzero. */
int spawner_each_kept(struct spawner *s, int (*cb)(const struct spawner_kept_info *k, void *ud),
		      void *ud);

#endif
