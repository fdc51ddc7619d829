/*
 * test_bubble.c - bubble paths, resolution (pins and unpinned items),
 * listing and installation on a temp home.  Installation runs a stand-in
 * interpreter script that plays pip, so no network is needed and the
 * arguments can be checked exactly.
 * Every test gets a fresh home and interpreter (test_setup), and makes
 * the tree it needs itself.
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bubble.h"
#include "paths.h"

static char home[64];
static struct interp py;

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw)
{
	(void)st, (void)fl, (void)ftw;
	return remove(p);
}

static void test_setup(void)
{
	strcpy(home, "/tmp/omni-bubble-XXXXXX");
	if (!mkdtemp(home))
		home[0] = '\0';
	memset(&py, 0, sizeof(py));
	strcpy(py.version, "3.11.7");
	py.major = 3, py.minor = 11, py.micro = 7;
	strcpy(py.tag, "cp311");
	strcpy(py.path, "/nonexistent/python");
}

static void test_teardown(void)
{
	if (home[0])
		nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkdir_in_home(const char *rel)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", home, rel);
	CU_ASSERT_EQUAL_FATAL(paths_mkdir_p(p, 0755), 0);
}

static void touch_in_home(const char *rel)
{
	char p[256];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", home, rel);
	f = fopen(p, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fclose(f);
}

static void parse_spec(const char *s, struct spec *out)
{
	CU_ASSERT_EQUAL_FATAL(spec_parse(s, strlen(s), out, NULL, 0), 0);
}

static void test_path(void)
{
	struct spec_item it = { .name = "numpy", .version = "1.26.4" };
	char buf[256], small[16];

	CU_ASSERT_EQUAL(bubble_path("/h", "cp311", &it, buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/h/bubbles/cp311/numpy-1.26.4");
	CU_ASSERT_EQUAL(bubble_path("/h", "cp311", &it, small, sizeof(small)), -ENAMETOOLONG);
}

static void test_resolve(void)
{
	static char paths[SPEC_MAX_ITEMS][4096];
	char err[512], want[256];
	struct spec s;

	CU_ASSERT_FATAL(home[0] != '\0');
	parse_spec("scipy==1.11.4,numpy==1.26.4", &s);
	mkdir_in_home("bubbles/cp311/numpy-1.26.4");
	mkdir_in_home("bubbles/cp39/scipy-1.11.4");   /* other ABI: does not count */
	CU_ASSERT_EQUAL(bubble_resolve(home, &py, &s, paths, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "no bubble scipy==1.11.4 for python 3.11 (cp311): "
				    "run `omnipkg install scipy==1.11.4 --python 3.11`");

	touch_in_home("bubbles/cp311/scipy-1.11.4");  /* a file is not a bubble */
	CU_ASSERT_EQUAL(bubble_resolve(home, &py, &s, paths, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s/bubbles/cp311/scipy-1.11.4", home);
	remove(want);
	mkdir_in_home("bubbles/cp311/scipy-1.11.4");

	CU_ASSERT_EQUAL(bubble_resolve(home, &py, &s, paths, err, sizeof(err)), 2);
	snprintf(want, sizeof(want), "%s/bubbles/cp311/numpy-1.26.4", home);
	CU_ASSERT_STRING_EQUAL(paths[0], want);
	snprintf(want, sizeof(want), "%s/bubbles/cp311/scipy-1.11.4", home);
	CU_ASSERT_STRING_EQUAL(paths[1], want);

	parse_spec("base", &s);
	CU_ASSERT_EQUAL(bubble_resolve(home, &py, &s, paths, err, sizeof(err)), 0);
}

/* Resolves spec; asserts the count, the worker key and the first path. */
static void resolves(const char *spec, int n, const char *canon, const char *first)
{
	static char paths[SPEC_MAX_ITEMS][4096];
	static struct spec s, out;
	char err[512] = "", want[256];
	int rc;

	parse_spec(spec, &s);
	rc = bubble_resolve_spec(home, &py, &s, &out, paths, err, sizeof(err));
	CU_ASSERT_EQUAL(rc, n);
	CU_ASSERT_STRING_EQUAL(out.canon, canon);
	if (rc != n || strcmp(out.canon, canon) != 0)
		fprintf(stderr, "\n  '%s': %d '%s' (%s), want %d '%s'\n", spec, rc, out.canon, err, n, canon);
	if (first && rc > 0) {
		snprintf(want, sizeof(want), "%s/bubbles/%s/%s", home, py.tag, first);
		CU_ASSERT_STRING_EQUAL(paths[0], want);
	}
	/* Without the resolved spec: the same directories. */
	CU_ASSERT_EQUAL(bubble_resolve(home, &py, &s, paths, err, sizeof(err)), n);
}

static void test_resolve_unpinned(void)
{
	char target[256], link[256];

	CU_ASSERT_FATAL(home[0] != '\0');
	mkdir_in_home("bubbles/cp311/numpy-1.24.3");
	mkdir_in_home("bubbles/cp311/numpy-1.26.4");
	mkdir_in_home("bubbles/cp311/numpy-2.0.0");
	mkdir_in_home("bubbles/cp311/numpy-2.0");
	mkdir_in_home("bubbles/cp311/numpy-2.2.6");
	mkdir_in_home("bubbles/cp311/numpy-2.3.0rc1");
	mkdir_in_home("bubbles/cp311/numpy-financial-1.0");
	mkdir_in_home("bubbles/cp311/numpy-nightly");          /* not a version */
	mkdir_in_home("bubbles/cp311/.numpy-9.0.tmp-12");       /* being installed */
	touch_in_home("bubbles/cp311/numpy-9.1");               /* not a directory */
	mkdir_in_home("bubbles/cp311/scipy-1.11.4");
	mkdir_in_home("bubbles/cp39/numpy-3.0");                /* another ABI */
	snprintf(link, sizeof(link), "%s/bubbles/cp311/numpy-9.2", home);
	CU_ASSERT_EQUAL_FATAL(symlink("/nonexistent/numpy", link), 0);   /* dangling */

	resolves("numpy>=1.26", 1, "numpy==2.2.6", "numpy-2.2.6");
	resolves("numpy==2.2.6", 1, "numpy==2.2.6", "numpy-2.2.6");       /* the same worker */
	resolves("numpy", 1, "numpy==2.2.6", "numpy-2.2.6");               /* no rc unasked */
	resolves("numpy<2", 1, "numpy==1.26.4", "numpy-1.26.4");
	resolves("numpy~=1.24.0", 1, "numpy==1.24.3", "numpy-1.24.3");
	resolves("numpy>=1.26,!=2.2.6", 1, "numpy==2.0", "numpy-2.0");     /* 2.0 == 2.0.0: first by name */
	resolves("numpy>=2.3.0rc1", 1, "numpy==2.3.0rc1", "numpy-2.3.0rc1");
	resolves("numpy>=3", 0, "numpy", NULL);                           /* the interpreter's own */
	resolves("numpy-financial", 1, "numpy-financial==1.0", "numpy-financial-1.0");
	resolves("six, scipy>=1, numpy==1.26.4", 2, "numpy==1.26.4,scipy==1.11.4,six", "numpy-1.26.4");
	resolves("rich", 0, "rich", NULL);
	resolves("base", 0, "base", NULL);

	/* A linked bubble counts, as does a tag with no directory at all. */
	mkdir_in_home("elsewhere/numpy-1.0");
	mkdir_in_home("bubbles/cp312");
	snprintf(target, sizeof(target), "%s/elsewhere/numpy-1.0", home);
	snprintf(link, sizeof(link), "%s/bubbles/cp312/numpy-1.0", home);
	CU_ASSERT_EQUAL_FATAL(symlink(target, link), 0);
	strcpy(py.tag, "cp312");
	resolves("numpy", 1, "numpy==1.0", "numpy-1.0");
	strcpy(py.tag, "cp313");
	resolves("numpy>=1", 0, "numpy", NULL);
}

static void test_resolve_pin_missing(void)
{
	static char paths[SPEC_MAX_ITEMS][4096];
	static struct spec s, out;
	char err[512];

	CU_ASSERT_FATAL(home[0] != '\0');
	mkdir_in_home("bubbles/cp311/numpy-1.26.4");
	/* A pin is a directory name: 1.26.4.0 is not 1.26.4's bubble. */
	parse_spec("numpy==1.26.4.0,six", &s);
	CU_ASSERT_EQUAL(bubble_resolve_spec(home, &py, &s, &out, paths, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "no bubble numpy==1.26.4.0 for python 3.11 (cp311): "
				    "run `omnipkg install numpy==1.26.4.0 --python 3.11`");
}

struct seen {
	int n, stop_at;
	char line[8][128];
};

static int collect(const char *tag, const char *name, const char *version, const char *path, void *ud)
{
	struct seen *s = ud;
	const char *base = strrchr(path, '/');

	if (s->n < 8)
		snprintf(s->line[s->n], sizeof(s->line[0]), "%s %s %s %s", tag, name, version,
			 base ? base + 1 : "?");
	s->n++;
	return s->n == s->stop_at ? 7 : 0;
}

static void test_list(void)
{
	struct seen s = { 0 };
	char other[128];

	CU_ASSERT_FATAL(home[0] != '\0');
	mkdir_in_home("bubbles/cp311/numpy-1.26.4");
	mkdir_in_home("bubbles/cp311/scipy-1.11.4");
	mkdir_in_home("bubbles/cp39/scipy-1.11.4");
	mkdir_in_home("bubbles/cp311/.numpy-2.0.0.tmp-123");
	mkdir_in_home("bubbles/cp311/nodash");
	mkdir_in_home("bubbles/cp311/-1.0");
	touch_in_home("bubbles/cp311/README-1");
	mkdir_in_home("bubbles/cp312/scikit-learn-1.3.0");
	mkdir_in_home("bubbles/.trash/x-1");
	touch_in_home("bubbles/notes");

	CU_ASSERT_EQUAL(bubble_list(home, collect, &s), 0);
	CU_ASSERT_EQUAL_FATAL(s.n, 4);
	CU_ASSERT_STRING_EQUAL(s.line[0], "cp311 numpy 1.26.4 numpy-1.26.4");
	CU_ASSERT_STRING_EQUAL(s.line[1], "cp311 scipy 1.11.4 scipy-1.11.4");
	CU_ASSERT_STRING_EQUAL(s.line[2], "cp312 scikit-learn 1.3.0 scikit-learn-1.3.0");
	CU_ASSERT_STRING_EQUAL(s.line[3], "cp39 scipy 1.11.4 scipy-1.11.4");

	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	CU_ASSERT_EQUAL(bubble_list(home, collect, &s), 7);
	CU_ASSERT_EQUAL(s.n, 2);

	memset(&s, 0, sizeof(s));
	snprintf(other, sizeof(other), "%s/no-such-home", home);
	CU_ASSERT_EQUAL(bubble_list(other, collect, &s), 0);
	CU_ASSERT_EQUAL(s.n, 0);
}

/* A stand-in interpreter: logs its arguments and plays pip --target. */
static void fake_python(const char *name, int status)
{
	char body[512];
	FILE *f;

	snprintf(py.path, sizeof(py.path), "%s/%s", home, name);
	snprintf(body, sizeof(body),
		 "#!/bin/sh\n"
		 "echo \"$@\" >> '%s/pip.log'\n"
		 "mkdir -p \"$5\" && echo ok > \"$5/marker\"\n"
		 "exit %d\n", home, status);
	f = fopen(py.path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(body, f);
	fclose(f);
	chmod(py.path, 0755);
}

static int hidden_entries(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void read_log(char *buf, size_t n)
{
	char p[256];
	FILE *f;
	size_t got = 0;

	snprintf(p, sizeof(p), "%s/pip.log", home);
	buf[0] = '\0';
	if ((f = fopen(p, "r"))) {
		got = fread(buf, 1, n - 1, f);
		fclose(f);
	}
	buf[got] = '\0';
	remove(p);
}

static void test_install(void)
{
	char err[512], log[2048], want[1024], p[256], tagdir[128];
	struct spec s;
	struct stat st;

	py.minor = 12;
	strcpy(py.version, "3.12.1");
	strcpy(py.tag, "cp312");
	snprintf(tagdir, sizeof(tagdir), "%s/bubbles/cp312", home);
	CU_ASSERT_FATAL(home[0] != '\0');
	mkdir_in_home("bubbles/cp312/scikit-learn-1.3.0");

	fake_python("py-ok", 0);
	parse_spec("Six==1.16.0,scikit-learn==1.3.0", &s);
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 1, err, sizeof(err)), 0);
	read_log(log, sizeof(log));
	/* scikit-learn already exists: only six is installed. */
	snprintf(want, sizeof(want),
		 "-m pip install --target %s/.six-1.16.0.tmp-%ld --disable-pip-version-check --quiet six==1.16.0\n",
		 tagdir, (long)getpid());
	CU_ASSERT_STRING_EQUAL(log, want);
	snprintf(p, sizeof(p), "%s/six-1.16.0/marker", tagdir);
	CU_ASSERT_EQUAL(stat(p, &st), 0);
	CU_ASSERT_EQUAL(hidden_entries(tagdir), 0);

	/* Installed bubbles are kept: pip does not run again. */
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 1, err, sizeof(err)), 0);
	read_log(log, sizeof(log));
	CU_ASSERT_STRING_EQUAL(log, "");

	/* Not quiet: no --quiet.  A first-time tag dir is created. */
	py.minor = 13;
	strcpy(py.version, "3.13.0");
	strcpy(py.tag, "cp313");
	parse_spec("six==1.16.0", &s);
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 0, err, sizeof(err)), 0);
	read_log(log, sizeof(log));
	CU_ASSERT_PTR_NULL(strstr(log, "--quiet"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "--disable-pip-version-check six==1.16.0"));

	/* A failing pip leaves nothing behind and reports its status. */
	fake_python("py-fail", 3);
	parse_spec("numpy==9.9.9", &s);
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 1, err, sizeof(err)), -EIO);
	CU_ASSERT_STRING_EQUAL(err, "pip install numpy==9.9.9 for python 3.13.0 (cp313) failed with exit status 3");
	snprintf(tagdir, sizeof(tagdir), "%s/bubbles/cp313", home);
	CU_ASSERT_EQUAL(hidden_entries(tagdir), 0);
	snprintf(p, sizeof(p), "%s/numpy-9.9.9", tagdir);
	CU_ASSERT_EQUAL(stat(p, &st), -1);
	read_log(log, sizeof(log));

	/* Only pins can be installed; nothing runs otherwise. */
	fake_python("py-ok2", 0);
	parse_spec("six==1.16.0,numpy>=1.26,<2", &s);
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 1, err, sizeof(err)), -EINVAL);
	CU_ASSERT_STRING_EQUAL(err, "install needs exact pins: 'numpy>=1.26,<2' is not 'name==version'");
	read_log(log, sizeof(log));
	CU_ASSERT_STRING_EQUAL(log, "");

	/* An interpreter that cannot be run. */
	parse_spec("numpy==9.9.9", &s);
	strcpy(py.path, "/nonexistent/python");
	CU_ASSERT_EQUAL(bubble_install(home, &py, &s, 1, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "cannot run python /nonexistent/python: No such file or directory");
	CU_ASSERT_EQUAL(hidden_entries(tagdir), 0);
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite_with_setup_and_teardown("bubble", NULL, NULL, test_setup, test_teardown);
	CU_add_test(s, "path", test_path);
	CU_add_test(s, "resolve", test_resolve);
	CU_add_test(s, "resolve unpinned items", test_resolve_unpinned);
	CU_add_test(s, "resolve a missing pin", test_resolve_pin_missing);
	CU_add_test(s, "list", test_list);
	CU_add_test(s, "install", test_install);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
