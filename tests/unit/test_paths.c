/*
 * test_paths.c - where things live, and the runtime directory's guard.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"

static char tmp[64];

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw)
{
	(void)st, (void)fl, (void)ftw;
	return remove(p);
}

static int suite_init(void)
{
	strcpy(tmp, "/tmp/omni-paths-XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int suite_clean(void)
{
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_runtime_dir_sources(void)
{
	char buf[PATH_MAX], want[64];

	setenv("OMNIPKG_RUNTIME_DIR", "/x/rt", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
	CU_ASSERT_EQUAL(paths_runtime_dir(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/x/rt");
	CU_ASSERT_EQUAL(paths_socket(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/x/rt/omnipkgd.sock");
	setenv("OMNIPKG_RUNTIME_DIR", "rel/rt", 1);
	CU_ASSERT_EQUAL(paths_runtime_dir(buf, sizeof(buf)), -EINVAL);

	unsetenv("OMNIPKG_RUNTIME_DIR");
	CU_ASSERT_EQUAL(paths_runtime_dir(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/run/user/7/omnipkg");

	unsetenv("XDG_RUNTIME_DIR");
	snprintf(want, sizeof(want), "/tmp/omnipkg-%lu", (unsigned long)getuid());
	CU_ASSERT_EQUAL(paths_runtime_dir(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, want);
	CU_ASSERT_EQUAL(paths_runtime_dir(buf, 5), -ENAMETOOLONG);
}

static void test_socket_too_long(void)
{
	char buf[PATH_MAX], dir[200];

	memset(dir, 'd', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	CU_ASSERT_EQUAL(paths_socket(buf, sizeof(buf)), -ENAMETOOLONG);
	unsetenv("OMNIPKG_RUNTIME_DIR");
}

static void test_home_sources(void)
{
	char buf[PATH_MAX];

	setenv("OMNIPKG_HOME", "/data/omni", 1);
	CU_ASSERT_EQUAL(paths_home(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/data/omni");
	unsetenv("OMNIPKG_HOME");
	setenv("XDG_DATA_HOME", "/xdg/data", 1);
	CU_ASSERT_EQUAL(paths_home(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/xdg/data/omnipkg");
	unsetenv("XDG_DATA_HOME");
	setenv("HOME", "/home/u", 1);
	CU_ASSERT_EQUAL(paths_home(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/home/u/.local/share/omnipkg");
}

static void test_runtime_dir_make(void)
{
	char buf[PATH_MAX], dir[128];
	struct stat st;

	umask(022);
	snprintf(dir, sizeof(dir), "%s/a/b/rt", tmp);
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, dir);
	CU_ASSERT_EQUAL_FATAL(lstat(dir, &st), 0);
	CU_ASSERT(S_ISDIR(st.st_mode));
	CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);
	/* Again: an existing good directory is accepted. */
	CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), 0);

	/* Group or other bits: refused, not repaired. */
	chmod(dir, 0750);
	CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), -EPERM);
	chmod(dir, 0701);
	CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), -EPERM);
	chmod(dir, 0700);
	/* Another owner: only root can stage that. */
	if (getuid() == 0) {
		CU_ASSERT_EQUAL_FATAL(chown(dir, 1, 1), 0);
		CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), -EPERM);
		CU_ASSERT_EQUAL(chown(dir, 0, 0), 0);
	}

	/* A symlink to a good directory is still refused. */
	snprintf(dir, sizeof(dir), "%s/link", tmp);
	CU_ASSERT_EQUAL_FATAL(symlink("a/b/rt", dir), 0);
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	CU_ASSERT_EQUAL(paths_runtime_dir_make(buf, sizeof(buf)), -EPERM);
	unsetenv("OMNIPKG_RUNTIME_DIR");
}

static void test_mkdir_p(void)
{
	char dir[128], file[128];
	struct stat st;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/m//n/o/", tmp);
	CU_ASSERT_EQUAL(paths_mkdir_p(dir, 0755), 0);
	CU_ASSERT_EQUAL(paths_mkdir_p(dir, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/m/n/o", tmp);
	CU_ASSERT_EQUAL(stat(dir, &st), 0);
	CU_ASSERT(S_ISDIR(st.st_mode));

	snprintf(file, sizeof(file), "%s/m/file", tmp);
	f = fopen(file, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fclose(f);
	snprintf(dir, sizeof(dir), "%s/m/file/sub", tmp);
	CU_ASSERT_EQUAL(paths_mkdir_p(dir, 0755), -ENOTDIR);
	CU_ASSERT_EQUAL(paths_mkdir_p("", 0755), -EINVAL);
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("paths", suite_init, suite_clean);
	CU_add_test(s, "runtime dir sources", test_runtime_dir_sources);
	CU_add_test(s, "socket path too long", test_socket_too_long);
	CU_add_test(s, "home sources", test_home_sources);
	CU_add_test(s, "runtime dir make", test_runtime_dir_make);
	CU_add_test(s, "mkdir -p", test_mkdir_p);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
