/*
 * worker.c - a worker's life (see worker.h).
 *
 * The death of a worker is noticed twice, by EOF on its channel and by its
 * exit status; its job is failed when the status is known (or, after a
 * short grace, once it has been killed), so the reason given is exact.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cgroup.h"
#include "logx.h"
#include "omnipkg.h"
#include "proto.h"
#include "shm.h"
#include "worker.h"

#define DEATH_GRACE 2.0     /* seconds between EOF and killing a worker that did not exit */
#define SPAWN_TIMEOUT 30.0  /* seconds a new worker may take to say "ready" */

static const char *state_names[] = { "starting", "idle", "busy", "dead" };

static void worker_io(struct loop *l, int fd, uint32_t ev, void *ud);
static void worker_dispatch(struct worker *w);

const char *worker_state_name(int state)
{
	return state >= 0 && state <= W_DEAD ? state_names[state] : "?";
}

static void finish(struct worker *w, struct job *j, cJSON *reply)
{
	if (!job_finish(j, reply, w))
		w->env->cnt->jobs_failed++;
}

/* Kills the worker and everything it started. */
static void worker_kill(struct worker *w)
{
	if (w->cgroup[0])
		cgroup_kill(w->cgroup);
	if (w->pid > 0 && !w->reaped) {
		if (!w->cgroup[0])
			w->env->cnt->leftovers_killed += proc_kill_descendants(w->pid);
		kill(-w->pid, SIGKILL);
		kill(w->pid, SIGKILL);
	}
}

static void worker_close_channel(struct worker *w)
{
	if (w->fd >= 0) {
		loop_del(w->env->loop, w->fd);
		close(w->fd);
		w->fd = -1;
	}
	chan_free(&w->ch);
}

void worker_free(struct worker *w)
{
	spawner_wait_cancel(w->zwait);
	w->zwait = NULL;
	loop_timer_cancel(w->env->loop, w->tmo);
	worker_close_channel(w);
	if (w->cg_procs >= 0)
		close(w->cg_procs);
	if (w->cgroup[0]) {
		cgroup_kill(w->cgroup);
		if (cgroup_remove(w->cgroup) < 0)
			logx(LOGX_DEBUG, "cgroup %s not removed yet", w->cgroup);
	}
	w->env->gone(w->env->ud, w);
	cJSON_Delete(w->paths);
	free(w->mapped);
	free(w);
}

static void fail_queue(struct worker *w, int reason, const char *why)
{
	while (w->qhead) {
		struct job *j = w->qhead;

		w->qhead = j->next;
		finish(w, j, proto_reply_error(ECHILD, reason, "%s", why));
	}
	w->qtail = NULL;
	w->qlen = 0;
}

/* Takes w's queue off it, in order. */
static struct job *take_queue(struct worker *w)
{
	struct job *q = w->qhead;

	w->qhead = w->qtail = NULL;
	w->qlen = 0;
	return q;
}

/* Gives the jobs of q back to the pool, in order (the worker that held
 * them may be gone: env is the pool's). */
static void requeue_list(const struct wenv *env, struct job *q)
{
	while (q) {
		struct job *n = q->next;

		q->next = NULL;
		env->requeue(env->ud, q);
		q = n;
	}
}

static void requeue_all(struct worker *w)
{
	requeue_list(w->env, take_queue(w));
}

static void worker_grace_expired(struct loop *l, void *ud);

/* Closes the channel and waits (bounded) for the exit status. */
static void worker_await_exit(struct worker *w)
{
	w->state = W_DEAD;
	worker_close_channel(w);
	loop_timer_cancel(w->env->loop, w->tmo);
	w->tmo = loop_timer_add(w->env->loop, DEATH_GRACE, worker_grace_expired, w);
}

static void worker_spawn_failed(struct worker *w, const char *why)
{
	char msg[2048];

	snprintf(msg, sizeof msg, "worker for %s on python %s could not start: %s",
		 w->spec, w->py.version, why);
	logx(LOGX_WARN, "%s", msg);
	fail_queue(w, OMNI_REASON_SPAWN, msg);
	if (w->pid > 0 && !w->reaped) {
		worker_kill(w);
		worker_await_exit(w);
		return;   /* freed when reaped */
	}
	worker_free(w);
}

static void zygote_failed(void *ud, const char *why)
{
	struct worker *w = ud;

	w->zwait = NULL;
	if (why)
		worker_spawn_failed(w, why);
}

/* The worker is gone (status known, or killed after the grace): settle its jobs. */
static void worker_settle(struct worker *w)
{
	char why[256];

	if (!w->reaped)
		snprintf(why, sizeof why, "worker %d closed its channel and did not exit; killed",
			 (int)w->pid);
	else if (WIFSIGNALED(w->status))
		snprintf(why, sizeof why, "worker %d killed by signal %d (%s)", (int)w->pid,
			 WTERMSIG(w->status), strsignal(WTERMSIG(w->status)));
	else
		snprintf(why, sizeof why, "worker %d exited with code %d", (int)w->pid,
			 WEXITSTATUS(w->status));

	if (w->cur) {
		int sig = w->reaped && WIFSIGNALED(w->status);
		/* The kernel's OOM killer, for the limit the job set: not a crash. */
		int oom = sig && w->mem_cgroup && w->oom_base >= 0 &&
			  cgroup_oom_kills(w->cgroup) > w->oom_base;
		cJSON *r = oom ? proto_reply_error(ENOMEM, OMNI_REASON_MEMORY,
						 "the worker exceeded its %g MiB memory limit "
						 "and was killed (%s)", w->max_memory_mb, why)
			       : proto_reply_error(0, sig ? OMNI_REASON_SIGNAL : OMNI_REASON_EXIT,
						 "%s", why);

		if (sig)
			cJSON_AddNumberToObject(r, "signal", WTERMSIG(w->status));
		else if (w->reaped)
			cJSON_AddNumberToObject(r, "exit_code", WEXITSTATUS(w->status));
		w->env->cnt->crashes += !oom;
		logx(LOGX_WARN, "%s during a job on %s%s", why, w->spec,
		     oom ? ": over its memory limit" : "");
		finish(w, w->cur, r);
		w->cur = NULL;
	}
	/* A worker that never got ready would fail again; one that ran jobs
	 * (its first one included) leaves its queue to a new worker. */
	if (!w->ever_ready)
		fail_queue(w, OMNI_REASON_SPAWN, why);
	else
		requeue_all(w);
	worker_free(w);
}

static void worker_grace_expired(struct loop *l, void *ud)
{
	struct worker *w = ud;

	w->tmo = NULL;
	if (w->pid > 0 && !w->reaped) {
		/* A lost worker is killed, never left running. */
		logx(LOGX_WARN, "worker %d did not exit after closing its channel: killed", (int)w->pid);
		worker_kill(w);
	}
	worker_settle(w);
}

void worker_reaped(struct worker *w, int status)
{
	w->reaped = 1;
	w->status = status;
	loop_timer_cancel(w->env->loop, w->tmo);
	w->tmo = NULL;
	worker_close_channel(w);
	worker_settle(w);   /* a timed-out one has no job left to fail */
}

/* EOF or a broken channel: wait briefly for the exit status. */
static void worker_lost(struct worker *w)
{
	if (w->pid > 0 && !w->reaped) {
		worker_await_exit(w);
		return;
	}
	worker_settle(w);
}

/* Ends the running job with reason (timeout or cancel): the worker and all
 * it started are killed, the rest of the queue goes to a new worker. */
static void worker_abort(struct worker *w, cJSON *reply)
{
	struct job *j = w->cur;

	w->cur = NULL;
	worker_kill(w);
	finish(w, j, reply);
	w->state = W_DEAD;
	requeue_all(w);
	worker_await_exit(w);
}

static void worker_timeout(struct loop *l, void *ud)
{
	struct worker *w = ud;
	struct job *j = w->cur;

	w->tmo = NULL;
	if (!j)
		return;
	w->env->cnt->timeouts++;
	logx(LOGX_WARN, "job %llu on %s timed out after %g s; worker %d killed",
	     (unsigned long long)j->id, w->spec, j->timeout, (int)w->pid);
	worker_abort(w, proto_reply_error(ETIMEDOUT, OMNI_REASON_TIMEOUT,
				       "timeout: the job ran longer than %g s; its worker was killed",
				       j->timeout));
}

int worker_cancel(struct worker *w, uint64_t id)
{
	struct job **pp, *prev = NULL;

	if (w->cur && w->cur->id == id && w->state == W_BUSY) {
		w->env->cnt->cancelled++;
		loop_timer_cancel(w->env->loop, w->tmo);
		w->tmo = NULL;
		worker_abort(w, proto_reply_error(ECANCELED, OMNI_REASON_CANCELLED,
					       "cancelled while running; its worker was killed"));
		return 1;
	}
	for (pp = &w->qhead; *pp; prev = *pp, pp = &(*pp)->next) {
		struct job *j = *pp;

		if (j->id != id)
			continue;
		*pp = j->next;
		if (w->qtail == j)
			w->qtail = prev;
		w->qlen--;
		w->env->cnt->cancelled++;
		finish(w, j, proto_reply_error(ECANCELED, OMNI_REASON_CANCELLED, "cancelled before it ran"));
		return 1;
	}
	return 0;
}

static void worker_on_ready(struct worker *w, cJSON *m)
{
	pid_t pid = (pid_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "pid"));

	if (w->pid <= 0)
		w->pid = pid;
	w->start_ms = (loop_now() - w->t_spawn) * 1000;
	w->state = W_IDLE;
	w->ever_ready = 1;
	loop_timer_cancel(w->env->loop, w->tmo);
	w->tmo = NULL;
	if (w->cgroup[0] && (cgroup_add(w->cgroup, w->pid) < 0 ||
			     (w->cg_procs = cgroup_open_procs(w->cgroup)) < 0)) {
		logx(LOGX_WARN, "worker %d: cannot join %s; its children are tracked through /proc",
		     (int)w->pid, w->cgroup);
		w->cg_procs = -1;
		cgroup_kill(w->cgroup);
		cgroup_remove(w->cgroup);
		w->cgroup[0] = 0;
	}
	logx(LOGX_INFO, "worker %d for %s on python %s ready in %.1f ms (%s)", (int)w->pid,
	     w->spec, w->py.version, w->start_ms, w->via_zygote ? "zygote fork" : "fresh");
	worker_dispatch(w);
}

/*
 * A result that is an array came back in a segment: one the job was given,
 * or a new one the worker made ("r<job id>-..."), which is adopted for the
 * job's client.  Anything else, or a new one over the quota, fails the job.
 * Returns the reply to send (m, or a failed one in its place).
 */
static cJSON *take_result_array(struct worker *w, struct job *j, cJSON *m)
{
	cJSON *ra = cJSON_GetObjectItemCaseSensitive(m, "result_array");
	const char *seg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ra, "segment"));
	struct shm_info info;
	char prefix[32], path[SHM_PATH_MAX];
	int r = -EINVAL;

	snprintf(prefix, sizeof prefix, "r%llu-", (unsigned long long)j->id);
	if (!w->env->shm || !seg || !shm_name_ok(seg)) {
		r = -EINVAL;
	} else if (shm_stat(w->env->shm, seg, &info) == 0) {
		r = job_has_segment(j, info.id) ? 0 : -EPERM;
	} else if (strncmp(seg, prefix, strlen(prefix)) == 0) {
		r = shm_adopt(w->env->shm, seg, j->owner, &info);
		if (r == 0)
			shm_set_meta(w->env->shm, seg, cJSON_GetStringValue(
				cJSON_GetObjectItemCaseSensitive(ra, "dtype")), NULL);
	}
	if (r == 0) {
		shm_path(w->env->shm, seg, path, sizeof path);
		cJSON_DeleteItemFromObjectCaseSensitive(ra, "path");
		cJSON_AddStringToObject(ra, "path", path);
		cJSON_DeleteItemFromObjectCaseSensitive(ra, "size");
		cJSON_AddNumberToObject(ra, "size", (double)info.size);
		return m;
	}
	logx(LOGX_WARN, "job %llu: result array in segment \"%s\" refused: %s",
	     (unsigned long long)j->id, seg ? seg : "?", strerror(-r));
	{
		cJSON *f = proto_reply_error(-r, r == -EDQUOT || r == -ENOSPC ? OMNI_REASON_QUOTA :
					     OMNI_REASON_EXCEPTION,
					     r == -EDQUOT || r == -ENOSPC ?
					     "the result array does not fit in the shared memory quota" :
					     "the worker returned its result array in a segment it was not given");
		const char *keep[] = { "stdout", "stderr", "stdout_bytes", "stderr_bytes",
				       "stdout_truncated", "stderr_truncated", "duration" };

		for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
			cJSON *it = cJSON_DetachItemFromObjectCaseSensitive(m, keep[i]);

			if (it)
				cJSON_AddItemToObject(f, keep[i], it);
		}
		cJSON_Delete(m);
		return f;
	}
}

/* A job that failed with MemoryError on a worker with a limit went over
 * the limit (RLIMIT_AS makes the allocation fail): reason "memory", and
 * the worker goes on. */
static void over_limit(struct worker *w, cJSON *m)
{
	const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "error"));
	char msg[512];
	size_t n;

	if (w->max_memory_mb <= 0 || !e || strncmp(e, "MemoryError", 11) != 0)
		return;
	n = strlen(e);
	while (n > 11 && (e[n - 1] == ' ' || e[n - 1] == ':'))
		n--;
	snprintf(msg, sizeof msg, "the worker exceeded its %g MiB memory limit (%.*s)",
		 w->max_memory_mb, (int)(n > 256 ? 256 : n), e);
	cJSON_DeleteItemFromObjectCaseSensitive(m, "error");
	cJSON_DeleteItemFromObjectCaseSensitive(m, "reason");
	cJSON_DeleteItemFromObjectCaseSensitive(m, "errno");
	cJSON_AddStringToObject(m, "error", msg);
	cJSON_AddNumberToObject(m, "errno", ENOMEM);
	cJSON_AddStringToObject(m, "reason", omni_reason_name(OMNI_REASON_MEMORY));
}

static void worker_on_done(struct worker *w, cJSON *m)
{
	struct job *j = w->cur;
	cJSON *ok;

	if (!j || (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "id")) != j->id) {
		logx(LOGX_WARN, "worker %d answered a job it was not given; killed", (int)w->pid);
		cJSON_Delete(m);
		worker_kill(w);
		return;
	}
	loop_timer_cancel(w->env->loop, w->tmo);
	w->tmo = NULL;
	w->cur = NULL;
	w->jobs++;
	w->last_used = loop_now();
	w->state = W_IDLE;
	/* Nothing a job starts outlives it. */
	if (w->cg_procs >= 0) {
		int n = cgroup_kill_others(w->cg_procs, w->pid);

		if (n > 0) {
			w->env->cnt->leftovers_killed += n;
			logx(LOGX_INFO, "job %llu left %d process(es) running: killed",
			     (unsigned long long)j->id, n);
		}
	}
	cJSON_DeleteItemFromObjectCaseSensitive(m, "op");
	cJSON_DeleteItemFromObjectCaseSensitive(m, "id");
	if (cJSON_GetObjectItemCaseSensitive(m, "result_array"))
		m = take_result_array(w, j, m);
	ok = cJSON_GetObjectItemCaseSensitive(m, "ok");
	if (!cJSON_IsBool(ok)) {
		cJSON_DeleteItemFromObjectCaseSensitive(m, "ok");
		cJSON_AddBoolToObject(m, "ok", 0);
	}
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "ok")))
		over_limit(w, m);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "ok")) &&
	    !cJSON_GetObjectItemCaseSensitive(m, "reason"))
		cJSON_AddStringToObject(m, "reason", omni_reason_name(OMNI_REASON_EXCEPTION));
	finish(w, j, m);
	if (w->evicting) {
		const struct wenv *env = w->env;
		struct job *q = take_queue(w);

		logx(LOGX_INFO, "worker %d (%s) evicted: stopped after its job", (int)w->pid, w->spec);
		worker_retire(w);
		requeue_list(env, q);
	} else if (w->once && !w->qhead) {
		worker_retire(w);
	} else {
		worker_dispatch(w);
	}
}

static void worker_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct worker *w = ud;
	const char *pl;
	size_t len;
	long n = 0;
	int r;

	if (ev & EPOLLOUT) {
		r = chan_flush(&w->ch);
		if (r <= 0)
			loop_mod(l, fd, EPOLLIN);
	}
	r = chan_fill(&w->ch);
	while (w->fd >= 0 && (n = chan_frame(&w->ch, &pl, &len)) > 0) {
		cJSON *m = cJSON_ParseWithLength(pl, len);
		const char *op = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "op"));

		chan_drop(&w->ch, n);
		if (op && strcmp(op, "done") == 0 && w->state == W_BUSY) {
			worker_on_done(w, m);   /* takes m; may retire w */
			continue;
		}
		if (op && strcmp(op, "ready") == 0 && w->state == W_SPAWNING) {
			worker_on_ready(w, m);
			cJSON_Delete(m);
			continue;
		}
		cJSON_Delete(m);
		logx(LOGX_WARN, "worker %d broke the protocol; killed", (int)w->pid);
		worker_kill(w);
		n = -EBADMSG;
		break;
	}
	if (w->fd >= 0 && (r < 0 || n < 0))
		worker_lost(w);
}

/* Remembers the segments a job's arrays make the worker map. */
static void note_mapped(struct worker *w, const cJSON *arrays)
{
	const cJSON *a;

	cJSON_ArrayForEach(a, arrays) {
		uint64_t id = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(a, "id"));
		int i;

		for (i = 0; i < w->nmapped && w->mapped[i] != id; i++)
			;
		if (i < w->nmapped)
			continue;
		if (w->nmapped == w->capmapped) {
			int cap = w->capmapped ? w->capmapped * 2 : 16;
			uint64_t *v = realloc(w->mapped, (size_t)cap * sizeof *v);

			if (!v)
				return;   /* it is only told to unmap fewer */
			w->mapped = v;
			w->capmapped = cap;
		}
		w->mapped[w->nmapped++] = id;
	}
}

void worker_segment_gone(struct worker *w, uint64_t id)
{
	cJSON *m, *ids;

	for (int i = 0; i < w->nmapped; i++) {
		if (w->mapped[i] != id)
			continue;
		w->mapped[i] = w->mapped[--w->nmapped];
		if (w->fd < 0 || w->state == W_DEAD)
			return;
		m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "op", "unmap");
		ids = cJSON_AddArrayToObject(m, "ids");
		cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)id));
		if (chan_send(&w->ch, m) == 0 && chan_pending(&w->ch))
			loop_mod(w->env->loop, w->fd, EPOLLIN | EPOLLOUT);
		cJSON_Delete(m);
		return;
	}
}

/* Limits w's memory to mb MiB: in its cgroup where the memory controller
 * is, else with RLIMIT_AS (the soft limit: a worker may not raise its own
 * hard limit back, and neither may a daemon without privileges).  0 or
 * -errno. */
static int worker_limit_memory(struct worker *w, double mb)
{
	uint64_t bytes = (uint64_t)(mb * 1048576.0);
	struct rlimit rl;

	if (bytes < 4096)
		bytes = 4096;
	/* The count before any limit of ours: lowering it may be what kills
	 * the worker.  Read here, not at every job (a file read per job). */
	if (w->cgroup[0] && !w->mem_cgroup)
		w->oom_base = cgroup_oom_kills(w->cgroup);
	if (w->cgroup[0] && cgroup_set_memory_max(w->cgroup, bytes) == 0) {
		w->mem_cgroup = 1;
	} else {
		if (prlimit(w->pid, RLIMIT_AS, NULL, &rl) < 0)
			return -errno;
		rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < bytes ? rl.rlim_max : bytes;
		if (prlimit(w->pid, RLIMIT_AS, &rl, NULL) < 0)
			return -errno;
		w->mem_cgroup = 0;
	}
	logx(LOGX_INFO, "worker %d (%s): memory limited to %g MiB (%s)", (int)w->pid, w->spec, mb,
	     w->mem_cgroup ? "cgroup memory.max" : "RLIMIT_AS");
	w->max_memory_mb = mb;
	return 0;
}

/* The next queued job, its worker's memory limited as it asks; a job
 * whose limit cannot be set fails here.  NULL when none is left. */
static struct job *next_job(struct worker *w)
{
	struct job *j;
	int r;

	while ((j = w->qhead)) {
		w->qhead = j->next;
		if (!w->qhead)
			w->qtail = NULL;
		w->qlen--;
		j->next = NULL;
		if (j->max_memory_mb <= 0 || j->max_memory_mb == w->max_memory_mb ||
		    (r = worker_limit_memory(w, j->max_memory_mb)) == 0)
			return j;
		logx(LOGX_WARN, "worker %d: cannot limit its memory: %s", (int)w->pid, strerror(-r));
		finish(w, j, proto_reply_error(-r, OMNI_REASON_SPAWN, "cannot limit the worker's "
					       "memory to %g MiB: %s", j->max_memory_mb, strerror(-r)));
	}
	return NULL;
}

static void worker_dispatch(struct worker *w)
{
	struct job *j;
	cJSON *m;
	int r;

	if (w->state != W_IDLE || !w->qhead || w->fd < 0)
		return;
	if (!(j = next_job(w)))
		return;
	w->cur = j;
	if (!w->first_job)
		w->first_job = j->id;
	w->state = W_BUSY;
	j->t_start = loop_now();
	m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "op", "exec");
	proto_set_id(m, j->id);
	cJSON_AddStringToObject(m, "code", j->code);
	cJSON_AddNumberToObject(m, "cap", (double)w->env->cfg->output_cap);
	if (j->arrays) {
		cJSON_AddItemReferenceToObject(m, "arrays", j->arrays);
		note_mapped(w, j->arrays);
	}
	if (j->bind)
		cJSON_AddItemReferenceToObject(m, "bind", j->bind);
	if (w->env->shm)
		cJSON_AddStringToObject(m, "shm_dir", shm_dir(w->env->shm));
	if (j->nfds)
		cJSON_AddItemReferenceToObject(m, "fds", j->fds_desc);
	r = chan_send_fds(&w->ch, m, j->fds, j->nfds);
	cJSON_Delete(m);
	if (r < 0) {
		worker_kill(w);
		worker_lost(w);
		return;
	}
	if (chan_pending(&w->ch))
		loop_mod(w->env->loop, w->fd, EPOLLIN | EPOLLOUT);
	w->tmo = loop_timer_add(w->env->loop, j->timeout, worker_timeout, w);
}

void worker_enqueue(struct worker *w, struct job *j)
{
	j->next = NULL;
	if (w->qtail)
		w->qtail->next = j;
	else
		w->qhead = j;
	w->qtail = j;
	w->qlen++;
	worker_dispatch(w);
}

pid_t worker_evict(struct worker *w)
{
	const struct wenv *env = w->env;
	pid_t pid = w->pid > 0 ? w->pid : 0;
	struct job *q;

	if (w->state == W_DEAD)
		return 0;
	if (w->state == W_BUSY) {
		/* Its queue stays: later jobs queue behind it and all move on
		 * together, in order, once the job is done. */
		w->evicting = 1;
		return pid;
	}
	q = take_queue(w);
	logx(LOGX_INFO, "worker %d (%s) evicted", (int)w->pid, w->spec);
	worker_retire(w);
	requeue_list(env, q);
	return pid;
}

void worker_retire(struct worker *w)
{
	if (w->pid > 0 && !w->reaped) {
		kill(-w->pid, SIGTERM);
		worker_await_exit(w);
	} else {
		w->state = W_DEAD;
		worker_close_channel(w);
		worker_free(w);
	}
}

void worker_shutdown(struct worker *w)
{
	struct job *j = w->cur;

	w->cur = NULL;
	if (j)
		finish(w, j, proto_reply_error(ESHUTDOWN, OMNI_REASON_SHUTDOWN, "the daemon is shutting down"));
	fail_queue(w, OMNI_REASON_SHUTDOWN, "the daemon is shutting down");
	worker_kill(w);
	w->state = W_DEAD;
	worker_close_channel(w);
	loop_timer_cancel(w->env->loop, w->tmo);
	w->tmo = NULL;
}

/* A worker that never says "ready" (a hung interpreter or zygote) must
 * not hold its queue forever. */
static void worker_spawn_timeout(struct loop *l, void *ud)
{
	struct worker *w = ud;

	w->tmo = NULL;
	worker_spawn_failed(w, "not ready after 30 s");
}

struct worker *worker_new(const struct wenv *env, uint64_t serial, const char *spec,
			  const struct interp *py, const char *tag, char paths[][4096], int n,
			  int once)
{
	struct worker *w = calloc(1, sizeof *w);
	int sv[2], r = -EAGAIN;

	if (!w)
		return NULL;
	w->env = env;
	w->serial = serial;
	w->fd = -1;
	w->cg_procs = -1;
	snprintf(w->spec, sizeof w->spec, "%s", spec);
	snprintf(w->tag, sizeof w->tag, "%s", tag ? tag : "");
	w->py = *py;
	w->once = once;
	w->paths = cJSON_CreateArray();
	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(w->paths, cJSON_CreateString(paths[i]));
	w->t_spawn = w->last_used = loop_now();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		cJSON_Delete(w->paths);
		free(w);
		return NULL;
	}
	w->fd = sv[0];
	fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
	chan_init(&w->ch, w->fd, PROTO_MAX_FRAME);
	loop_add(env->loop, w->fd, EPOLLIN, worker_io, w);
	env->cnt->spawned++;
	w->tmo = loop_timer_add(env->loop, SPAWN_TIMEOUT, worker_spawn_timeout, w);
	if (env->cgroup_base[0]) {
		char name[32];

		snprintf(name, sizeof name, "w%llu", (unsigned long long)serial);
		if (cgroup_make(env->cgroup_base, name, w->cgroup, sizeof w->cgroup) < 0)
			w->cgroup[0] = 0;
	}
	if (env->cfg->zygote) {
		r = spawner_fork(env->spawner, py, sv[1], w->paths, w->tag, zygote_failed, w, &w->zwait);
		w->via_zygote = r == 0;
	}
	if (r < 0 && (r = spawner_exec(env->spawner, py, sv[1], w->paths, &w->pid)) < 0) {
		logx(LOGX_WARN, "cannot start a worker for %s: %s", spec, strerror(-r));
		worker_free(w);
		errno = -r;
		return NULL;
	}
	return w;
}
