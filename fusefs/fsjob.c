/*
 * fsjob.c - jobs of the control filesystem, their contexts and the reads
 * that wait for them (see job.h).
 *
 *   j = fsjobs_submit(js, "base", "/usr/bin/python3.11", "print(1)", 8);
 *   fsjobs_defer_read(js, j, req, JF_STDOUT, 0, 4096);   -> answered "1\n" later
 *   fsjob_unref(j);
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fsjob.h"
#include "logx.h"
#include "proto.h"

struct waiter {
	fuse_req_t req;
	struct fsjob *job;               /* referenced */
	int file;
	size_t pos, size;
	int interrupted;
	struct waiter *next, *prev;
};

struct jctx {
	char *spec, *py;
	struct fsjob *latest;            /* referenced, or NULL */
	uint64_t used;
};

struct fsjobs {
	struct core *core;
	struct fsjob *ring[JOBS_RING];   /* by id % JOBS_RING */
	uint64_t next_id;
	struct jctx ctx[JOBS_MAX_CONTEXTS];
	size_t nctx;
	uint64_t clock;
	struct waiter *waiters;
	size_t nwaiters;
	int interrupted;
	struct fsjob *all;               /* every live job, to detach them at the end */
	size_t held, keep;             /* bytes of output kept by live jobs */
	uint64_t submitted, finished, failed, deferred, interrupts;
};

static const char *no_job[JF_N] = {
	[JF_EXEC] = "", [JF_CODE] = "", [JF_STDOUT] = "", [JF_STDERR] = "",
	[JF_RESULT] = "{}\n", [JF_STATUS] = "idle\n", [JF_ERROR] = "",
};
static const char *state_text[] = { "running\n", "done\n", "failed\n" };

static size_t fsjob_held(const struct fsjob *j)
{
	size_t n = 0;

	for (int f = 0; f < JF_N; f++)
		n += j->len[f];
	return n;
}

void fsjob_ref(struct fsjob *j)
{
	j->refs++;
}

void fsjob_unref(struct fsjob *j)
{
	if (!j || --j->refs > 0)
		return;
	if (j->js) {
		j->js->held -= fsjob_held(j);
		if (j->prev)
			j->prev->next = j->next;
		else
			j->js->all = j->next;
		if (j->next)
			j->next->prev = j->prev;
	}
	for (int i = 0; i < j->nph; i++)
		fuse_pollhandle_destroy(j->ph[i]);
	for (int f = 0; f < JF_N; f++)
		free(j->text[f]);
	free(j->spec);
	free(j->py);
	free(j);
}

int fsjob_finished(const struct fsjob *j)
{
	return j->state != JOB_RUNNING;
}

const char *fsjob_text(const struct fsjob *j, int file, size_t *len)
{
	const char *t;

	if (file < 0 || file >= JF_N)
		file = JF_EXEC;
	if (!j)
		t = no_job[file];
	else if (file == JF_STATUS)
		t = state_text[j->state];
	else if (j->text[file])
		t = j->text[file];
	else
		t = file == JF_RESULT && !fsjob_finished(j) ? "{}\n" : "";
	*len = strlen(t);
	if (j && file != JF_STATUS && j->text[file])
		*len = j->len[file];
	return t;
}

/* ---- the registry ---- */

struct fsjobs *fsjobs_new(struct core *core, size_t keep_bytes)
{
	struct fsjobs *js = calloc(1, sizeof *js);

	if (js) {
		js->core = core;
		js->keep = keep_bytes;
	}
	return js;
}

static void waiter_unlink(struct fsjobs *js, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		js->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	js->nwaiters--;
}

void fsjobs_free(struct fsjobs *js)
{
	if (!js)
		return;
	while (js->waiters) {
		struct waiter *w = js->waiters;

		waiter_unlink(js, w);
		fuse_reply_err(w->req, EINTR);
		fsjob_unref(w->job);
		free(w);
	}
	/* Running jobs keep the pool's reference and open files theirs: none of
	 * them may reach the registry later. */
	for (struct fsjob *j = js->all; j; j = j->next)
		j->js = NULL;
	for (size_t i = 0; i < js->nctx; i++) {
		free(js->ctx[i].spec);
		free(js->ctx[i].py);
		fsjob_unref(js->ctx[i].latest);
	}
	for (size_t i = 0; i < JOBS_RING; i++)
		fsjob_unref(js->ring[i]);
	free(js);
}

static struct jctx *ctx_find(struct fsjobs *js, const char *spec, const char *py, int create)
{
	struct jctx *c = NULL;

	for (size_t i = 0; i < js->nctx; i++)
		if (strcmp(js->ctx[i].spec, spec) == 0 && strcmp(js->ctx[i].py, py) == 0) {
			c = &js->ctx[i];
			break;
		}
	if (c || !create)
		return c;
	if (js->nctx < JOBS_MAX_CONTEXTS) {
		c = &js->ctx[js->nctx];
	} else {
		/* Forget the context used longest ago; its jobs stay in /jobs. */
		c = &js->ctx[0];
		for (size_t i = 1; i < js->nctx; i++)
			if (js->ctx[i].used < c->used)
				c = &js->ctx[i];
		free(c->spec);
		free(c->py);
		fsjob_unref(c->latest);
		memset(c, 0, sizeof *c);
		js->nctx--;
	}
	c->spec = strdup(spec);
	c->py = strdup(py);
	if (!c->spec || !c->py) {
		free(c->spec);
		free(c->py);
		memset(c, 0, sizeof *c);
		return NULL;
	}
	js->nctx++;
	return c;
}

struct fsjob *fsjobs_latest(struct fsjobs *js, const char *spec, const char *py)
{
	struct jctx *c = ctx_find(js, spec, py, 0);

	return c ? c->latest : NULL;
}

struct fsjob *fsjobs_get(struct fsjobs *js, uint64_t id)
{
	struct fsjob *j = id ? js->ring[id % JOBS_RING] : NULL;

	return j && j->id == id ? j : NULL;
}

int fsjobs_each(struct fsjobs *js, int (*cb)(struct fsjob *j, void *ud), void *ud)
{
	uint64_t first = js->next_id > JOBS_RING ? js->next_id - JOBS_RING + 1 : 1;
	int r = 0;

	for (uint64_t id = first; r == 0 && id <= js->next_id; id++) {
		struct fsjob *j = fsjobs_get(js, id);

		if (j)
			r = cb(j, ud);
	}
	return r;
}

/* Output kept over budget: the oldest jobs leave the ring (open files keep theirs). */
static void fsjobs_trim(struct fsjobs *js)
{
	uint64_t first = js->next_id > JOBS_RING ? js->next_id - JOBS_RING + 1 : 1;

	for (uint64_t id = first; js->held > js->keep && id < js->next_id; id++) {
		struct fsjob *j = fsjobs_get(js, id);

		if (j && fsjob_finished(j)) {
			js->ring[id % JOBS_RING] = NULL;
			fsjob_unref(j);
		}
	}
}

static void reply_slice(fuse_req_t req, const struct fsjob *j, int file, size_t pos, size_t size)
{
	size_t len;
	const char *t = fsjob_text(j, file, &len);

	if (pos >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, t + pos, len - pos < size ? len - pos : size);
}

static char *str_member(const cJSON *o, const char *key, size_t *len)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
	char *d = strdup(s ? s : "");

	*len = d ? strlen(d) : 0;
	return d;
}

static void fsjob_render(struct fsjob *j, cJSON *reply)
{
	const char *err = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "error"));
	const char *tb = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "traceback"));
	char *json;
	size_t n;

	cJSON_DeleteItemFromObjectCaseSensitive(reply, "id");
	proto_set_id(reply, j->id);
	j->text[JF_STDOUT] = str_member(reply, "stdout", &j->len[JF_STDOUT]);
	j->text[JF_STDERR] = str_member(reply, "stderr", &j->len[JF_STDERR]);
	json = cJSON_Print(reply);
	n = json ? strlen(json) : 0;
	j->text[JF_RESULT] = malloc(n + 2);
	if (j->text[JF_RESULT]) {
		memcpy(j->text[JF_RESULT], json ? json : "", n);
		memcpy(j->text[JF_RESULT] + n, "\n", 2);
		j->len[JF_RESULT] = n + 1;
	}
	free(json);
	if (j->state == JOB_FAILED) {
		err = err && *err ? err : "failed";
		n = strlen(err) + (tb ? strlen(tb) : 0) + 2;
		j->text[JF_ERROR] = malloc(n + 1);
		if (j->text[JF_ERROR]) {
			snprintf(j->text[JF_ERROR], n + 1, "%s\n%s", err, tb ? tb : "");
			j->len[JF_ERROR] = strlen(j->text[JF_ERROR]);
		}
	}
}

static void fsjob_done(cJSON *reply, void *ud)
{
	struct fsjob *j = ud;
	struct fsjobs *js = j->js;
	struct waiter *w, *next;

	if (!js) {                        /* the file system is gone */
		cJSON_Delete(reply);
		fsjob_unref(j);
		return;
	}
	j->state = reply && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")) ?
		   JOB_DONE : JOB_FAILED;
	js->finished++;
	if (j->state == JOB_FAILED)
		js->failed++;
	if (!reply)
		reply = cJSON_CreateObject();
	if (reply) {
		size_t before = fsjob_held(j);

		fsjob_render(j, reply);
		js->held += fsjob_held(j) - before;
		cJSON_Delete(reply);
	}
	for (w = js->waiters; w; w = next) {
		next = w->next;
		if (w->job != j || w->interrupted)
			continue;
		waiter_unlink(js, w);
		reply_slice(w->req, j, w->file, w->pos, w->size);
		fsjob_unref(w->job);
		free(w);
	}
	for (int i = 0; i < j->nph; i++) {
		fuse_lowlevel_notify_poll(j->ph[i]);
		fuse_pollhandle_destroy(j->ph[i]);
	}
	j->nph = 0;
	fsjobs_trim(js);
	fsjob_unref(j);                     /* the pool's reference */
}

struct fsjob *fsjobs_submit(struct fsjobs *js, const char *spec, const char *py,
			const char *code, size_t len)
{
	struct fsjob *j = calloc(1, sizeof *j);
	struct jctx *c;
	struct job_req r = { 0 };
	uint64_t id;

	if (!j)
		return NULL;
	j->spec = strdup(spec);
	j->py = strdup(py);
	j->text[JF_CODE] = malloc(len + 1);
	c = ctx_find(js, spec, py, 1);
	if (!j->spec || !j->py || !j->text[JF_CODE] || !c) {
		j->refs = 1;
		fsjob_unref(j);
		return NULL;
	}
	memcpy(j->text[JF_CODE], code, len);
	j->text[JF_CODE][len] = 0;
	j->len[JF_CODE] = len;
	j->js = js;
	js->held += len;
	j->id = id = ++js->next_id;
	j->state = JOB_RUNNING;
	j->refs = 4;                      /* caller, ring, context, pool */
	fsjob_unref(js->ring[id % JOBS_RING]);
	js->ring[id % JOBS_RING] = j;
	fsjob_unref(c->latest);
	c->latest = j;
	c->used = ++js->clock;
	j->next = js->all;
	if (js->all)
		js->all->prev = j;
	js->all = j;
	js->submitted++;

	r.spec = spec;
	r.python = py;
	r.code = j->text[JF_CODE];
	core_submit(js->core, &r, fsjob_done, j);   /* may call fsjob_done at once */
	return j;
}

/* ---- deferred reads and polls ---- */

static void waiter_interrupted(fuse_req_t req, void *data)
{
	struct waiter *w = data;

	(void)req;
	/* Only mark it: replying from here could free req under libfuse's feet. */
	w->interrupted = 1;
	w->job->js->interrupted = 1;
}

int fsjobs_defer_read(struct fsjobs *js, struct fsjob *j, fuse_req_t req, int file, size_t pos,
		    size_t size)
{
	struct waiter *w;

	if (fsjob_finished(j)) {
		reply_slice(req, j, file, pos, size);
		return 0;
	}
	if (fuse_req_interrupted(req))
		return -EINTR;
	if (js->nwaiters >= JOBS_MAX_WAITERS || !(w = calloc(1, sizeof *w)))
		return -EAGAIN;
	w->req = req;
	w->job = j;
	fsjob_ref(j);
	w->file = file;
	w->pos = pos;
	w->size = size;
	w->next = js->waiters;
	if (js->waiters)
		js->waiters->prev = w;
	js->waiters = w;
	js->nwaiters++;
	js->deferred++;
	fuse_req_interrupt_func(req, waiter_interrupted, w);
	return 0;
}

void fsjobs_sweep(struct fsjobs *js)
{
	struct waiter *w, *next;

	if (!js->interrupted)
		return;
	js->interrupted = 0;
	for (w = js->waiters; w; w = next) {
		next = w->next;
		if (!w->interrupted)
			continue;
		waiter_unlink(js, w);
		fuse_reply_err(w->req, EINTR);
		fsjob_unref(w->job);
		free(w);
		js->interrupts++;
	}
}

void fsjobs_add_poll(struct fsjob *j, struct fuse_pollhandle *ph)
{
	if (fsjob_finished(j)) {
		fuse_lowlevel_notify_poll(ph);
		fuse_pollhandle_destroy(ph);
		return;
	}
	if (j->nph == JOB_MAX_POLL) {
		/* The oldest poller is told to look again rather than forgotten. */
		fuse_lowlevel_notify_poll(j->ph[0]);
		fuse_pollhandle_destroy(j->ph[0]);
		memmove(j->ph, j->ph + 1, (JOB_MAX_POLL - 1) * sizeof j->ph[0]);
		j->nph--;
	}
	j->ph[j->nph++] = ph;
}

void fsjobs_stats_json(struct fsjobs *js, cJSON *into)
{
	size_t running = 0;

	for (struct fsjob *j = js->all; j; j = j->next)
		running += j->state == JOB_RUNNING;
	cJSON_AddNumberToObject(into, "jobs_submitted", (double)js->submitted);
	cJSON_AddNumberToObject(into, "jobs_finished", (double)js->finished);
	cJSON_AddNumberToObject(into, "jobs_failed", (double)js->failed);
	cJSON_AddNumberToObject(into, "jobs_running", (double)running);
	cJSON_AddNumberToObject(into, "reads_waiting", (double)js->nwaiters);
	cJSON_AddNumberToObject(into, "reads_deferred", (double)js->deferred);
	cJSON_AddNumberToObject(into, "reads_interrupted", (double)js->interrupts);
	cJSON_AddNumberToObject(into, "contexts", (double)js->nctx);
	cJSON_AddNumberToObject(into, "output_bytes_kept", (double)js->held);
}
