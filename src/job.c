/*
 * job.c - jobs and their replies (see job.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chan.h"
#include "job.h"
#include "loop.h"
#include "arrays.h"
#include "omnipkg.h"
#include "shm.h"
#include "worker.h"

static char *dup_or_null(const char *s, int *failed)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*failed = 1;
	return d;
}

struct job *job_new(uint64_t id, const struct job_req *r, double timeout, job_done_cb cb, void *ud)
{
	struct job *j = calloc(1, sizeof *j);
	int failed = 0;

	if (!j) {
		chan_close_fds(r->fds, r->nfds);
		return NULL;
	}
	/* The job's from here on (closed by job_free): a job requeued after
	 * its worker crashed still has them for the next worker. */
	for (int i = 0; i < r->nfds && i < JOB_MAX_FDS; i++)
		j->fds[j->nfds++] = r->fds[i];
	/* Evict and idle_config route an interpreter and a tag alone: the
	 * spec an evict stops may have no bubble any more. */
	if (r->kind != JOB_KIND_EXEC) {
		j->target = dup_or_null(r->spec, &failed);
		j->spec = dup_or_null("base", &failed);
	} else {
		j->spec = dup_or_null(r->spec ? r->spec : "", &failed);
	}
	j->python = dup_or_null(r->python, &failed);
	j->code = dup_or_null(r->code ? r->code : "", &failed);
	j->tag = dup_or_null(r->tag ? r->tag : "", &failed);
	if (r->bind && !(j->bind = cJSON_Duplicate(r->bind, 1)))
		failed = 1;
	if (r->nfds > 0 && (r->nfds > JOB_MAX_FDS || !r->fds_desc ||
			    !(j->fds_desc = cJSON_Duplicate(r->fds_desc, 1))))
		failed = 1;
	if (failed) {
		job_free(j);
		return NULL;
	}
	j->id = id;
	j->kind = r->kind;
	j->owner = r->owner;
	j->timeout = timeout;
	j->once = r->once;
	j->pin = r->pin;
	j->max_memory_mb = r->max_memory_mb;
	j->idle_count = r->idle_count;
	j->t_submit = loop_now();
	j->cb = cb;
	j->ud = ud;
	return j;
}

struct job_req job_as_req(const struct job *j)
{
	return (struct job_req){ .kind = j->kind, .spec = j->kind != JOB_KIND_EXEC ? j->target : j->spec,
				 .python = j->python, .code = j->code, .tag = j->tag,
				 .timeout = j->timeout, .once = j->once, .pin = j->pin,
				 .max_memory_mb = j->max_memory_mb, .idle_count = j->idle_count };
}

int job_finish(struct job *j, cJSON *reply, const struct worker *w)
{
	int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"));

	/* Before the reply: its reader may remove the segments at once, and
	 * count the descriptors it sent. */
	job_release(j);
	chan_close_fds(j->fds, j->nfds);
	j->nfds = 0;

	if (j->kind != JOB_KIND_EXEC) {
		j->cb(reply, j->ud);
		job_free(j);
		return ok;
	}
	if (!cJSON_GetObjectItemCaseSensitive(reply, "stdout"))
		cJSON_AddStringToObject(reply, "stdout", "");
	if (!cJSON_GetObjectItemCaseSensitive(reply, "stderr"))
		cJSON_AddStringToObject(reply, "stderr", "");
	if (w) {
		cJSON_AddStringToObject(reply, "spec", w->spec);
		cJSON_AddStringToObject(reply, "python", w->py.path);
		cJSON_AddStringToObject(reply, "python_version", w->py.version);
		if (w->tag[0])
			cJSON_AddStringToObject(reply, "tag", w->tag);
		if (w->pid > 0)
			cJSON_AddNumberToObject(reply, "worker_pid", w->pid);
		if (w->start_ms > 0 && w->first_job == j->id) {
			/* This job waited for its worker to start: say how long. */
			cJSON_AddNumberToObject(reply, "worker_start_ms", w->start_ms);
			cJSON_AddStringToObject(reply, "started_by", w->via_zygote ? "zygote" : "exec");
		}
	}
	if (!cJSON_GetObjectItemCaseSensitive(reply, "duration"))
		cJSON_AddNumberToObject(reply, "duration", j->t_start ? loop_now() - j->t_start : 0);
	cJSON_AddNumberToObject(reply, "wall", loop_now() - j->t_submit);
	j->cb(reply, j->ud);
	job_free(j);
	return ok;
}

static int lease_one(struct job *j, const char *name, uint64_t owner, struct shm_info *info,
		     char *err, size_t errlen)
{
	if (shm_lease(j->shm, name, info) < 0) {
		snprintf(err, errlen, "no shared segment named \"%.128s\"", name);
		return -ENOENT;
	}
	j->leases[j->nleases++] = info->id;
	if (info->owner && info->owner != owner) {
		snprintf(err, errlen, "segment \"%.128s\" belongs to another client", name);
		return -ENOENT;
	}
	return 0;
}

static cJSON *ints(const int64_t *v, int n)
{
	cJSON *a = cJSON_CreateArray();

	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
	return a;
}

/* The view as the worker maps it. */
static cJSON *worker_view(const struct array_desc *d, const struct shm_info *info,
			  const struct shm *shm)
{
	cJSON *o = cJSON_CreateObject();
	char path[SHM_PATH_MAX];

	shm_path(shm, d->segment, path, sizeof path);
	cJSON_AddStringToObject(o, "name", d->name);
	cJSON_AddStringToObject(o, "segment", d->segment);
	cJSON_AddStringToObject(o, "path", path);
	cJSON_AddNumberToObject(o, "id", (double)info->id);
	cJSON_AddNumberToObject(o, "gen", info->gen);
	cJSON_AddNumberToObject(o, "size", (double)info->size);
	cJSON_AddStringToObject(o, "dtype", d->dtype);
	cJSON_AddItemToObject(o, "shape", ints(d->shape, d->ndim));
	cJSON_AddItemToObject(o, "strides", ints(d->strides, d->ndim));
	cJSON_AddNumberToObject(o, "offset", (double)d->offset);
	cJSON_AddStringToObject(o, "access", arrays_access_name(d->access));
	return o;
}

int job_lease(struct job *j, struct shm *shm, const struct job_req *r, char *err, size_t errlen)
{
	struct shm_info info;
	int rc = 0;

	if (r->nsegments + r->narrays > JOB_MAX_LEASES) {
		snprintf(err, errlen, "a job may use at most %d segments", JOB_MAX_LEASES);
		return -E2BIG;
	}
	j->shm = shm;
	for (int i = 0; i < r->nsegments && rc == 0; i++)
		rc = lease_one(j, r->segments[i], r->owner, &info, err, errlen);
	if (rc == 0 && r->narrays > 0 && !(j->arrays = cJSON_CreateArray()))
		rc = -ENOMEM;
	for (int i = 0; i < r->narrays && rc == 0; i++) {
		const struct array_desc *d = &r->arrays[i];

		rc = lease_one(j, d->segment, r->owner, &info, err, errlen);
		if (rc == 0 && arrays_fit(d, (uint64_t)info.size, err, errlen) < 0)
			rc = -EINVAL;
		if (rc == 0)
			cJSON_AddItemToArray(j->arrays, worker_view(d, &info, shm));
	}
	if (rc < 0) {
		job_release(j);
		cJSON_Delete(j->arrays);
		j->arrays = NULL;
	}
	return rc;
}

int job_has_segment(const struct job *j, uint64_t id)
{
	for (int i = 0; i < j->nleases; i++)
		if (j->leases[i] == id)
			return 1;
	return 0;
}

void job_release(struct job *j)
{
	while (j->nleases > 0)
		shm_release(j->shm, j->leases[--j->nleases]);
}

void job_free(struct job *j)
{
	if (!j)
		return;
	job_release(j);
	cJSON_Delete(j->arrays);
	cJSON_Delete(j->bind);
	cJSON_Delete(j->fds_desc);
	chan_close_fds(j->fds, j->nfds);
	j->nfds = 0;
	free(j->spec);
	free(j->target);
	free(j->python);
	free(j->code);
	free(j->tag);
	free(j);
}
