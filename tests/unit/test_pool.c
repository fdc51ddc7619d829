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
static int timed_out;

static void on_done(cJSON *reply, void *ud)
{
	int slot = (int)(intptr_t)ud;

	if (slot >= 0 && slot < MAXR)
		replies[slot] = reply;
	else
		cJSON_Delete(reply);
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

/* Lets the loop run for a while (reaping, evictions). */
static void settle(double seconds)
{
	struct loop_timer *t = loop_timer_add(lp, seconds, on_timeout, NULL);

	want = 1 << 30;
	loop_run(lp);
	(void)t;   /* fired */
	timed_out = 0;
}

static void submit(int slot, const char *spec, const char *python, const char *tag,
		   const char *code, int once)
{
	struct pool_req r = { .spec = spec, .python = python, .code = code, .tag = tag, .once = once };

	pool_submit(pool, &r, on_done, (void *)(intptr_t)slot);
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

static int live_workers(void)
{
	cJSON *w = pool_workers_json(pool);
	int n = cJSON_GetArraySize(w);

	cJSON_Delete(w);
	return n;
}

static int has_tag(const char *tag)
{
	cJSON *w = pool_workers_json(pool), *it;
	int found = 0;

	cJSON_ArrayForEach(it, w)
		found |= strcmp(str(it, "tag"), tag) == 0;
	cJSON_Delete(w);
	return found;
}

static int start_pool(void)
{
	char worker[512];

	snprintf(worker, sizeof worker, "%s/src/worker/worker.py", OMNI_SOURCE_DIR);
	lp = loop_new();
	pool = pool_new(lp, &cfg, &pys, home, strdup(worker));
	loop_timer_add(lp, 0.01, reap_tick, NULL);
	memset(replies, 0, sizeof replies);
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
	CU_ASSERT_EQUAL(live_workers(), 0);
	settle(0.5);
	{
		cJSON *st = cJSON_CreateObject();

		pool_stats_json(pool, st);
		CU_ASSERT_EQUAL(num(st, "workers"), 0);
		CU_ASSERT_EQUAL(num(st, "jobs"), 1);
		cJSON_Delete(st);
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

static void test_refusals(void)
{
	setup_cfg(1, 8);
	CU_ASSERT_FATAL(start_pool() == 0);
	submit(0, "numpy>=1", "3.11", NULL, "pass", 0);
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
	settle(0.3);
	CU_ASSERT_EQUAL(live_workers(), 0);
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
	settle(0.3);
	CU_ASSERT_EQUAL(live_workers(), 0);
	stop_pool();
	pys.n--;
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
	CU_add_test(s, "refusals", test_refusals);
	CU_add_test(s, "unstartable interpreter, fresh", test_unstartable_fresh);
	CU_add_test(s, "unstartable interpreter, zygote", test_unstartable_zygote);
	CU_add_test(s, "hung interpreter times out", test_hung_interpreter_times_out);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
