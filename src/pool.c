/*
 * pool.c - the worker registry (see pool.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "cgroup.h"
#include "logx.h"
#include "omnipkg.h"
#include "proto.h"
#include "pool.h"
#include "router.h"
#include "shm.h"
#include "spec.h"

struct pool {
	struct wenv env;
	const struct config *cfg;
	struct router *router;
	struct worker *workers;
	struct loop_timer *tick;
	uint64_t next_id, next_serial;
	struct pool_counters cnt;
	struct shm *shm;
	int sweep_due;            /* an orphan sweep waits for a worker's pid */
	int mem_cgroup;           /* worker groups have the memory controller */
	char cgroup_base[PATH_MAX];
};

static void pool_place(struct pool *p, struct job *j);

static int live_count(struct pool *p)
{
	int n = 0;

	for (struct worker *w = p->workers; w; w = w->next)
		n += w->state != W_DEAD;
	return n;
}

static int is_known_child(pid_t pid, void *ud)
{
	struct pool *p = ud;

	for (struct worker *w = p->workers; w; w = w->next)
		if (w->pid == pid)
			return 0;
	if (spawner_owns(p->env.spawner, pid) || router_owns(p->router, pid))
		return 0;
	/* Re-parented to us: left behind by a job (it called setsid() and its
	 * parent died).  Nothing a job starts outlives it. */
	if (kill(pid, SIGKILL) == 0)
		p->cnt.leftovers_killed++;
	return 0;
}

/* Without cgroups, orphans of dead workers are re-parented to the daemon
 * (a child subreaper): kill them once a worker is gone. */
static void kill_orphans(struct pool *p)
{
	if (p->cgroup_base[0])
		return;
	/* A worker forked by a zygote is our child before its "ready" tells
	 * us its pid: sweep once every worker's pid is known. */
	for (struct worker *w = p->workers; w; w = w->next)
		if (w->pid <= 0 && w->state != W_DEAD) {
			p->sweep_due = 1;
			return;
		}
	p->sweep_due = 0;
	proc_each_child(is_known_child, p);
}

static void on_gone(void *ud, struct worker *w)
{
	struct pool *p = ud;
	struct worker **pp;

	for (pp = &p->workers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	if (w->pid > 0)
		kill_orphans(p);
}

static void on_requeue(void *ud, struct job *j)
{
	pool_place(ud, j);
}

static int evict_lru_idle(struct pool *p)
{
	struct worker *lru = NULL;

	for (struct worker *w = p->workers; w; w = w->next)
		if (w->state == W_IDLE && !w->qhead && !w->pinned &&
		    (!lru || w->last_used < lru->last_used))
			lru = w;
	if (!lru)
		return -EBUSY;
	logx(LOGX_INFO, "evicting idle worker %d (%s) to stay within max_workers", (int)lru->pid, lru->spec);
	worker_retire(lru);
	return 0;
}

/* The worker for a resolved key, started if needed; NULL with *reply set. */
static struct worker *pool_worker_for(struct pool *p, const struct route *rt, int once, cJSON **reply)
{
	struct worker *w;

	if (!once)
		for (w = p->workers; w; w = w->next)
			if (w->state != W_DEAD && !w->once && strcmp(w->spec, rt->spec) == 0 &&
			    strcmp(w->py.path, rt->py.path) == 0 && strcmp(w->tag, rt->tag) == 0)
				return w;
	if (live_count(p) >= p->cfg->max_workers && evict_lru_idle(p) < 0) {
		*reply = proto_reply_error(EBUSY, OMNI_REASON_BUSY, "all %d workers are busy (max_workers); "
					"try again later or raise max_workers", p->cfg->max_workers);
		return NULL;
	}
	w = worker_new(&p->env, ++p->next_serial, rt->spec, &rt->py, rt->tag, (char (*)[4096])rt->paths,
		       rt->npaths, once);
	if (!w) {
		*reply = proto_reply_error(errno, OMNI_REASON_SPAWN, "cannot start a worker: %s", strerror(errno));
		return NULL;
	}
	w->next = p->workers;
	p->workers = w;
	return w;
}

/* Stops the workers of the key (target spec, rt's interpreter and tag);
 * the reply lists their pids. */
static cJSON *pool_evict_key(struct pool *p, const char *spec, const struct route *rt)
{
	cJSON *reply = proto_reply_ok(), *pids = cJSON_AddArrayToObject(reply, "evicted");
	uint64_t *serials = calloc((size_t)live_count(p) + 1, sizeof *serials);
	int n = 0;

	if (!serials) {
		cJSON_Delete(reply);
		return proto_reply_error(ENOMEM, OMNI_REASON_NOMEM, "out of memory");
	}
	for (struct worker *w = p->workers; w; w = w->next)
		if (w->state != W_DEAD && strcmp(w->spec, spec) == 0 &&
		    strcmp(w->py.path, rt->py.path) == 0 && strcmp(w->tag, rt->tag) == 0)
			serials[n++] = w->serial;
	/* Evicting one worker can start another (its queue moves on) and
	 * free itself: find each by serial again before stopping it. */
	for (int i = 0; i < n; i++) {
		struct worker *w;
		pid_t pid;

		for (w = p->workers; w && w->serial != serials[i]; w = w->next)
			;
		if (w && w->state != W_DEAD && (pid = worker_evict(w)) > 0)
			cJSON_AddItemToArray(pids, cJSON_CreateNumber(pid));
	}
	free(serials);
	return reply;
}

static int add_kept(const struct spawner_kept_info *k, void *ud)
{
	cJSON_AddNumberToObject(ud, k->python, k->count);
	return 0;
}

cJSON *pool_idle_config(struct pool *p)
{
	cJSON *r = proto_reply_ok();

	spawner_each_kept(p->env.spawner, add_kept, cJSON_AddObjectToObject(r, "config"));
	return r;
}

/* Answers a request that names a key without running code, once the
 * router resolved it (r == 0, *rt) or refused it (reply). */
static void pool_answer(struct pool *p, struct job *j, int r, const struct route *rt, cJSON *reply)
{
	const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "reason"));
	int rc;

	if (j->kind == JOB_KIND_EVICT && r < 0 && why && strcmp(why, "nopython") == 0) {
		/* No worker can have an interpreter that does not exist. */
		cJSON_Delete(reply);
		reply = proto_reply_ok();
		cJSON_AddArrayToObject(reply, "evicted");
	} else if (r == 0 && j->kind == JOB_KIND_EVICT) {
		reply = pool_evict_key(p, j->target, rt);
	} else if (r == 0 && j->kind == JOB_KIND_IDLE) {
		if ((rc = spawner_keep(p->env.spawner, &rt->py, j->idle_count)) < 0) {
			reply = proto_reply_error(-rc, OMNI_REASON_NOMEM, "idle_config: %s", strerror(-rc));
		} else {
			logx(LOGX_INFO, "idle_config: %s (%s) count %d", rt->py.path, rt->py.version,
			     j->idle_count);
			reply = pool_idle_config(p);
		}
	}
	job_finish(j, reply, NULL);
}

static void pool_place(struct pool *p, struct job *j)
{
	struct route *rt = malloc(sizeof *rt);
	cJSON *reply = NULL;
	struct worker *w = NULL;
	int r;

	if (!rt) {
		if (!job_finish(j, proto_reply_error(ENOMEM, OMNI_REASON_NOMEM, "out of memory"), NULL) &&
		    j->kind == JOB_KIND_EXEC)
			p->cnt.jobs_failed++;
		return;
	}
	r = router_resolve(p->router, j, rt, &reply);
	if (r == -EINPROGRESS) {
		free(rt);
		return;   /* parked until its interpreter is probed */
	}
	if (j->kind != JOB_KIND_EXEC) {
		pool_answer(p, j, r, rt, reply);
		free(rt);
		return;
	}
	if (r == 0)
		w = pool_worker_for(p, rt, j->once, &reply);
	free(rt);
	if (!w) {
		job_finish(j, reply, NULL);
		p->cnt.jobs_failed++;
		return;
	}
	if (j->pin && !w->pinned) {
		w->pinned = 1;
		logx(LOGX_INFO, "worker for %s pinned (job %llu)", w->spec, (unsigned long long)j->id);
	}
	worker_enqueue(w, j);
}

/* An evict or idle_config: resolved like an exec, answered without a
 * worker. */
static uint64_t pool_submit_key(struct pool *p, const struct job_req *r, job_done_cb cb, void *ud)
{
	uint64_t id = ++p->next_id;
	struct job_req k = *r;
	struct spec s;
	char err[512];
	struct job *j;

	if (r->kind == JOB_KIND_EVICT) {
		/* Canonical as exec's, so that "NumPy==1.26.4" finds its worker. */
		if (spec_parse(r->spec, strlen(r->spec), &s, err, sizeof err) < 0) {
			cb(proto_reply_error(EINVAL, OMNI_REASON_BADSPEC, "bad spec: %s", err), ud);
			return id;
		}
		k.spec = s.canon;
	}
	if (!(j = job_new(id, &k, 1, cb, ud))) {
		cb(proto_reply_error(ENOMEM, OMNI_REASON_NOMEM, "out of memory"), ud);
		return 0;
	}
	pool_place(p, j);
	return id;
}

uint64_t pool_submit(struct pool *p, const struct job_req *r, job_done_cb cb, void *ud)
{
	double tmo = r->timeout > 0 ? r->timeout : p->cfg->job_timeout;
	uint64_t id;
	struct job *j;
	char err[512];
	int rc;

	if (r->kind != JOB_KIND_EXEC)
		return pool_submit_key(p, r, cb, ud);
	id = ++p->next_id;
	j = job_new(id, r, tmo, cb, ud);
	p->cnt.jobs_total++;
	if (!j) {
		p->cnt.jobs_failed++;
		cb(proto_reply_error(ENOMEM, OMNI_REASON_NOMEM, "out of memory"), ud);
		return 0;
	}
	if (r->nsegments + r->narrays > 0) {
		rc = p->shm ? job_lease(j, p->shm, r, err, sizeof err) : -ENOENT;
		if (rc < 0) {
			p->cnt.jobs_failed++;
			job_finish(j, proto_reply_error(-rc, rc == -EINVAL ? OMNI_REASON_BADARG :
							OMNI_REASON_NOSEGMENT, "%s",
							p->shm ? err : "no shared segments here"),
				   NULL);
			return id;
		}
	}
	pool_place(p, j);
	return id;
}

void pool_segment_gone(struct pool *p, uint64_t id)
{
	for (struct worker *w = p->workers; w; w = w->next)
		worker_segment_gone(w, id);
}

int pool_cancel(struct pool *p, uint64_t id)
{
	for (struct worker *w = p->workers; w; w = w->next)
		if (w->state != W_DEAD || w->cur)
			if (worker_cancel(w, id))
				return 0;
	return -ENOENT;
}

/* A prewarm request parked for a probe runs an empty job once placed. */
static void prewarm_done(cJSON *reply, void *ud)
{
	cJSON_Delete(reply);
}

void pool_prewarm(struct pool *p)
{
	for (size_t i = 0; i < p->cfg->nprewarm; i++) {
		struct job_req r = { .spec = p->cfg->prewarm[i].spec, .python = p->cfg->prewarm[i].python,
				     .code = "" };
		struct job *j = job_new(0, &r, 1, prewarm_done, NULL);
		struct route *rt = malloc(sizeof *rt);
		cJSON *reply = NULL;
		int rc = j && rt ? router_resolve(p->router, j, rt, &reply) : -ENOMEM;

		if (rc == 0 && !pool_worker_for(p, rt, 0, &reply))
			rc = -EAGAIN;
		if (rc < 0 && rc != -EINPROGRESS)
			logx(LOGX_WARN, "prewarm %s on %s: %s", r.spec, r.python ? r.python : "default",
			     reply ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "error"))
				   : strerror(-rc));
		cJSON_Delete(reply);
		free(rt);
		if (rc != -EINPROGRESS)
			job_free(j);
	}
}

void pool_reap(struct pool *p)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct worker *w;

		/* A control block whose writer was this process (a worker, or
		 * anything a job left behind) is recovered now, marked torn. */
		shm_recover_writer(p->shm, pid, 0);
		for (w = p->workers; w; w = w->next)
			if (w->pid == pid && !w->reaped)
				break;
		if (w) {
			worker_reaped(w, st);
			continue;
		}
		if (spawner_reaped(p->env.spawner, pid, st) || router_reaped(p->router, pid, st))
			continue;
		/* anything else: an orphan re-parented to us; reaped and forgotten */
	}
}

static void pool_tick(struct loop *l, void *ud)
{
	struct pool *p = ud;
	double now = loop_now(), idle = p->cfg->idle_timeout;
	struct worker *w, *n;

	p->tick = loop_timer_add(l, 1.0, pool_tick, p);
	if (p->sweep_due)
		kill_orphans(p);
	if (idle <= 0)
		return;
	for (w = p->workers; w; w = n) {
		n = w->next;
		if (w->state == W_IDLE && !w->qhead && !w->pinned && now - w->last_used > idle) {
			logx(LOGX_INFO, "worker %d (%s) idle for %.0f s: stopped", (int)w->pid, w->spec,
			     now - w->last_used);
			worker_retire(w);
		}
	}
}

struct pool *pool_new(struct loop *l, const struct config *cfg, const struct interp_set *py,
		      const char *home, const char *entry, const char *cgroup_base,
		      struct shm *shm)
{
	struct pool *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->cfg = cfg;
	p->shm = shm;
	p->env.shm = shm;
	snprintf(p->cgroup_base, sizeof p->cgroup_base, "%s", cgroup_base ? cgroup_base : "");
	p->env = (struct wenv){ .loop = l, .cfg = cfg, .cnt = &p->cnt, .cgroup_base = p->cgroup_base,
				.shm = shm, .requeue = on_requeue, .gone = on_gone, .ud = p };
	p->env.spawner = spawner_new(l, entry);
	p->router = router_new(l, py, home, on_requeue, p);
	if (!p->env.spawner || !p->router) {
		spawner_free(p->env.spawner);
		router_free(p->router);
		free(p);
		return NULL;
	}
	p->tick = loop_timer_add(l, 1.0, pool_tick, p);
	if (p->cgroup_base[0]) {
		int r = cgroup_enable_memory(p->cgroup_base);

		p->mem_cgroup = r == 0;
		if (r < 0)
			logx(LOGX_INFO, "no memory controller for the workers' cgroups (%s): "
			     "max_memory_mb is enforced with RLIMIT_AS", strerror(-r));
	}
	return p;
}

void pool_free(struct pool *p)
{
	double until;
	siginfo_t si;

	if (!p)
		return;
	loop_timer_cancel(p->env.loop, p->tick);
	router_shutdown(p->router);   /* parked jobs fail; probes are killed */
	for (struct worker *w = p->workers; w; w = w->next)
		worker_shutdown(w);
	spawner_kill(p->env.spawner);
	kill_orphans(p);
	/* Reap what we killed the usual way, bounded: a process stuck in the
	 * kernel is left behind rather than waited for. */
	until = loop_now() + 2.0;
	while ((p->workers || spawner_live(p->env.spawner)) && loop_now() < until) {
		pool_reap(p);
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
			break;
		usleep(2000);
	}
	while (p->workers)
		worker_free(p->workers);
	spawner_free(p->env.spawner);
	router_free(p->router);
	if (p->cgroup_base[0])
		cgroup_destroy(p->cgroup_base);
	free(p);
}

/* ---- introspection ---- */

int pool_each_worker(struct pool *p, int (*cb)(const struct pool_worker_info *w, void *ud), void *ud)
{
	struct timespec ts;
	double now = loop_now(), wall;

	clock_gettime(CLOCK_REALTIME, &ts);
	wall = (double)ts.tv_sec + ts.tv_nsec / 1e9;

	for (struct worker *w = p->workers; w; w = w->next) {
		struct pool_worker_info i;
		int r;

		if (w->state == W_DEAD)
			continue;
		i = (struct pool_worker_info){
			.spec = w->spec, .python = w->py.path, .version = w->py.version, .tag = w->tag,
			.state = worker_state_name(w->state),
			.started_by = w->via_zygote ? "zygote" : "exec", .pid = w->pid,
			.jobs = w->jobs, .queued = w->qlen, .once = w->once,
			.idle_s = w->state == W_IDLE ? now - w->last_used : 0, .start_ms = w->start_ms,
			.pinned = w->pinned, .max_memory_mb = w->max_memory_mb,
			.last_used = wall - (now - w->last_used),
		};
		if ((r = cb(&i, ud)) != 0)
			return r;
	}
	return 0;
}

int pool_each_zygote(struct pool *p, int (*cb)(const struct spawner_zygote_info *z, void *ud), void *ud)
{
	return spawner_each(p->env.spawner, cb, ud);
}

int pool_each_kept(struct pool *p, int (*cb)(const struct spawner_kept_info *k, void *ud), void *ud)
{
	return spawner_each_kept(p->env.spawner, cb, ud);
}

void pool_stats(struct pool *p, struct pool_stats *out)
{
	out->c = p->cnt;
	out->workers = live_count(p);
	out->cgroups = p->cgroup_base[0] != 0;
	out->memory_cgroup = p->mem_cgroup;
	router_stats(p->router, &out->probed, &out->probe_failed, &out->probing);
}
