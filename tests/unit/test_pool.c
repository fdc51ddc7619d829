/*
 * test_pool.c - pool bookkeeping with real workers: routing by key, queue
 * order, LRU eviction under max_workers, ephemeral workers, crashes that
 * requeue waiting jobs, refusals, and workers that cannot start.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "interp.h"
#include "loop.h"
#include "pool.h"

#define MAXR 16

static char home[64] = "/tmp/omni-pool-XXXXXX";
static struct interp_set pys;
static struct config cfg;
static struct loop *lp;
static struct pool *pool;
static cJSON *replies[MAXR];
static int nreplies, want;
static int order[MAXR];            /* slots in the order their replies came */
static int timed_out;
static char worker[512];

static void on_done(cJSON *reply, void *ud)
{
	int slot = (int)(intptr_t)ud;

	if (slot >= 0 && slot < MAXR) {
		replies[slot] = reply;
		order[nreplies % MAXR] = slot;
	} else {
		cJSON_Delete(reply);
	}
	if (++nreplies >= want)
		loop_stop(lp);
}

static void on_timeout(struct loop *l, void *ud)
{
	timed_out = 1;
	loop_stop(l);
}

/* The test plays the daemon's SIGCHLD handler with a short poll. */
static void reap_tick(struct loop *l, void *ud)
{
	pool_reap(pool);
	loop_timer_add(l, 0.01, reap_tick, NULL);
}

static void run_until(int n)
{
	struct loop_timer *t = loop_timer_add(lp, 60, on_timeout, NULL);

	want = n;
	if (nreplies < want)
		loop_run(lp);
	loop_timer_cancel(lp, t);
}

static uint64_t submit(int slot, const char *spec, const char *python, const char *tag,
		       const char *code, int once)
{
	struct job_req r = { .spec = spec, .python = python, .code = code, .tag = tag, .once = once };

	return pool_submit(pool, &r, on_done, (void *)(intptr_t)slot);
}

static void stop_loop(struct loop *l, void *ud)
{
	loop_stop(l);
}

/* Runs the loop in short slices until cond() holds or seconds pass. */
static int wait_for(int (*cond)(void *), void *arg, double seconds)
{
	double until = loop_now() + seconds;

	while (!cond(arg) && loop_now() < until) {
		loop_timer_add(lp, 0.02, stop_loop, NULL);
		want = 1 << 30;
		loop_run(lp);
	}
	return cond(arg);
}

static const char *str(const cJSON *o, const char *k)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));

	return s ? s : "";
}

static double num(const cJSON *o, const char *k)
{
	return cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static int ok(const cJSON *o) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")); }

static int count_one(const struct pool_worker_info *w, void *ud)
{
	(*(int *)ud)++;
	return 0;
}

static int live_workers(void)
{
	int n = 0;

	pool_each_worker(pool, count_one, &n);
	return n;
}

static int tag_is(const struct pool_worker_info *w, void *ud)
{
	return strcmp(w->tag, ud) == 0;
}

static int has_tag(const char *tag)
{
	return pool_each_worker(pool, tag_is, (void *)tag);
}

static int no_workers(void *arg) { return live_workers() == 0; }

static int pid_gone(void *arg) { return kill(*(pid_t *)arg, 0) < 0 && errno == ESRCH; }

static int start_pool(void)
{
	snprintf(worker, sizeof worker, "%s/src/worker/worker.py", OMNI_SOURCE_DIR);
	lp = loop_new();
	pool = pool_new(lp, &cfg, &pys, home, worker, NULL, NULL);
	loop_timer_add(lp, 0.01, reap_tick, NULL);
	memset(replies, 0, sizeof replies);
	memset(order, -1, sizeof order);
	nreplies = 0;
	timed_out = 0;
	return lp && pool ? 0 : -1;
}

static void stop_pool(void)
{
	pool_free(pool);
	loop_free(lp);
	for (int i = 0; i < MAXR; i++) {
		cJSON_Delete(replies[i]);
		replies[i] = NULL;
	}
	pool = NULL;
	lp = NULL;
}

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *f)
{
	return remove(p);
}

static int suite_init(void)
{
	if (!mkdtemp(home))
		return -1;
	signal(SIGPIPE, SIG_IGN);
	/* As in the daemon: zygote-forked workers re-parent to us. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	config_defaults(&cfg);
	return config_discover_pythons(&cfg, &pys) > 0 ? 0 : -1;
}

static int suite_clean(void)
{
	interp_set_free(&pys);
	return nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup_cfg(int zygote, int max_workers)
{
	config_defaults(&cfg);
	cfg.zygote = zygote;
	cfg.max_workers = max_workers;
	cfg.idle_timeout = 0;
}

static void test_same_key_same_worker_tags_apart(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", NULL, "import os; result = os.getpid()", 0);
	run_until(1);
	submit(1, "BASE", "3.11", "", "import os; result = os.getpid()", 0);
	submit(2, "base", "3.11", "other", "import os; result = os.getpid()", 0);
	run_until(3);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT(ok(replies[0]) && ok(replies[1]) && ok(replies[2]));
	CU_ASSERT_EQUAL(num(replies[0], "result"), num(replies[1], "result"));
	CU_ASSERT_NOT_EQUAL(num(replies[0], "result"), num(replies[2], "result"));
	CU_ASSERT_STRING_EQUAL(str(replies[1], "spec"), "base");
	CU_ASSERT_EQUAL(live_workers(), 2);
	stop_pool();
}

static void test_queue_keeps_order(void)
{
	char code[128];

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	for (int i = 0; i < 6; i++) {
		snprintf(code, sizeof code, "seen = globals().get('seen', []) + [%d]; result = seen", i);
		submit(i, "base", "3.11", NULL, code, 0);
	}
	run_until(6);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(replies[5], "result")), 6);
	for (int i = 0; i < 6; i++)
		CU_ASSERT_EQUAL(cJSON_GetArrayItem(cJSON_GetObjectItem(replies[5], "result"), i)->valueint, i);
	CU_ASSERT_EQUAL(live_workers(), 1);
	stop_pool();
}

static void test_max_workers_evicts_least_recently_used(void)
{
	setup_cfg(1, 2);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "a", "pass", 0);
	run_until(1);
	submit(1, "base", "3.11", "b", "pass", 0);
	run_until(2);
	submit(2, "base", "3.11", "a", "pass", 0);   /* a is now the most recent */
	run_until(3);
	submit(3, "base", "3.11", "c", "pass", 0);
	run_until(4);
	CU_ASSERT(ok(replies[3]));
	CU_ASSERT_EQUAL(live_workers(), 2);
	CU_ASSERT(has_tag("a"));
	CU_ASSERT(has_tag("c"));
	CU_ASSERT_FALSE(has_tag("b"));
	stop_pool();
}

static void test_max_workers_all_busy_is_refused(void)
{
	setup_cfg(1, 1);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "a", "import time; time.sleep(0.3)", 0);
	submit(1, "base", "3.11", "b", "pass", 0);
	run_until(2);
	CU_ASSERT(ok(replies[0]));
	CU_ASSERT_FALSE(ok(replies[1]));
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "busy");
	CU_ASSERT_EQUAL(num(replies[1], "errno"), EBUSY);
	stop_pool();
}

static void test_once_worker_retires(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", NULL, "result = 1", 1);
	run_until(1);
	CU_ASSERT(ok(replies[0]));
	CU_ASSERT(wait_for(no_workers, NULL, 10.0));
	{
		struct pool_stats st;

		pool_stats(pool, &st);
		CU_ASSERT_EQUAL(st.workers, 0);
		CU_ASSERT_EQUAL(st.c.jobs_total, 1);
	}
	stop_pool();
}

static void test_crash_fails_its_job_and_requeues_the_rest(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", NULL, "pass", 0);   /* the worker has served a job */
	run_until(1);
	submit(1, "base", "3.11", NULL, "import os; os._exit(5)", 0);
	submit(2, "base", "3.11", NULL, "import os; result = os.getpid()", 0);
	run_until(3);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_FALSE(ok(replies[1]));
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "exit");
	CU_ASSERT_EQUAL(num(replies[1], "exit_code"), 5);
	CU_ASSERT(ok(replies[2]));
	CU_ASSERT_NOT_EQUAL(num(replies[2], "result"), num(replies[0], "worker_pid"));
	stop_pool();
}

/* The first job of a new worker crashes: only that job fails, and the one
 * queued behind it runs on a new worker. */
static void test_first_job_crash_requeues_the_rest(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "t1", "import os, time; time.sleep(0.5); os._exit(7)", 0);
	submit(1, "base", "3.11", "t1", "result = 2", 0);
	run_until(2);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "exit");
	CU_ASSERT_EQUAL(num(replies[0], "exit_code"), 7);
	CU_ASSERT(ok(replies[1]));
	CU_ASSERT_EQUAL(num(replies[1], "result"), 2);
	CU_ASSERT_NOT_EQUAL(num(replies[1], "worker_pid"), num(replies[0], "worker_pid"));
	stop_pool();
}

/* A worker that closes its control channel and spins is killed, not left. */
static void test_lost_worker_is_killed(void)
{
	pid_t pid;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "lost", "import os; result = os.getpid()", 0);
	run_until(1);
	pid = (pid_t)num(replies[0], "result");
	CU_ASSERT_FATAL(pid > 0);
	submit(1, "base", "3.11", "lost",
	       "import os\n"
	       "for f in os.listdir('/proc/self/fd'):\n"
	       "    try:\n"
	       "        if int(f) > 2 and os.readlink('/proc/self/fd/' + f).startswith('socket:'):\n"
	       "            os.close(int(f))\n"
	       "    except OSError:\n"
	       "        pass\n"
	       "while True:\n"
	       "    pass\n", 0);
	run_until(2);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_FALSE(ok(replies[1]));
	CU_ASSERT(wait_for(pid_gone, &pid, 10.0));
	stop_pool();
}

static int count_busy(const struct pool_worker_info *w, void *ud)
{
	*(int *)ud += strcmp(w->state, "busy") == 0;
	return 0;
}

static int busy_workers(void *arg)
{
	int n = 0;

	pool_each_worker(pool, count_busy, &n);
	return n > 0;
}

/* Cancelling a queued job fails it alone; cancelling a running one kills
 * its worker; an unknown id is -ENOENT. */
static void test_cancel(void)
{
	uint64_t running, queued;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	running = submit(0, "base", "3.11", "c", "import time; time.sleep(60)", 0);
	queued = submit(1, "base", "3.11", "c", "result = 1", 0);
	CU_ASSERT_EQUAL(pool_cancel(pool, queued), 0);
	CU_ASSERT_EQUAL(nreplies, 1);
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "cancelled");
	CU_ASSERT(wait_for(busy_workers, NULL, 30.0));
	CU_ASSERT_EQUAL(pool_cancel(pool, running), 0);
	CU_ASSERT_EQUAL(nreplies, 2);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "cancelled");
	CU_ASSERT_EQUAL(pool_cancel(pool, running), -ENOENT);
	CU_ASSERT(wait_for(no_workers, NULL, 10.0));
	stop_pool();
}

static int first_reply(void *arg)
{
	return nreplies >= 1;
}

/* An interpreter path never probed is probed off the loop: other jobs go
 * on meanwhile, and the answer (here a failure) is cached. */
static void test_unprobed_python_does_not_block(void)
{
	char script[128], go[128], text[256];
	FILE *f;

	snprintf(script, sizeof script, "%s/slow-python", home);
	snprintf(go, sizeof go, "%s/go", home);
	snprintf(text, sizeof text, "#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.02; done\nexit 1\n", go);
	f = fopen(script, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs(text, f);
	fclose(f);
	chmod(script, 0755);
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", script, NULL, "pass", 0);
	submit(1, "base", "3.11", NULL, "result = 1", 0);
	CU_ASSERT(wait_for(first_reply, NULL, 30.0));
	CU_ASSERT_EQUAL(order[0], 1);          /* the probe did not hold the loop */
	CU_ASSERT(ok(replies[1]));
	f = fopen(go, "w");
	CU_ASSERT_FATAL(f != NULL);
	fclose(f);
	run_until(2);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "nopython");
	submit(2, "base", script, NULL, "pass", 0);
	CU_ASSERT_EQUAL(nreplies, 3);          /* answered from the cache, at once */
	CU_ASSERT_STRING_EQUAL(str(replies[2], "reason"), "nopython");
	unlink(go);
	unlink(script);
	stop_pool();
}

static void test_refusals(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "numpy===1", "3.11", NULL, "pass", 0);
	submit(1, "base", "1.2", NULL, "pass", 0);
	submit(2, "nosuchpkg==1.0", "3.11", NULL, "pass", 0);
	run_until(3);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "badspec");
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "nopython");
	CU_ASSERT_STRING_EQUAL(str(replies[2], "reason"), "nobubble");
	CU_ASSERT_PTR_NOT_NULL(strstr(str(replies[2], "error"), "omnipkg install nosuchpkg==1.0"));
	CU_ASSERT_EQUAL(live_workers(), 0);
	stop_pool();
}

static void unstartable(int zygote)
{
	struct interp bad = { .version = "3.99.0", .major = 3, .minor = 99, .micro = 0,
			      .path = "/bin/false", .tag = "cp399", .source = INTERP_CONFIG };

	setup_cfg(zygote, 8);
	CU_ASSERT_FATAL(interp_add(&pys, &bad) == 0);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.99", NULL, "pass", 0);
	submit(1, "base", "3.99", NULL, "pass", 0);
	run_until(2);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "spawn");
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "spawn");
	CU_ASSERT(wait_for(no_workers, NULL, 10.0));
	stop_pool();
	pys.n--;   /* drop the fake interpreter again */
}

/* An interpreter that hangs instead of starting: the queue is failed,
 * not held forever.  (The spawn timeout is 30 s.) */
static void test_hung_interpreter_times_out(void)
{
	char script[128];
	struct interp hung = { .version = "3.98.0", .major = 3, .minor = 98, .micro = 0,
			       .tag = "cp398", .source = INTERP_CONFIG };
	FILE *f;

	snprintf(script, sizeof script, "%s/hung-python", home);
	f = fopen(script, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs("#!/bin/sh\nexec sleep 600\n", f);
	fclose(f);
	chmod(script, 0755);
	snprintf(hung.path, sizeof hung.path, "%s", script);
	setup_cfg(0, 8);
	CU_ASSERT_FATAL(interp_add(&pys, &hung) == 0);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.98", NULL, "pass", 0);
	run_until(1);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "spawn");
	CU_ASSERT_PTR_NOT_NULL(strstr(str(replies[0], "error"), "not ready"));
	CU_ASSERT(wait_for(no_workers, NULL, 10.0));
	stop_pool();
	pys.n--;
}

/* ---- pin, evict, memory limits, idle config ---- */

static uint64_t submit_req(int slot, const struct job_req *r)
{
	return pool_submit(pool, r, on_done, (void *)(intptr_t)slot);
}

static uint64_t evict(int slot, const char *spec, const char *python, const char *tag)
{
	struct job_req r = { .kind = JOB_KIND_EVICT, .spec = spec, .python = python, .tag = tag };

	return submit_req(slot, &r);
}

struct find_q {
	const char *tag;
	struct pool_worker_info info;
	int found;
};

static int find_tag(const struct pool_worker_info *w, void *ud)
{
	struct find_q *q = ud;

	if (strcmp(w->tag, q->tag) != 0)
		return 0;
	q->info = *w;
	q->found = 1;
	return 1;
}

/* The live worker of tag (its info's strings are not kept), or found 0. */
static struct find_q worker_of(const char *tag)
{
	struct find_q q = { .tag = tag };

	pool_each_worker(pool, find_tag, &q);
	return q;
}

static int tag_gone(void *arg) { return !has_tag(arg); }

static cJSON *evicted(int slot)
{
	return cJSON_GetObjectItemCaseSensitive(replies[slot], "evicted");
}

/* max_workers 2, three keys: the pinned worker is the least recently used
 * one, yet the other goes. */
static void test_pin_survives_lru_eviction(void)
{
	struct job_req a = { .spec = "base", .python = "3.11", .tag = "a", .code = "pass", .pin = 1 };

	setup_cfg(1, 2);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit_req(0, &a);
	run_until(1);
	submit(1, "base", "3.11", "b", "pass", 0);
	run_until(2);
	submit(2, "base", "3.11", "c", "pass", 0);
	run_until(3);
	CU_ASSERT(ok(replies[0]) && ok(replies[1]) && ok(replies[2]));
	CU_ASSERT(has_tag("a"));
	CU_ASSERT_FALSE(has_tag("b"));
	CU_ASSERT(has_tag("c"));
	CU_ASSERT(worker_of("a").info.pinned);
	CU_ASSERT_FALSE(worker_of("c").info.pinned);
	stop_pool();
}

/* Every idle worker pinned: none can be freed, so a new key is refused
 * as when all are busy. */
static void test_all_pinned_is_busy(void)
{
	struct job_req a = { .spec = "base", .python = "3.11", .tag = "a", .code = "pass", .pin = 1 };

	setup_cfg(1, 1);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit_req(0, &a);
	run_until(1);
	submit(1, "base", "3.11", "b", "pass", 0);
	run_until(2);
	CU_ASSERT(ok(replies[0]));
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "busy");
	CU_ASSERT(has_tag("a"));
	stop_pool();
}

/* idle_timeout 1 s: the unpinned worker goes, the pinned one stays; a
 * later exec without pin does not unpin it. */
static void test_pin_survives_idle_timeout(void)
{
	struct job_req a = { .spec = "base", .python = "3.11", .tag = "a", .code = "pass", .pin = 1 };
	pid_t pid;

	setup_cfg(1, 8);
	cfg.idle_timeout = 1;
	CU_ASSERT_FATAL(start_pool() == 0);
	submit_req(0, &a);
	submit(1, "base", "3.11", "b", "pass", 0);
	run_until(2);
	submit(2, "base", "3.11", "a", "import os; result = os.getpid()", 0);
	run_until(3);
	pid = (pid_t)num(replies[2], "result");
	CU_ASSERT_EQUAL(pid, num(replies[0], "worker_pid"));
	CU_ASSERT(wait_for(tag_gone, "b", 10.0));
	wait_for(tag_gone, "a", 2.0);   /* two more ticks of the idle check */
	CU_ASSERT(has_tag("a"));
	CU_ASSERT(worker_of("a").info.pinned);
	CU_ASSERT_EQUAL(worker_of("a").info.pid, pid);
	CU_ASSERT(worker_of("a").info.idle_s > 1.0);
	stop_pool();
}

static void test_evict_idle_worker(void)
{
	pid_t pid;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "e", "import os; result = os.getpid()", 0);
	run_until(1);
	pid = (pid_t)num(replies[0], "result");
	CU_ASSERT_FATAL(pid > 0);
	/* Canonicalised as exec's spec is: BASE is base. */
	evict(1, "BASE", "3.11", "e");
	CU_ASSERT_EQUAL(nreplies, 2);   /* answered at once */
	CU_ASSERT(ok(replies[1]));
	CU_ASSERT_EQUAL(cJSON_GetArraySize(evicted(1)), 1);
	CU_ASSERT_EQUAL(cJSON_GetArrayItem(evicted(1), 0)->valuedouble, pid);
	CU_ASSERT_FALSE(has_tag("e"));
	CU_ASSERT(wait_for(pid_gone, &pid, 10.0));
	submit(2, "base", "3.11", "e", "import os; result = os.getpid()", 0);
	run_until(3);
	CU_ASSERT(ok(replies[2]));
	CU_ASSERT_NOT_EQUAL(num(replies[2], "result"), pid);
	stop_pool();
}

/* A busy worker finishes its job (not failed), then goes; the job queued
 * behind it runs on a new worker. */
static void test_evict_busy_worker(void)
{
	pid_t pid;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "e", "import os, time; time.sleep(0.5); result = os.getpid()", 0);
	submit(1, "base", "3.11", "e", "import os; result = os.getpid()", 0);
	CU_ASSERT_FATAL(wait_for(busy_workers, NULL, 30.0));
	pid = worker_of("e").info.pid;
	evict(2, "base", "3.11", "e");
	CU_ASSERT(wait_for(first_reply, NULL, 5.0));
	CU_ASSERT_EQUAL(order[0], 2);
	CU_ASSERT_EQUAL(cJSON_GetArraySize(evicted(2)), 1);
	CU_ASSERT_EQUAL(cJSON_GetArrayItem(evicted(2), 0)->valuedouble, pid);
	run_until(3);
	CU_ASSERT_FALSE(timed_out);
	CU_ASSERT(ok(replies[0]));
	CU_ASSERT_EQUAL(num(replies[0], "result"), pid);
	CU_ASSERT(ok(replies[1]));
	CU_ASSERT_NOT_EQUAL(num(replies[1], "result"), pid);
	CU_ASSERT(wait_for(pid_gone, &pid, 10.0));
	CU_ASSERT_EQUAL(live_workers(), 1);
	stop_pool();
}

/* Nothing matches: another tag, another python, one that does not exist.
 * A bad spec is refused as exec refuses it. */
static void test_evict_nothing(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", "e", "pass", 0);
	run_until(1);
	evict(1, "base", "3.11", "other");
	evict(2, "base", "3.99", "e");
	evict(3, "base", "/nonexistent/python3", "e");
	evict(4, "numpy===1", "3.11", NULL);
	run_until(5);
	for (int i = 1; i <= 3; i++) {
		CU_ASSERT(ok(replies[i]));
		CU_ASSERT(cJSON_IsArray(evicted(i)));
		CU_ASSERT_EQUAL(cJSON_GetArraySize(evicted(i)), 0);
	}
	CU_ASSERT_STRING_EQUAL(str(replies[4], "reason"), "badspec");
	CU_ASSERT(has_tag("e"));
	/* Neither is a job. */
	{
		struct pool_stats st;

		pool_stats(pool, &st);
		CU_ASSERT_EQUAL(st.c.jobs_total, 1);
	}
	stop_pool();
}

/* Without cgroups the limit is RLIMIT_AS: the allocation fails, the job
 * fails with reason "memory", the worker goes on (limited still). */
static void test_memory_limit_rlimit(void)
{
	struct job_req big = { .spec = "base", .python = "3.11", .tag = "m", .max_memory_mb = 64,
			       .code = "b = bytearray(256 << 20)" };
	struct job_req small = { .spec = "base", .python = "3.11", .tag = "m", .max_memory_mb = 64,
				 .code = "import os; b = bytearray(8 << 20); result = os.getpid()" };

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit_req(0, &small);
	run_until(1);
	CU_ASSERT(ok(replies[0]));
	submit_req(1, &big);
	run_until(2);
	CU_ASSERT_FALSE(ok(replies[1]));
	CU_ASSERT_STRING_EQUAL(str(replies[1], "reason"), "memory");
	CU_ASSERT_PTR_NOT_NULL(strstr(str(replies[1], "error"), "64 MiB"));
	CU_ASSERT_EQUAL(num(replies[1], "worker_pid"), num(replies[0], "result"));
	submit(2, "base", "3.11", "m", "import os, resource\n"
	       "result = [os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0]]", 0);
	run_until(3);
	CU_ASSERT(ok(replies[2]));
	CU_ASSERT_EQUAL(cJSON_GetArrayItem(cJSON_GetObjectItem(replies[2], "result"), 0)->valuedouble,
			num(replies[0], "result"));
	CU_ASSERT_EQUAL(cJSON_GetArrayItem(cJSON_GetObjectItem(replies[2], "result"), 1)->valuedouble,
			64.0 * 1048576);
	CU_ASSERT_DOUBLE_EQUAL(worker_of("m").info.max_memory_mb, 64, 1e-9);
	stop_pool();
}

/* MemoryError on a worker without a limit is an exception like any. */
static void test_memory_error_without_limit(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "base", "3.11", NULL, "raise MemoryError('made up')", 0);
	run_until(1);
	CU_ASSERT_STRING_EQUAL(str(replies[0], "reason"), "exception");
	CU_ASSERT_DOUBLE_EQUAL(worker_of("").info.max_memory_mb, 0, 1e-9);
	stop_pool();
}

static int kept_pid(const struct spawner_kept_info *k, void *ud)
{
	*(pid_t *)ud = k->ready ? k->zygote_pid : 0;
	return 1;
}

static pid_t zygote_kept(void)
{
	pid_t pid = 0;

	pool_each_kept(pool, kept_pid, &pid);
	return pid;
}

static int zygote_back(void *arg)
{
	pid_t now = zygote_kept();

	return now > 0 && now != *(pid_t *)arg;
}

static int zygote_ready(void *arg) { return zygote_kept() > 0; }

/* count 1 starts the zygote now and again after it is killed; count 0
 * forgets the interpreter. */
static void test_idle_config_keeps_zygote(void)
{
	struct job_req keep = { .kind = JOB_KIND_IDLE, .python = "3.11", .idle_count = 1 };
	struct job_req drop = { .kind = JOB_KIND_IDLE, .python = "3.11", .idle_count = 0 };
	cJSON *cfgj, *e;
	pid_t z;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit_req(0, &keep);
	run_until(1);
	CU_ASSERT(ok(replies[0]));
	cfgj = cJSON_GetObjectItemCaseSensitive(replies[0], "config");
	CU_ASSERT_EQUAL(cJSON_GetArraySize(cfgj), 1);
	e = cfgj ? cfgj->child : NULL;
	CU_ASSERT(e && cJSON_IsNumber(e) && e->valuedouble == 1 && e->string[0] == '/');
	CU_ASSERT_FATAL(wait_for(zygote_ready, NULL, 10.0));
	z = zygote_kept();
	CU_ASSERT_EQUAL(kill(z, SIGKILL), 0);
	CU_ASSERT(wait_for(zygote_back, &z, 10.0));
	CU_ASSERT_EQUAL(live_workers(), 0);
	submit_req(1, &drop);
	run_until(2);
	CU_ASSERT(ok(replies[1]));
	CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(replies[1], "config")), 0);
	CU_ASSERT_EQUAL(zygote_kept(), 0);
	{
		cJSON *q = pool_idle_config(pool);

		CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(q, "config")), 0);
		cJSON_Delete(q);
	}
	stop_pool();
}

static void test_worker_info_last_used(void)
{
	struct timespec ts;
	double before, after;

	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	before = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	submit(0, "base", "3.11", "t", "import time; time.sleep(0.2)", 0);
	run_until(1);
	clock_gettime(CLOCK_REALTIME, &ts);
	after = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	CU_ASSERT(worker_of("t").info.last_used >= before + 0.15);
	CU_ASSERT(worker_of("t").info.last_used <= after + 0.01);
	CU_ASSERT_FALSE(worker_of("t").info.pinned);
	stop_pool();
}

static void test_unstartable_fresh(void) { unstartable(0); }
static void test_unstartable_zygote(void) { unstartable(1); }

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("pool", suite_init, suite_clean);
	CU_add_test(s, "same key, same worker; tags apart", test_same_key_same_worker_tags_apart);
	CU_add_test(s, "queue keeps order", test_queue_keeps_order);
	CU_add_test(s, "max_workers evicts the LRU idle worker", test_max_workers_evicts_least_recently_used);
	CU_add_test(s, "max_workers with all busy refuses", test_max_workers_all_busy_is_refused);
	CU_add_test(s, "once worker retires", test_once_worker_retires);
	CU_add_test(s, "crash fails its job, requeues the rest", test_crash_fails_its_job_and_requeues_the_rest);
	CU_add_test(s, "first job crash requeues the rest", test_first_job_crash_requeues_the_rest);
	CU_add_test(s, "lost worker is killed", test_lost_worker_is_killed);
	CU_add_test(s, "cancel", test_cancel);
	CU_add_test(s, "unprobed python does not block the loop", test_unprobed_python_does_not_block);
	CU_add_test(s, "refusals", test_refusals);
	CU_add_test(s, "unstartable interpreter, fresh", test_unstartable_fresh);
	CU_add_test(s, "unstartable interpreter, zygote", test_unstartable_zygote);
	CU_add_test(s, "hung interpreter times out", test_hung_interpreter_times_out);
	CU_add_test(s, "pin survives LRU eviction", test_pin_survives_lru_eviction);
	CU_add_test(s, "all pinned is busy", test_all_pinned_is_busy);
	CU_add_test(s, "pin survives the idle timeout", test_pin_survives_idle_timeout);
	CU_add_test(s, "evict an idle worker", test_evict_idle_worker);
	CU_add_test(s, "evict a busy worker", test_evict_busy_worker);
	CU_add_test(s, "evict nothing", test_evict_nothing);
	CU_add_test(s, "memory limit (RLIMIT_AS)", test_memory_limit_rlimit);
	CU_add_test(s, "MemoryError without a limit", test_memory_error_without_limit);
	CU_add_test(s, "idle config keeps the zygote", test_idle_config_keeps_zygote);
	CU_add_test(s, "worker info last_used", test_worker_info_last_used);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	/* A suite that could not start has failed too, never passed. */
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
