/*
 * test_ctl.c - the <mount>/ctl line parser: commands, sizes, names, and
 * every way a line is refused.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "shm.h"

/* Parses a copy of text (ctl_parse splits its input in place). */
static int parse(const char *text, struct ctl_cmd *c, char *buf, size_t n)
{
	snprintf(buf, n, "%s", text);
	return ctl_parse(buf, c);
}

static void test_nothing_to_do(void)
{
	const char *lines[] = { "", "   ", "\t\r", "# a comment", "#", "  #x",
				"# a comment with more than five words in it" };
	struct ctl_cmd c;
	char buf[128];

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		c.op = CTL_SHM_RM;
		CU_ASSERT_EQUAL(parse(lines[i], &c, buf, sizeof(buf)), 0);
		CU_ASSERT_EQUAL(c.op, CTL_NONE);
		CU_ASSERT_PTR_NULL(c.name);
	}
}

static void test_create(void)
{
	struct ctl_cmd c;
	char buf[128];

	CU_ASSERT_EQUAL(parse("shm create frame 4096", &c, buf, sizeof(buf)), 0);
	CU_ASSERT_EQUAL(c.op, CTL_SHM_CREATE);
	CU_ASSERT_STRING_EQUAL(c.name, "frame");
	CU_ASSERT_EQUAL(c.size, 4096);

	CU_ASSERT_EQUAL(parse(" shm\tcreate  a.b_c-1   0\r", &c, buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(c.name, "a.b_c-1");
	CU_ASSERT_EQUAL(c.size, 0);
}

static void test_size_suffixes(void)
{
	static const struct { const char *s; int64_t v; } ok[] = {
		{ "3k", 3 << 10 }, { "3K", 3 << 10 }, { "5m", 5 << 20 }, { "5M", 5 << 20 },
		{ "2g", 2LL << 30 }, { "2G", 2LL << 30 },
		{ "9223372036854775807", INT64_MAX },
		{ "8589934591G", 8589934591LL << 30 },
	};
	struct ctl_cmd c;
	char buf[128], line[128];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(line, sizeof(line), "shm create x %s", ok[i].s);
		CU_ASSERT_EQUAL(parse(line, &c, buf, sizeof(buf)), 0);
		CU_ASSERT_EQUAL(c.size, ok[i].v);
	}
}

static void test_bad_sizes(void)
{
	const char *bad[] = { "-1", "+1", "1T", "1KB", "K", "1.5M", "0x10", "",
			      "9223372036854775808", "8589934592G", "18446744073709551616",
			      "99999999999999999999999" };
	struct ctl_cmd c;
	char buf[128], line[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), "shm create x %s", bad[i]);
		CU_ASSERT_EQUAL(parse(line, &c, buf, sizeof(buf)), -EINVAL);
	}
}

static void test_names(void)
{
	char longest[SHM_NAME_MAX + 1], line[SHM_NAME_MAX + 64], buf[sizeof(line)];
	struct ctl_cmd c;

	memset(longest, 'n', SHM_NAME_MAX);
	longest[SHM_NAME_MAX] = '\0';
	snprintf(line, sizeof(line), "shm create %s 1", longest);
	CU_ASSERT_EQUAL(parse(line, &c, buf, sizeof(buf)), 0);
	snprintf(line, sizeof(line), "shm create %sn 1", longest);
	CU_ASSERT_EQUAL(parse(line, &c, buf, sizeof(buf)), -EINVAL);

	CU_ASSERT_EQUAL(parse("shm create ../x 1", &c, buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(parse("shm create .. 1", &c, buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(parse("shm create a/b 1", &c, buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(parse("shm create \xc3\xa9 1", &c, buf, sizeof(buf)), -EINVAL);
}

static void test_rm(void)
{
	struct ctl_cmd c;
	char buf[128];

	CU_ASSERT_EQUAL(parse("shm rm frame", &c, buf, sizeof(buf)), 0);
	CU_ASSERT_EQUAL(c.op, CTL_SHM_RM);
	CU_ASSERT_STRING_EQUAL(c.name, "frame");
	/* No segment can have a bad name, so removing one finds nothing. */
	CU_ASSERT_EQUAL(parse("shm rm ../etc", &c, buf, sizeof(buf)), -ENOENT);
	CU_ASSERT_EQUAL(parse("shm rm", &c, buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(parse("shm rm a b", &c, buf, sizeof(buf)), -EINVAL);
}

static void test_unknown(void)
{
	const char *bad[] = { "frobnicate", "shm", "shm create x", "shm create x 1 2",
			      "shm create x 1 2 3", "SHM create x 1", "shm Create x 1",
			      "shm list", "shm rm # x" };
	struct ctl_cmd c;
	char buf[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_EQUAL(parse(bad[i], &c, buf, sizeof(buf)), -EINVAL);
		CU_ASSERT_EQUAL(c.op, CTL_NONE);
	}
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("ctl", NULL, NULL);
	CU_add_test(s, "nothing_to_do", test_nothing_to_do);
	CU_add_test(s, "create", test_create);
	CU_add_test(s, "size_suffixes", test_size_suffixes);
	CU_add_test(s, "bad_sizes", test_bad_sizes);
	CU_add_test(s, "names", test_names);
	CU_add_test(s, "rm", test_rm);
	CU_add_test(s, "unknown", test_unknown);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
