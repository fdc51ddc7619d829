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
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	/* A suite that could not start has failed too, never passed. */
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
