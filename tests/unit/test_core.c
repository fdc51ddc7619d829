/*
 * test_core.c - the core as the fronts see it: jobs that lease segments
 * (a leased segment cannot be removed; the lease ends with the job),
 * refusals of unknown segments, cancel of unknown ids, and the status
 * every front shows.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "config.h"
#include "core.h"
#include "interp.h"
#include "loop.h"

static char base[64] = "/tmp/omni-core-XXXXXX";
static char home[128], rtdir[128], entry[512];
static struct interp_set pys;
static struct config cfg;
static struct loop *lp;
static struct core *core;
static cJSON *reply;

static void on_done(cJSON *r, void *ud)
{
	cJSON_Delete(reply);
	reply = r;
	loop_stop(lp);
}

static void on_timeout(struct loop *l, void *ud)
{
	loop_stop(l);
}

static void reap_tick(struct loop *l, void *ud)
{
	core_reap(core);
	loop_timer_add(l, 0.01, reap_tick, NULL);
}

static const char *str(const cJSON *o, const char *k)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));

	return s ? s : "";
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int suite_init(void)
{
	char err[256];
	struct core_ctx ctx;

	if (!mkdtemp(base))
		return -1;
	snprintf(home, sizeof home, "%s/home", base);
	snprintf(rtdir, sizeof rtdir, "%s/run", base);
	snprintf(entry, sizeof entry, "%s/src/worker/worker.py", OMNI_SOURCE_DIR);
	if (mkdir(home, 0700) < 0 || mkdir(rtdir, 0700) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	config_defaults(&cfg);
	cfg.shm_quota = 1 << 20;
	if (config_discover_pythons(&cfg, &pys) <= 0)
		return -1;
	lp = loop_new();
	ctx = (struct core_ctx){ .loop = lp, .cfg = &cfg, .py = &pys, .home = home, .rtdir = rtdir,
				 .entry = entry };
	core = core_new(&ctx, err, sizeof err);
	if (!core) {
		fprintf(stderr, "core_new: %s\n", err);
		return -1;
	}
	loop_timer_add(lp, 0.01, reap_tick, NULL);
	return 0;
}

static int suite_clean(void)
{
	core_free(core);
	loop_free(lp);
	interp_set_free(&pys);
	cJSON_Delete(reply);
	return nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void run(void)
{
	struct loop_timer *t = loop_timer_add(lp, 60, on_timeout, NULL);

	loop_run(lp);
	loop_timer_cancel(lp, t);
}

static void test_lease_holds_a_segment_until_the_job_ends(void)
{
	const char *segs[] = { "frame" };
	struct job_req r = { .spec = "base", .python = "3.11", .code = "result = 1",
			     .segments = segs, .nsegments = 1 };
	struct shm_info info;

	CU_ASSERT_FATAL(shm_create(core_shm(core), "frame", 4096) == 0);
	cJSON_Delete(reply);
	reply = NULL;
	CU_ASSERT(core_submit(core, &r, on_done, NULL) > 0);
	CU_ASSERT_PTR_NULL(reply);                    /* its worker is still starting */
	CU_ASSERT_EQUAL(shm_stat(core_shm(core), "frame", &info), 0);
	CU_ASSERT_EQUAL(info.leases, 1);
	CU_ASSERT_EQUAL(shm_remove(core_shm(core), "frame"), -EBUSY);
	run();
	CU_ASSERT_FATAL(reply != NULL);
	CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")));
	CU_ASSERT_EQUAL(shm_stat(core_shm(core), "frame", &info), 0);
	CU_ASSERT_EQUAL(info.leases, 0);
	CU_ASSERT_EQUAL(shm_remove(core_shm(core), "frame"), 0);
}

static void test_unknown_segment_is_refused_at_once(void)
{
	const char *segs[] = { "nosuch" };
	struct job_req r = { .spec = "base", .python = "3.11", .code = "result = 1",
			     .segments = segs, .nsegments = 1 };

	cJSON_Delete(reply);
	reply = NULL;
	core_submit(core, &r, on_done, NULL);
	CU_ASSERT_FATAL(reply != NULL);
	CU_ASSERT_STRING_EQUAL(str(reply, "reason"), "nosegment");
	CU_ASSERT_PTR_NOT_NULL(strstr(str(reply, "error"), "nosuch"));
}

static void test_cancel_unknown(void)
{
	CU_ASSERT_EQUAL(core_cancel(core, 424242), -ENOENT);
}

static void test_status(void)
{
	cJSON *s = core_status_json(core), *shm = cJSON_GetObjectItemCaseSensitive(s, "shm");
	const char *containment = str(s, "containment");

	CU_ASSERT(cJSON_IsObject(shm));
	CU_ASSERT_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(shm, "quota")), 1 << 20);
	CU_ASSERT(strcmp(containment, "cgroup") == 0 || strcmp(containment, "proc") == 0);
	CU_ASSERT(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(s, "jobs")) >= 1);
	cJSON_Delete(s);
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("core", suite_init, suite_clean);
	CU_add_test(s, "a lease holds a segment until the job ends",
		    test_lease_holds_a_segment_until_the_job_ends);
	CU_add_test(s, "an unknown segment is refused at once", test_unknown_segment_is_refused_at_once);
	CU_add_test(s, "cancel of an unknown id", test_cancel_unknown);
	CU_add_test(s, "status", test_status);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
