/*
 * core.c - the daemon's core (see core.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cgroup.h"
#include "core.h"
#include "logx.h"

struct core {
	struct core_ctx ctx;
	struct shm *shm;
	struct pool *pool;
	char cgroup[PATH_MAX];
	double t_start;
};

static void segment_changed(void *ud, uint64_t id)
{
	struct core *c = ud;

	if (c->pool)
		pool_segment_gone(c->pool, id);
}

void core_client_gone(struct core *c, uint64_t owner)
{
	shm_drop_owner(c->shm, owner);
}

struct core *core_new(const struct core_ctx *ctx, char *err, size_t errlen)
{
	struct core *c = calloc(1, sizeof *c);
	int r;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->ctx = *ctx;
	c->t_start = loop_now();
	c->shm = shm_new(ctx->rtdir, ctx->cfg->shm_quota, err, errlen);
	if (!c->shm) {
		free(c);
		return NULL;
	}
	if (!ctx->cfg->cgroups) {
		logx(LOGX_INFO, "cgroups off (config): what jobs leave running is found through /proc");
	} else if ((r = cgroup_init(c->cgroup, sizeof c->cgroup)) < 0) {
		logx(LOGX_INFO, "no cgroup for workers (%s): what jobs leave running is found "
		     "through /proc", strerror(-r));
		c->cgroup[0] = 0;
	}
	c->pool = pool_new(ctx->loop, ctx->cfg, ctx->py, ctx->home, ctx->entry,
			   c->cgroup[0] ? c->cgroup : NULL, c->shm);
	shm_on_change(c->shm, segment_changed, c);
	if (!c->pool) {
		snprintf(err, errlen, "out of memory");
		if (c->cgroup[0])
			cgroup_destroy(c->cgroup);
		shm_free(c->shm);
		free(c);
		return NULL;
	}
	return c;
}

void core_free(struct core *c)
{
	if (!c)
		return;
	shm_on_change(c->shm, NULL, NULL);   /* the pool goes first */
	pool_free(c->pool);   /* destroys the workers' cgroups too */
	shm_free(c->shm);
	free(c);
}

uint64_t core_submit(struct core *c, const struct job_req *r, job_done_cb cb, void *ud)
{
	return pool_submit(c->pool, r, cb, ud);
}

int core_cancel(struct core *c, uint64_t id)
{
	return pool_cancel(c->pool, id);
}

void core_prewarm(struct core *c) { pool_prewarm(c->pool); }
void core_reap(struct core *c) { pool_reap(c->pool); }

struct shm *core_shm(struct core *c) { return c->shm; }
struct loop *core_loop(struct core *c) { return c->ctx.loop; }
const struct config *core_config(struct core *c) { return c->ctx.cfg; }
const struct interp_set *core_pythons(struct core *c) { return c->ctx.py; }
const char *core_home(struct core *c) { return c->ctx.home; }
const char *core_rtdir(struct core *c) { return c->ctx.rtdir; }

static int add_zygote(const struct spawner_zygote_info *z, void *ud)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "python", z->python);
	cJSON_AddNumberToObject(o, "pid", z->pid);
	cJSON_AddBoolToObject(o, "ready", z->ready);
	cJSON_AddNumberToObject(o, "start_ms", z->start_ms);
	cJSON_AddNumberToObject(o, "forks", (double)z->forks);
	cJSON_AddItemToArray(ud, o);
	return 0;
}

static int add_kept(const struct spawner_kept_info *k, void *ud)
{
	cJSON *o = cJSON_AddObjectToObject(ud, k->python);

	cJSON_AddNumberToObject(o, "count", k->count);
	cJSON_AddNumberToObject(o, "zygote_pid", k->zygote_pid);
	cJSON_AddBoolToObject(o, "ready", k->ready);
	return 0;
}

cJSON *core_idle_config(struct core *c)
{
	return pool_idle_config(c->pool);
}

cJSON *core_status_json(struct core *c)
{
	cJSON *o = cJSON_CreateObject(), *s;
	struct pool_stats st;
	size_t count, bytes;

	pool_stats(c->pool, &st);
	cJSON_AddNumberToObject(o, "pid", getpid());
	cJSON_AddStringToObject(o, "version", OMNI_VERSION);
	cJSON_AddNumberToObject(o, "uptime", loop_now() - c->t_start);
	cJSON_AddStringToObject(o, "home", c->ctx.home);
	cJSON_AddStringToObject(o, "runtime_dir", c->ctx.rtdir);
	cJSON_AddNumberToObject(o, "workers", st.workers);
	cJSON_AddNumberToObject(o, "jobs", (double)st.c.jobs_total);
	cJSON_AddNumberToObject(o, "jobs_failed", (double)st.c.jobs_failed);
	cJSON_AddNumberToObject(o, "workers_started", (double)st.c.spawned);
	cJSON_AddNumberToObject(o, "crashes", (double)st.c.crashes);
	cJSON_AddNumberToObject(o, "timeouts", (double)st.c.timeouts);
	cJSON_AddNumberToObject(o, "cancelled", (double)st.c.cancelled);
	cJSON_AddNumberToObject(o, "leftovers_killed", (double)st.c.leftovers_killed);
	cJSON_AddStringToObject(o, "containment", st.cgroups ? "cgroup" : "proc");
	cJSON_AddStringToObject(o, "memory_limit", st.memory_cgroup ? "cgroup" : "rlimit");
	cJSON_AddNumberToObject(o, "pythons_probed", st.probed);
	cJSON_AddNumberToObject(o, "pythons_probe_failed", st.probe_failed);
	s = cJSON_AddArrayToObject(o, "zygotes");
	pool_each_zygote(c->pool, add_zygote, s);
	pool_each_kept(c->pool, add_kept, cJSON_AddObjectToObject(o, "idle_pool"));
	bytes = shm_usage(c->shm, &count);
	s = cJSON_AddObjectToObject(o, "shm");
	cJSON_AddStringToObject(s, "dir", shm_dir(c->shm));
	cJSON_AddNumberToObject(s, "segments", (double)count);
	cJSON_AddNumberToObject(s, "bytes", (double)bytes);
	cJSON_AddNumberToObject(s, "quota", (double)shm_quota(c->shm));
	cJSON_AddBoolToObject(s, "quota_enforced_by_kernel", shm_enforced(c->shm));
	return o;
}

static long rss_kb(pid_t pid)
{
	char path[64];
	long pages = 0, res = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &res) != 2)
		res = 0;
	fclose(f);
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

struct worker_q {
	cJSON *into;
	pid_t only;               /* 0: all */
};

static int add_worker(const struct pool_worker_info *w, void *ud)
{
	struct worker_q *q = ud;
	cJSON *o;

	if (q->only && w->pid != q->only)
		return 0;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "spec", w->spec);
	cJSON_AddStringToObject(o, "python", w->python);
	cJSON_AddStringToObject(o, "version", w->version);
	cJSON_AddStringToObject(o, "tag", w->tag);
	cJSON_AddNumberToObject(o, "pid", w->pid);
	cJSON_AddStringToObject(o, "state", w->state);
	cJSON_AddNumberToObject(o, "jobs", (double)w->jobs);
	cJSON_AddNumberToObject(o, "queued", w->queued);
	cJSON_AddNumberToObject(o, "rss_kb", w->pid > 0 ? rss_kb(w->pid) : 0);
	cJSON_AddNumberToObject(o, "idle_s", w->idle_s);
	cJSON_AddNumberToObject(o, "start_ms", w->start_ms);
	cJSON_AddStringToObject(o, "started_by", w->started_by);
	cJSON_AddBoolToObject(o, "once", w->once);
	cJSON_AddBoolToObject(o, "pinned", w->pinned);
	cJSON_AddNumberToObject(o, "max_memory_mb", w->max_memory_mb);
	cJSON_AddNumberToObject(o, "last_used", w->last_used);
	if (!q->into) {
		q->into = o;
		return 1;
	}
	cJSON_AddItemToArray(q->into, o);
	return 0;
}

int core_each_worker(struct core *c, int (*cb)(const struct pool_worker_info *w, void *ud),
		     void *ud)
{
	return pool_each_worker(c->pool, cb, ud);
}

cJSON *core_workers_json(struct core *c)
{
	struct worker_q q = { .into = cJSON_CreateArray() };

	pool_each_worker(c->pool, add_worker, &q);
	return q.into;
}

cJSON *core_worker_json(struct core *c, pid_t pid)
{
	struct worker_q q = { .into = NULL, .only = pid };

	if (pid <= 0)
		return NULL;
	pool_each_worker(c->pool, add_worker, &q);
	return q.into;
}

cJSON *core_pythons_json(struct core *c)
{
	static const char *src[] = { "config", "pyenv", "path", "explicit" };
	const struct interp_set *set = c->ctx.py;
	cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; i < set->n; i++) {
		const struct interp *it = &set->v[i];
		char name[16];
		cJSON *o = cJSON_CreateObject();

		snprintf(name, sizeof name, "%d.%d", it->major, it->minor);
		cJSON_AddStringToObject(o, "name", name);
		cJSON_AddStringToObject(o, "version", it->version);
		cJSON_AddStringToObject(o, "path", it->path);
		cJSON_AddStringToObject(o, "tag", it->tag);
		cJSON_AddStringToObject(o, "source", it->source >= 0 && it->source < 4 ? src[it->source] : "?");
		cJSON_AddBoolToObject(o, "default", (int)i == set->default_idx);
		/* Which entry the short name means, so the user sees the choice. */
		cJSON_AddBoolToObject(o, "short_name_target", interp_is_short_target(set, i));
		cJSON_AddItemToArray(a, o);
	}
	return a;
}
