/*
 * test_cgroup.c - the memory-limit helpers of cgroup.c against a directory
 * laid out as a cgroup2 group is (the files a kernel would show), so they
 * run where no memory controller is delegated: what is written to
 * memory.max and memory.swap.max, how memory.events is read, and when the
 * controller is turned on for the groups below.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"

static char dir[64];

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *f)
{
	return remove(p);
}

/* A fresh empty group directory for each test. */
static void fresh(void)
{
	if (dir[0])
		nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	snprintf(dir, sizeof dir, "/tmp/omni-cgroup-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
}

static void put(const char *file, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs(text, f);
	fclose(f);
}

static const char *get(const char *file)
{
	static char buf[256];
	char path[128];
	size_t n;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	buf[0] = 0;
	if (!(f = fopen(path, "r")))
		return "(none)";
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void test_memory_max_written(void)
{
	fresh();
	put("memory.max", "");
	put("memory.swap.max", "");
	CU_ASSERT_EQUAL(cgroup_set_memory_max(dir, 64ull << 20), 0);
	CU_ASSERT_STRING_EQUAL(get("memory.max"), "67108864");
	CU_ASSERT_STRING_EQUAL(get("memory.swap.max"), "0");
}

/* A kernel without swap accounting has no memory.swap.max: the limit
 * alone is set, and that is no failure. */
static void test_memory_max_without_swap_file(void)
{
	fresh();
	put("memory.max", "");
	CU_ASSERT_EQUAL(cgroup_set_memory_max(dir, 4096), 0);
	CU_ASSERT_STRING_EQUAL(get("memory.max"), "4096");
	CU_ASSERT_STRING_EQUAL(get("memory.swap.max"), "(none)");
}

/* No memory controller in the group: the caller falls back to RLIMIT_AS. */
static void test_memory_max_without_controller(void)
{
	fresh();
	CU_ASSERT_EQUAL(cgroup_set_memory_max(dir, 1 << 20), -ENOENT);
	CU_ASSERT_EQUAL(cgroup_set_memory_max("/nonexistent/omni-cgroup", 1 << 20), -ENOENT);
}

static void test_oom_kills_read(void)
{
	fresh();
	CU_ASSERT_EQUAL(cgroup_oom_kills(dir), -ENOENT);
	put("memory.events", "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n");
	CU_ASSERT_EQUAL(cgroup_oom_kills(dir), 2);
	/* oom_group_kill (newer kernels) is another counter, not this one. */
	put("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_group_kill 5\noom_kill 0\n");
	CU_ASSERT_EQUAL(cgroup_oom_kills(dir), 0);
	put("memory.events", "low 0\nhigh 0\nmax 0\noom 1\n");
	CU_ASSERT_EQUAL(cgroup_oom_kills(dir), -ENOENT);
}

/* Turned on for the groups below only where the parent hands it down;
 * never asked of the parent. */
static void test_enable_memory(void)
{
	fresh();
	put("cgroup.controllers", "cpu io pids\n");
	put("cgroup.subtree_control", "");
	CU_ASSERT_EQUAL(cgroup_enable_memory(dir), -ENOTSUP);
	CU_ASSERT_STRING_EQUAL(get("cgroup.subtree_control"), "");
	put("cgroup.controllers", "cpu memory_x pids\n");
	CU_ASSERT_EQUAL(cgroup_enable_memory(dir), -ENOTSUP);
	put("cgroup.controllers", "cpu io memory pids\n");
	CU_ASSERT_EQUAL(cgroup_enable_memory(dir), 0);
	CU_ASSERT_STRING_EQUAL(get("cgroup.subtree_control"), "+memory");
	put("cgroup.subtree_control", "memory\n");
	CU_ASSERT_EQUAL(cgroup_enable_memory(dir), 0);
	CU_ASSERT_STRING_EQUAL(get("cgroup.subtree_control"), "memory\n");
	fresh();
	CU_ASSERT_EQUAL(cgroup_enable_memory(dir), -ENOENT);
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("cgroup", NULL, NULL);
	CU_add_test(s, "memory.max and memory.swap.max written", test_memory_max_written);
	CU_add_test(s, "memory.max without memory.swap.max", test_memory_max_without_swap_file);
	CU_add_test(s, "no memory controller", test_memory_max_without_controller);
	CU_add_test(s, "oom_kill read from memory.events", test_oom_kills_read);
	CU_add_test(s, "memory controller enabled below", test_enable_memory);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	if (dir[0])
		nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	return failed ? 1 : 0;
}
