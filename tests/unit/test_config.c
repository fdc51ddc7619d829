/*
 * test_config.c - settings file: defaults, a full file, and every way a
 * file is refused; interpreter discovery from the environment.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "paths.h"

static char tmp[64];
static char file[256];
static struct config cfg;
static char err[512];

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw)
{
	(void)st, (void)fl, (void)ftw;
	return remove(p);
}

static int suite_init(void)
{
	strcpy(tmp, "/tmp/omni-config-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(file, sizeof(file), "%s/config.json", tmp);
	return 0;
}

static int suite_clean(void)
{
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int load_text(const char *text)
{
	FILE *f = fopen(file, "w");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(text, f);
	fclose(f);
	config_defaults(&cfg);
	err[0] = '\0';
	return config_load(&cfg, file, err, sizeof(err));
}

/* The file is refused and the reason names what is wrong. */
static void refused(const char *text, const char *needle)
{
	CU_ASSERT_EQUAL(load_text(text), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
	if (!strstr(err, needle))
		fprintf(stderr, "\n  reason '%s' lacks '%s'\n", err, needle);
	/* Nothing of a refused file is applied. */
	CU_ASSERT_EQUAL(cfg.max_workers, 32);
	CU_ASSERT_EQUAL(cfg.npythons, 0);
}

static void test_defaults(void)
{
	memset(&cfg, 0x5a, sizeof(cfg));
	config_defaults(&cfg);
	CU_ASSERT_EQUAL(cfg.npythons, 0);
	CU_ASSERT_STRING_EQUAL(cfg.default_python, "");
	CU_ASSERT_DOUBLE_EQUAL(cfg.job_timeout, 300.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(cfg.idle_timeout, 600.0, 1e-9);
	CU_ASSERT_EQUAL(cfg.max_workers, 32);
	CU_ASSERT_EQUAL(cfg.output_cap, 1048576);
	CU_ASSERT_EQUAL(cfg.zygote, 1);
	CU_ASSERT_EQUAL(cfg.cgroups, 1);
	CU_ASSERT_EQUAL(cfg.nprewarm, 0);
	CU_ASSERT_STRING_EQUAL(cfg.mount, "");
	CU_ASSERT_EQUAL(cfg.shm_quota, 4294967296ULL);
}

static void test_good_file(void)
{
	int rc = load_text("{\n"
			   "  \"pythons\": [\"/opt/py312/bin/python3\", \"/usr/bin/python3.11\"],\n"
			   "  \"default_python\": \"py311\",\n"
			   "  \"job_timeout\": 12.5,\n"
			   "  \"idle_timeout\": 0,\n"
			   "  \"max_workers\": 4,\n"
			   "  \"output_cap\": 65536,\n"
			   "  \"zygote\": false,\n"
			   "  \"cgroups\": false,\n"
			   "  \"prewarm\": [{\"spec\": \"SciPy==1.11.4, numpy==1.26.4\", \"python\": \"3.11\"},\n"
			   "              {\"spec\": \"base\"}],\n"
			   "  \"mount\": \"/omnipkg\",\n"
			   "  \"shm_quota\": 1073741824\n"
			   "}\n");

	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_EQUAL(cfg.npythons, 2);
	CU_ASSERT_STRING_EQUAL(cfg.pythons[0], "/opt/py312/bin/python3");
	CU_ASSERT_STRING_EQUAL(cfg.pythons[1], "/usr/bin/python3.11");
	CU_ASSERT_STRING_EQUAL(cfg.default_python, "py311");
	CU_ASSERT_DOUBLE_EQUAL(cfg.job_timeout, 12.5, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(cfg.idle_timeout, 0.0, 1e-9);
	CU_ASSERT_EQUAL(cfg.max_workers, 4);
	CU_ASSERT_EQUAL(cfg.output_cap, 65536);
	CU_ASSERT_EQUAL(cfg.zygote, 0);
	CU_ASSERT_EQUAL(cfg.cgroups, 0);
	CU_ASSERT_EQUAL_FATAL(cfg.nprewarm, 2);
	CU_ASSERT_STRING_EQUAL(cfg.prewarm[0].spec, "numpy==1.26.4,scipy==1.11.4");
	CU_ASSERT_STRING_EQUAL(cfg.prewarm[0].python, "3.11");
	CU_ASSERT_STRING_EQUAL(cfg.prewarm[1].spec, "base");
	CU_ASSERT_STRING_EQUAL(cfg.prewarm[1].python, "");
	CU_ASSERT_STRING_EQUAL(cfg.mount, "/omnipkg");
	CU_ASSERT_EQUAL(cfg.shm_quota, 1073741824ULL);
}

static void test_partial_file_keeps_defaults(void)
{
	CU_ASSERT_EQUAL_FATAL(load_text("{\"max_workers\": 2}"), 0);
	CU_ASSERT_EQUAL(cfg.max_workers, 2);
	CU_ASSERT_DOUBLE_EQUAL(cfg.job_timeout, 300.0, 1e-9);
	CU_ASSERT_EQUAL(cfg.zygote, 1);
	CU_ASSERT_EQUAL_FATAL(load_text("{}"), 0);
	CU_ASSERT_EQUAL(cfg.output_cap, 1048576);
}

static void test_unknown_key(void)
{
	refused("{\"max_workers\": 2, \"job_timout\": 5}", "unknown key \"job_timout\"");
	CU_ASSERT_PTR_NOT_NULL(strstr(err, file));
	refused("{\"prewarm\": [{\"spec\": \"base\", \"pyhton\": \"3.11\"}]}",
		"unknown key \"prewarm\"[0].\"pyhton\"");
}

static void test_wrong_type(void)
{
	refused("{\"job_timeout\": \"300\"}", "\"job_timeout\"");
	refused("{\"job_timeout\": 0}", "\"job_timeout\"");
	refused("{\"idle_timeout\": -1}", "\"idle_timeout\"");
	refused("{\"max_workers\": 1.5}", "\"max_workers\"");
	refused("{\"max_workers\": 0}", "\"max_workers\"");
	refused("{\"output_cap\": 0}", "\"output_cap\"");
	refused("{\"zygote\": 1}", "\"zygote\"");
	refused("{\"cgroups\": \"no\"}", "\"cgroups\"");
	refused("{\"mount\": \"relative/dir\"}", "\"mount\"");
	refused("{\"mount\": null}", "\"mount\"");
	refused("{\"shm_quota\": -5}", "\"shm_quota\"");
	refused("{\"pythons\": \"/usr/bin/python3\"}", "\"pythons\"");
	refused("{\"pythons\": [\"python3\"]}", "\"pythons\"[0]");
	refused("{\"pythons\": [\"/a\", 3]}", "\"pythons\"[1]");
	refused("{\"default_python\": \"eleven\"}", "\"default_python\"");
	refused("{\"default_python\": \"py3\"}", "\"default_python\"");
	refused("{\"default_python\": 3.11}", "\"default_python\"");
	refused("{\"prewarm\": {\"spec\": \"base\"}}", "\"prewarm\"");
	refused("{\"prewarm\": [\"base\"]}", "\"prewarm\"[0] must be an object");
	refused("{\"prewarm\": [{\"python\": \"3.11\"}]}", "\"prewarm\"[0] has no \"spec\"");
	refused("{\"prewarm\": [{\"spec\": \"numpy===1\"}]}", "'==='");
}

static void test_bad_files(void)
{
	refused("{\"max_workers\": 2,}", "invalid JSON");
	refused("[1, 2]", "one JSON object");
	refused("{\"max_workers\": 2, \"max_workers\": 3}", "\"max_workers\" appears twice");
	refused("", "invalid JSON");
}

static void test_missing_files(void)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/nope.json", tmp);
	config_defaults(&cfg);
	CU_ASSERT_EQUAL(config_load(&cfg, path, err, sizeof(err)), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "nope.json"));

	/* $OMNIPKG_CONFIG names a file that must exist... */
	setenv("OMNIPKG_CONFIG", path, 1);
	CU_ASSERT_EQUAL(config_load(&cfg, NULL, err, sizeof(err)), -ENOENT);
	/* ...while <home>/config.json is optional. */
	unsetenv("OMNIPKG_CONFIG");
	snprintf(path, sizeof(path), "%s/emptyhome", tmp);
	setenv("OMNIPKG_HOME", path, 1);
	cfg.max_workers = 99;
	CU_ASSERT_EQUAL(config_load(&cfg, NULL, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg.max_workers, 32);

	/* <home>/config.json is read when present. */
	setenv("OMNIPKG_HOME", tmp, 1);
	CU_ASSERT_EQUAL(load_text("{\"max_workers\": 7}"), 0);
	config_defaults(&cfg);
	CU_ASSERT_EQUAL(config_load(&cfg, NULL, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg.max_workers, 7);
	unsetenv("OMNIPKG_HOME");
}

/* An ELF file stands in for an interpreter: pyenv versions are read from
 * directory names, so discovery does not run it. */
static void make_fake_pyenv(const char *root, const char *ver)
{
	char dir[300], py[320], buf[4096];
	ssize_t n;
	int in, out;

	snprintf(dir, sizeof(dir), "%s/versions/%s/bin", root, ver);
	CU_ASSERT_EQUAL_FATAL(paths_mkdir_p(dir, 0755), 0);
	snprintf(py, sizeof(py), "%s/python", dir);
	in = open("/bin/true", O_RDONLY);
	out = open(py, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	CU_ASSERT_FATAL(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		CU_ASSERT_FATAL(write(out, buf, (size_t)n) == n);
	close(in);
	close(out);
}

static void test_discover_pythons(void)
{
	struct interp_set set = { 0 };
	char root[200], home[200], hp[220];
	char *old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;

	snprintf(root, sizeof(root), "%s/pyenv-root", tmp);
	snprintf(home, sizeof(home), "%s/home", tmp);
	snprintf(hp, sizeof(hp), "%s/.pyenv", home);
	make_fake_pyenv(root, "3.98.1");
	make_fake_pyenv(hp, "3.97.2");
	setenv("PATH", "", 1);
	config_defaults(&cfg);

	setenv("PYENV_ROOT", root, 1);
	CU_ASSERT_EQUAL(config_discover_pythons(&cfg, &set), 1);
	CU_ASSERT_EQUAL_FATAL(set.n, 1);
	CU_ASSERT_STRING_EQUAL(set.v[0].version, "3.98.1");
	CU_ASSERT_STRING_EQUAL(set.v[0].tag, "cp398");
	interp_set_free(&set);

	/* Without $PYENV_ROOT, ~/.pyenv. */
	unsetenv("PYENV_ROOT");
	setenv("HOME", home, 1);
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(config_discover_pythons(&cfg, &set), 1);
	CU_ASSERT_EQUAL_FATAL(set.n, 1);
	CU_ASSERT_STRING_EQUAL(set.v[0].version, "3.97.2");
	CU_ASSERT_EQUAL(set.default_idx, 0);
	interp_set_free(&set);

	/* The configured default is used when it exists... */
	setenv("PYENV_ROOT", root, 1);
	strcpy(cfg.default_python, "3.98");
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(config_discover_pythons(&cfg, &set), 1);
	CU_ASSERT_EQUAL(set.default_idx, 0);
	interp_set_free(&set);
	/* ...and never replaced by another when it does not. */
	strcpy(cfg.default_python, "3.97");
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(config_discover_pythons(&cfg, &set), 1);
	CU_ASSERT_EQUAL(set.default_idx, -1);
	interp_set_free(&set);
	unsetenv("PYENV_ROOT");

	if (old_path)
		setenv("PATH", old_path, 1);
	if (old_home)
		setenv("HOME", old_home, 1);
	free(old_path);
	free(old_home);
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	unsetenv("OMNIPKG_CONFIG");
	unsetenv("OMNIPKG_HOME");
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("config", suite_init, suite_clean);
	CU_add_test(s, "defaults", test_defaults);
	CU_add_test(s, "good file", test_good_file);
	CU_add_test(s, "partial file keeps defaults", test_partial_file_keeps_defaults);
	CU_add_test(s, "unknown key", test_unknown_key);
	CU_add_test(s, "wrong type or range", test_wrong_type);
	CU_add_test(s, "malformed files", test_bad_files);
	CU_add_test(s, "missing files", test_missing_files);
	CU_add_test(s, "discover pythons", test_discover_pythons);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
