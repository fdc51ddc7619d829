/*
 * router.h - from a request to a worker key: the resolved canonical spec,
 * the resolved interpreter, the tag, and the bubble directories that
 * serve it.  The spec is resolved against the bubbles installed for the
 * interpreter's tag (bubble_resolve_spec): "numpy>=1.26" becomes
 * "numpy==2.2.6" when that is the newest bubble it allows, or "numpy" when
 * the interpreter's own environment serves it.
 *
 * An interpreter named by an absolute path that discovery did not find is
 * probed once, off the event loop (a child process watched by the loop,
 * at most 10 s); the job waits parked in the router meanwhile, and the
 * answer, success or failure, is cached for the daemon's life.
 */
#ifndef OMNI_ROUTER_H
#define OMNI_ROUTER_H

#include <sys/types.h>
#include <cjson/cJSON.h>
#include "interp.h"
#include "job.h"
#include "loop.h"
#include "spec.h"

#define ROUTER_TAG_MAX 128

struct router;

struct route {
	char spec[SPEC_MAX_LEN];              /* canonical, resolved: the worker key */
	struct interp py;
	char tag[ROUTER_TAG_MAX];
	char paths[SPEC_MAX_ITEMS][4096];     /* bubble dirs, spec order, npaths of them */
	int npaths;
};

/* Called with a parked job once its interpreter is known: resolve it again. */
typedef void (*router_retry_cb)(void *ud, struct job *j);

/* py, home borrowed, must outlive the router. */
struct router *router_new(struct loop *l, const struct interp_set *py, const char *home,
			  router_retry_cb retry, void *ud);
/* Kills running probes (still reaped through router_reaped); parked jobs
 * fail with reason "shutdown". */
void router_shutdown(struct router *r);
void router_free(struct router *r);   /* router_shutdown, then frees r */

/*
 * Resolves j into *out.  0: resolved.  -EINPROGRESS: j is parked (taken)
 * until its probe ends, then handed to retry.  Other -errno: refused, with
 * a failed reply in *reply (caller owns) naming the reason.
 */
int router_resolve(struct router *r, struct job *j, struct route *out, cJSON **reply);

/* A child exited: 1 if it was one of the router's probes. */
int router_reaped(struct router *r, pid_t pid, int status);
int router_owns(const struct router *r, pid_t pid);
/* Interpreters probed so far (counters for status). */
void router_stats(const struct router *r, unsigned *probed, unsigned *failed, unsigned *running);

#endif
