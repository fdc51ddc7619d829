/*
 * test_interp.c - interpreter discovery, precedence and resolution.
 *
 * Builds fake pyenv roots and PATH directories in a temp dir.  The fake
 * pyenv entries are copies of one real interpreter binary: discovery takes
 * their versions from the directory names, and copies (unlike symlinks)
 * have distinct real paths.  Needs one real Python 3 ELF binary, found
 * under $PYENV_ROOT or ~/.pyenv (or named by $OMNI_TEST_PYTHON).
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interp.h"
#include "paths.h"

static char tmp[PATH_MAX];
static char real_py[PATH_MAX];     /* a real Python 3 ELF binary */
static char real_ver[32];          /* its version, from its pyenv dir name */
static int real_major, real_minor, real_micro;

/* snprintf that fails the test instead of truncating a path. */
static void fmt(char *buf, size_t n, const char *f, ...)
{
	va_list ap;
	int len;

	va_start(ap, f);
	len = vsnprintf(buf, n, f, ap);
	va_end(ap);
	CU_ASSERT_FATAL(len >= 0 && (size_t)len < n);
}

static int has_magic(const char *path)
{
	char m[4] = { 0 };
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 0;
	if (read(fd, m, 4) != 4)
		m[0] = 0;
	close(fd);
	return memcmp(m, "\x7f" "ELF", 4) == 0;
}

static int find_real_python(void)
{
	const char *env = getenv("OMNI_TEST_PYTHON"), *root = getenv("PYENV_ROOT");
	char dir[PATH_MAX], p[PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (env && realpath(env, real_py)) {
		struct interp it;

		if (interp_probe(real_py, &it) < 0)
			return -1;
		strcpy(real_ver, it.version);
		return interp_parse_version(real_ver, &real_major, &real_minor, &real_micro) == 3 ? 0 : -1;
	}
	if (root && root[0])
		snprintf(dir, sizeof(dir), "%.4000s/versions", root);
	else
		snprintf(dir, sizeof(dir), "%.4000s/.pyenv/versions", getenv("HOME") ? getenv("HOME") : "/root");
	if (!(d = opendir(dir)))
		return -1;
	while ((de = readdir(d))) {
		int ma, mi, mc;

		if (interp_parse_version(de->d_name, &ma, &mi, &mc) != 3 || ma != 3)
			continue;
		if (snprintf(p, sizeof(p), "%s/%s/bin/python", dir, de->d_name) >= (int)sizeof(p) ||
		    strlen(de->d_name) >= sizeof(real_ver) || !realpath(p, real_py) || !has_magic(real_py))
			continue;
		strcpy(real_ver, de->d_name);
		real_major = ma, real_minor = mi, real_micro = mc;
		closedir(d);
		return 0;
	}
	closedir(d);
	return -1;
}

static void mkpath(const char *rel, char *out)
{
	fmt(out, PATH_MAX, "%s/%s", tmp, rel);
	CU_ASSERT_EQUAL_FATAL(paths_mkdir_p(out, 0755), 0);
}

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	ssize_t n;
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);

	CU_ASSERT_FATAL(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		CU_ASSERT_EQUAL_FATAL(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

/* <root>/versions/<ver>/bin/python as a copy (or a symlink) of the real binary. */
static void fake_pyenv(const char *root, const char *ver, int link)
{
	char rel[PATH_MAX], dir[PATH_MAX], py[PATH_MAX + 8];

	fmt(rel, sizeof(rel), "%s/versions/%s/bin", root, ver);
	mkpath(rel, dir);
	fmt(py, sizeof(py), "%s/python", dir);
	if (link) {
		CU_ASSERT_EQUAL_FATAL(symlink(real_py, py), 0);
	} else {
		copy_file(real_py, py);
	}
}

static void write_script(const char *path, const char *body)
{
	FILE *f = fopen(path, "w");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(body, f);
	fclose(f);
	chmod(path, 0755);
}

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw)
{
	(void)st, (void)fl, (void)ftw;
	return remove(p);
}

static int suite_init(void)
{
	strcpy(tmp, "/tmp/omni-interp-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	if (find_real_python() < 0) {
		fprintf(stderr, "no real Python 3 interpreter found; set OMNI_TEST_PYTHON\n");
		return -1;
	}
	return 0;
}

static int suite_clean(void)
{
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_parse_version(void)
{
	int ma = 0, mi = 0, mc = 0;

	CU_ASSERT_EQUAL(interp_parse_version("3.11", &ma, &mi, &mc), 2);
	CU_ASSERT(ma == 3 && mi == 11 && mc == -1);
	CU_ASSERT_EQUAL(interp_parse_version("3.11.7", &ma, &mi, &mc), 3);
	CU_ASSERT(ma == 3 && mi == 11 && mc == 7);
	CU_ASSERT_EQUAL(interp_parse_version("3", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("3.11.7.1", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("3..1", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("3.11 ", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("v3.11", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("", &ma, &mi, &mc), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_version("3.13.0t", &ma, &mi, &mc), -EINVAL);
}

static void test_probe(void)
{
	struct interp it;
	char tag[16], script[PATH_MAX];

	CU_ASSERT_EQUAL_FATAL(interp_probe(real_py, &it), 0);
	CU_ASSERT_STRING_EQUAL(it.version, real_ver);
	CU_ASSERT_EQUAL(it.major, real_major);
	CU_ASSERT_EQUAL(it.minor, real_minor);
	CU_ASSERT_EQUAL(it.micro, real_micro);
	fmt(tag, sizeof(tag), "cp%d%d", real_major, real_minor);
	CU_ASSERT_STRING_EQUAL(it.tag, tag);
	CU_ASSERT_STRING_EQUAL(it.path, real_py);

	CU_ASSERT_EQUAL(interp_probe("/bin/false", &it), -ENOEXEC);
	CU_ASSERT_EQUAL(interp_probe("relative/python", &it), -EINVAL);
	fmt(script, sizeof(script), "%s/nope", tmp);
	CU_ASSERT_EQUAL(interp_probe(script, &it), -ENOENT);
	fmt(script, sizeof(script), "%s/liar", tmp);
	write_script(script, "#!/bin/sh\necho 'not a version'\n");
	CU_ASSERT_EQUAL(interp_probe(script, &it), -ENOEXEC);
}

static void test_pyenv_resolution(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], err[512], want[PATH_MAX + 32];
	int n;

	mkpath("res/pyenv", root);
	fake_pyenv("res/pyenv", "3.11.7", 0);
	fake_pyenv("res/pyenv", "3.11.2", 0);
	fake_pyenv("res/pyenv", "3.9.1", 0);
	fake_pyenv("res/pyenv", "2.7.18", 0);   /* Python 2: skipped */
	mkpath("res/pyenv/versions/.hidden/bin", want);
	mkpath("res/pyenv/versions/3.10.0/bin", want); /* shell script: skipped */
	strcat(want, "/python");
	write_script(want, "#!/bin/sh\nexit 0\n");

	n = interp_discover(&set, NULL, 0, root, NULL, NULL);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_EQUAL(set.n, 3);
	/* Newest first within pyenv; newest is the default without PATH. */
	CU_ASSERT_STRING_EQUAL(set.v[0].version, "3.11.7");
	CU_ASSERT_STRING_EQUAL(set.v[1].version, "3.11.2");
	CU_ASSERT_STRING_EQUAL(set.v[2].version, "3.9.1");
	CU_ASSERT_EQUAL(set.default_idx, 0);

	CU_ASSERT_EQUAL(interp_resolve(&set, "3.11", &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.7");
	CU_ASSERT_STRING_EQUAL(it.tag, "cp311");
	CU_ASSERT_EQUAL(it.source, INTERP_PYENV);
	fmt(want, sizeof(want), "%s/versions/3.11.7/bin/python", root);
	CU_ASSERT_STRING_EQUAL(it.path, want);

	CU_ASSERT_EQUAL(interp_resolve(&set, "3.11.2", &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.2");
	CU_ASSERT_EQUAL(interp_resolve(&set, "3.9", &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.9.1");
	CU_ASSERT_STRING_EQUAL(it.tag, "cp39");

	CU_ASSERT_EQUAL(interp_resolve(&set, "2.1", &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "python 2.1 not found (available: 3.9.1, 3.11.2, 3.11.7)");
	CU_ASSERT_EQUAL(interp_resolve(&set, "3.11.9", &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_EQUAL(interp_resolve(&set, "eleven", &it, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "available: 3.9.1, 3.11.2, 3.11.7"));

	CU_ASSERT_EQUAL(interp_resolve(&set, NULL, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.7");
	CU_ASSERT_EQUAL(interp_resolve(&set, "", &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.7");
	interp_set_free(&set);

	/* A default by name. */
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(interp_discover(&set, NULL, 0, root, NULL, "3.9"), 3);
	CU_ASSERT_EQUAL_FATAL(set.default_idx, 2);
	CU_ASSERT_STRING_EQUAL(set.v[set.default_idx].version, "3.9.1");
	interp_set_free(&set);
	memset(&set, 0, sizeof(set));
	/* A default that names nothing: no default, explicit names still work. */
	CU_ASSERT_EQUAL(interp_discover(&set, NULL, 0, root, NULL, "2.1"), 3);
	CU_ASSERT_EQUAL(set.default_idx, -1);
	CU_ASSERT_EQUAL(interp_resolve(&set, NULL, &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "the configured default python was not found; "
				    "name one (available: 3.9.1, 3.11.2, 3.11.7)");
	CU_ASSERT_EQUAL(interp_resolve(&set, "3.9", &it, err, sizeof(err)), 0);
	interp_set_free(&set);
}

static void test_absolute_path(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], err[512], want[PATH_MAX + 32];

	mkpath("abs/pyenv", root);
	fake_pyenv("abs/pyenv", "3.11.2", 0);
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, NULL, NULL), 1);

	/* Not discovered: probed, and marked explicit. */
	CU_ASSERT_EQUAL(interp_resolve(&set, real_py, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, real_ver);
	CU_ASSERT_STRING_EQUAL(it.path, real_py);
	CU_ASSERT_EQUAL(it.source, INTERP_EXPLICIT);

	/* Discovered: the entry itself, with its own version. */
	fmt(want, sizeof(want), "%s/versions/3.11.2/bin/python", root);
	CU_ASSERT_EQUAL(interp_resolve(&set, want, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.2");
	CU_ASSERT_EQUAL(it.source, INTERP_PYENV);

	fmt(want, sizeof(want), "%s/no/python", tmp);
	CU_ASSERT_EQUAL(interp_resolve(&set, want, &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "No such file"));
	CU_ASSERT_EQUAL(interp_resolve(&set, "/bin/false", &it, err, sizeof(err)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a working Python"));
	interp_set_free(&set);
}

static void test_precedence(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], bin[PATH_MAX], shim[PATH_MAX], py[PATH_MAX + 16], path_env[3 * PATH_MAX];
	char v[32], err[512];
	const char *cfg[1] = { real_py };

	/* config: the real binary; pyenv: copies of it claiming other micros;
	 * PATH: a shim script, then a link to the real binary. */
	mkpath("prec/pyenv", root);
	fmt(v, sizeof(v), "%d.%d.%d", real_major, real_minor, real_micro + 50);
	fake_pyenv("prec/pyenv", v, 0);
	fmt(v, sizeof(v), "%d.%d.%d", real_major, real_minor, real_micro + 40);
	fake_pyenv("prec/pyenv", v, 0);
	mkpath("prec/shims", shim);
	fmt(py, sizeof(py), "%s/python3", shim);
	write_script(py, "#!/bin/sh\nexit 1\n");
	mkpath("prec/bin", bin);
	fmt(py, sizeof(py), "%s/python3", bin);
	CU_ASSERT_EQUAL_FATAL(symlink(real_py, py), 0);
	fmt(path_env, sizeof(path_env), "relative:%s::%s", shim, bin);

	/* config > pyenv, even against a higher micro. */
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, cfg, 1, root, path_env, NULL), 3);
	CU_ASSERT_EQUAL(set.v[0].source, INTERP_CONFIG);
	CU_ASSERT_EQUAL(set.v[1].source, INTERP_PYENV);
	CU_ASSERT_EQUAL(set.v[2].source, INTERP_PYENV);
	fmt(v, sizeof(v), "%d.%d", real_major, real_minor);
	CU_ASSERT_EQUAL(interp_resolve(&set, v, &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(it.source, INTERP_CONFIG);
	CU_ASSERT_STRING_EQUAL(it.version, real_ver);
	/* The PATH python3 is the config entry by real path: it is the default. */
	CU_ASSERT_EQUAL(set.default_idx, 0);
	interp_set_free(&set);

	/* pyenv > PATH. */
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, path_env, NULL), 3);
	CU_ASSERT_EQUAL(set.v[2].source, INTERP_PATH);
	CU_ASSERT_STRING_EQUAL(set.v[2].path, py);
	CU_ASSERT_STRING_EQUAL(set.v[2].version, real_ver);
	CU_ASSERT_EQUAL(interp_resolve(&set, v, &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(it.source, INTERP_PYENV);
	CU_ASSERT_EQUAL(it.micro, real_micro + 50);
	/* Exact version only PATH has. */
	CU_ASSERT_EQUAL(interp_resolve(&set, real_ver, &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(it.source, INTERP_PATH);
	/* The default is the first real python3 on PATH, not the newest. */
	CU_ASSERT_EQUAL(set.default_idx, 2);
	interp_set_free(&set);
}

static void test_dedup_realpath(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], bin[PATH_MAX], py[PATH_MAX + 16], named[PATH_MAX];
	const char *cfg[2];

	/* The same binary by five names, one of them twice in config. */
	mkpath("dup/pyenv", root);
	fake_pyenv("dup/pyenv", real_ver, 1);
	fake_pyenv("dup/pyenv", "custom-env", 1);
	mkpath("dup/bin", bin);
	fmt(py, sizeof(py), "%s/python3", bin);
	CU_ASSERT_EQUAL_FATAL(symlink(real_py, py), 0);
	fmt(named, sizeof(named), "%s/python3.%d", bin, real_minor);
	CU_ASSERT_EQUAL_FATAL(symlink(real_py, named), 0);
	cfg[0] = py;
	cfg[1] = real_py;

	CU_ASSERT_EQUAL(interp_discover(&set, cfg, 2, root, bin, NULL), 1);
	CU_ASSERT_EQUAL_FATAL(set.n, 1);
	CU_ASSERT_EQUAL(set.v[0].source, INTERP_CONFIG);
	CU_ASSERT_STRING_EQUAL(set.v[0].path, py);
	CU_ASSERT_EQUAL(set.default_idx, 0);

	it = set.v[0];
	fmt(it.path, sizeof(it.path), "%s", named);
	CU_ASSERT_EQUAL(interp_add(&set, &it), 0);
	CU_ASSERT_EQUAL(set.n, 1);
	fmt(it.path, sizeof(it.path), "%s/missing", tmp);
	CU_ASSERT_EQUAL(interp_add(&set, &it), -ENOENT);
	CU_ASSERT_EQUAL(set.n, 1);
	interp_set_free(&set);

	/* A pyenv name that is not a version is probed. */
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(interp_discover(&set, NULL, 0, root, NULL, NULL), 1);
	CU_ASSERT_STRING_EQUAL(set.v[0].version, real_ver);
	CU_ASSERT_EQUAL(set.v[0].source, INTERP_PYENV);
	interp_set_free(&set);
}

/* Asserts that want is refused as a bad name, with the forms and what is available. */
static void bad_name(const struct interp_set *set, const char *want)
{
	struct interp it;
	char err[512];

	err[0] = '\0';
	CU_ASSERT_EQUAL(interp_resolve(set, want, &it, err, sizeof(err)), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_name(want, NULL, NULL, NULL), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "give 3.11, 3.11.7, py311, python3.11, python3 or an absolute path"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "(available: 3.9.1, 3.11.2, 3.11.7, 3.13.0)"));
	if (!strstr(err, "available: 3.9.1"))
		fprintf(stderr, "\n  name '%s': reason '%s'\n", want, err);
}

/* Resolves want and asserts the version it picked. */
static void good_name(const struct interp_set *set, const char *want, const char *version)
{
	struct interp it;
	char err[512] = "";

	CU_ASSERT_EQUAL(interp_resolve(set, want, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.version, version);
	if (strcmp(it.version, version) != 0)
		fprintf(stderr, "\n  name '%s': got %s (%s), want %s\n", want, it.version, err, version);
}

static void test_parse_name(void)
{
	int ma = 0, mi = 0, mc = 0;

	CU_ASSERT_EQUAL(interp_parse_name("py311", &ma, &mi, &mc), 2);
	CU_ASSERT(ma == 3 && mi == 11 && mc == -1);
	CU_ASSERT_EQUAL(interp_parse_name("py39", &ma, &mi, &mc), 2);
	CU_ASSERT(ma == 3 && mi == 9 && mc == -1);
	CU_ASSERT_EQUAL(interp_parse_name("py30", &ma, &mi, &mc), 2);
	CU_ASSERT(ma == 3 && mi == 0);
	CU_ASSERT_EQUAL(interp_parse_name("python3.12", &ma, &mi, &mc), 2);
	CU_ASSERT(ma == 3 && mi == 12 && mc == -1);
	CU_ASSERT_EQUAL(interp_parse_name("python3", &ma, &mi, &mc), 1);
	CU_ASSERT(ma == 3 && mi == -1 && mc == -1);
	CU_ASSERT_EQUAL(interp_parse_name("3.11.7", &ma, &mi, &mc), 3);
	CU_ASSERT(ma == 3 && mi == 11 && mc == 7);
	CU_ASSERT_EQUAL(interp_parse_name("3.8", NULL, NULL, NULL), 2);
	CU_ASSERT_EQUAL(interp_parse_name("py309", NULL, NULL, NULL), -EINVAL);  /* leading zero */
	CU_ASSERT_EQUAL(interp_parse_name("py0", NULL, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_name("python3.11.7", NULL, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_name("PY311", NULL, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(interp_parse_name(NULL, NULL, NULL, NULL), -EINVAL);
}

static void test_names(void)
{
	static const char *const bad[] = {
		"py", "py3", "python", "python3.x", "py3111111", "3.11.", "../3.11", "3", "3.",
		"py311 ", " py311", "py-311", "py3.11", "python3.", "python3.11.7", "python311",
		"python 3.11", "cpython3.11", "pypy3", "python2", "3.11.7.1", "py+311",
	};
	struct interp_set set = { 0 };
	char root[PATH_MAX];

	mkpath("names/pyenv", root);
	fake_pyenv("names/pyenv", "3.11.7", 0);
	fake_pyenv("names/pyenv", "3.11.2", 0);
	fake_pyenv("names/pyenv", "3.9.1", 0);
	fake_pyenv("names/pyenv", "3.13.0", 0);
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, NULL, NULL), 4);

	good_name(&set, "3.11", "3.11.7");
	good_name(&set, "3.11.2", "3.11.2");
	good_name(&set, "py311", "3.11.7");
	good_name(&set, "py39", "3.9.1");
	good_name(&set, "py313", "3.13.0");
	good_name(&set, "python3.11", "3.11.7");
	good_name(&set, "python3.9", "3.9.1");
	good_name(&set, "python3", "3.13.0");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		bad_name(&set, bad[i]);
	interp_set_free(&set);
}

/* python3 is the newest minor, then the usual precedence within it. */
static void test_python3_precedence(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], err[512], v[32];
	const char *cfg[1] = { real_py };

	mkpath("py3/pyenv", root);
	fmt(v, sizeof(v), "%d.%d.%d", real_major, real_minor, real_micro + 9);
	fake_pyenv("py3/pyenv", v, 0);
	fake_pyenv("py3/pyenv", "3.1.0", 0);
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, cfg, 1, root, NULL, NULL), 3);
	CU_ASSERT_EQUAL(interp_resolve(&set, "python3", &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(it.source, INTERP_CONFIG);   /* config beats pyenv's higher micro */
	CU_ASSERT_STRING_EQUAL(it.version, real_ver);
	interp_set_free(&set);

	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL(interp_resolve(&set, "python3", &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "python python3 not found (available: none)");
}

/* <tmp>/<rel>/bin/python -> target, with pyvenv.cfg in <rel> (or in <rel>/bin). */
static void fake_venv(const char *rel, const char *target, int cfg_in_bin, char *py, size_t n)
{
	char bin[PATH_MAX], cfg[PATH_MAX + 16];
	FILE *f;

	fmt(cfg, sizeof(cfg), "%s/bin", rel);
	mkpath(cfg, bin);
	fmt(py, n, "%s/python", bin);
	CU_ASSERT_EQUAL_FATAL(symlink(target, py), 0);
	if (cfg_in_bin)
		fmt(cfg, sizeof(cfg), "%s/pyvenv.cfg", bin);
	else
		fmt(cfg, sizeof(cfg), "%s/%s/pyvenv.cfg", tmp, rel);
	f = fopen(cfg, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs("home = /somewhere\ninclude-system-site-packages = false\n", f);
	fclose(f);
}

static void test_venv(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], base[PATH_MAX + 32], venv[PATH_MAX], venv2[PATH_MAX], plain[PATH_MAX];
	char venv3[PATH_MAX], dir[PATH_MAX], err[512];

	mkpath("venv/pyenv", root);
	fake_pyenv("venv/pyenv", "3.11.2", 0);
	fmt(base, sizeof(base), "%s/versions/3.11.2/bin/python", root);
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, NULL, NULL), 1);

	/* A venv of a discovered interpreter: its own path, the base's version. */
	fake_venv("venv/env1", base, 0, venv, sizeof(venv));
	CU_ASSERT(interp_is_venv(venv));
	CU_ASSERT(!interp_is_venv(base));
	CU_ASSERT_EQUAL(interp_lookup(&set, venv, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv);
	CU_ASSERT_STRING_EQUAL(it.version, "3.11.2");
	CU_ASSERT_STRING_EQUAL(it.tag, "cp311");
	CU_ASSERT_EQUAL(it.source, INTERP_EXPLICIT);
	CU_ASSERT_EQUAL(interp_resolve(&set, venv, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv);

	/* pyvenv.cfg next to the binary counts too. */
	fake_venv("venv/env2", base, 1, venv2, sizeof(venv2));
	CU_ASSERT_EQUAL(interp_lookup(&set, venv2, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv2);
	CU_ASSERT_EQUAL(it.source, INTERP_EXPLICIT);

	/* A plain symlink (no pyvenv.cfg) is still the interpreter it links to. */
	mkpath("venv/plain", dir);
	fmt(plain, sizeof(plain), "%s/python", dir);
	CU_ASSERT_EQUAL_FATAL(symlink(base, plain), 0);
	CU_ASSERT(!interp_is_venv(plain));
	CU_ASSERT_EQUAL(interp_lookup(&set, plain, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, base);
	CU_ASSERT_EQUAL(it.source, INTERP_PYENV);

	/* A venv of an interpreter not discovered: probed, keeping its path. */
	fake_venv("venv/env3", real_py, 0, venv3, sizeof(venv3));
	CU_ASSERT_EQUAL(interp_lookup(&set, venv3, &it, err, sizeof(err)), -EAGAIN);
	CU_ASSERT_EQUAL(interp_resolve(&set, venv3, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv3);
	CU_ASSERT_STRING_EQUAL(it.version, real_ver);
	CU_ASSERT_EQUAL(it.source, INTERP_EXPLICIT);

	/* Added to a set, a venv stays apart from its base, once. */
	CU_ASSERT_EQUAL(interp_lookup(&set, venv, &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(interp_add(&set, &it), 0);
	CU_ASSERT_EQUAL(set.n, 2);
	CU_ASSERT_EQUAL(interp_add(&set, &it), 0);
	CU_ASSERT_EQUAL(set.n, 2);
	CU_ASSERT_EQUAL(interp_lookup(&set, base, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, base);
	CU_ASSERT_EQUAL(interp_lookup(&set, plain, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, base);
	CU_ASSERT_EQUAL(interp_lookup(&set, venv2, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv2);
	/* The short name still means the discovered base. */
	CU_ASSERT_EQUAL(interp_lookup(&set, "3.11", &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, base);
	CU_ASSERT(interp_is_short_target(&set, 0));
	CU_ASSERT(!interp_is_short_target(&set, 1));
	interp_set_free(&set);
}

/* Venvs among the sources: in config, on PATH, as the default. */
static void test_venv_discovery(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char root[PATH_MAX], base[PATH_MAX + 32], venv[PATH_MAX], bin[PATH_MAX], err[512];
	char py3[PATH_MAX + 16], v[32];
	const char *cfg[1];

	mkpath("vdisc/pyenv", root);
	fmt(v, sizeof(v), "%d.%d.%d", real_major, real_minor, real_micro + 7);
	fake_pyenv("vdisc/pyenv", v, 0);
	fmt(base, sizeof(base), "%s/versions/%s/bin/python", root, v);
	fake_venv("vdisc/env", base, 0, venv, sizeof(venv));

	/* A configured venv does not swallow the pyenv entry it links to. */
	cfg[0] = venv;
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, cfg, 1, root, NULL, NULL), 2);
	CU_ASSERT_STRING_EQUAL(set.v[0].path, venv);
	CU_ASSERT_EQUAL(set.v[0].source, INTERP_CONFIG);
	CU_ASSERT_STRING_EQUAL(set.v[1].path, base);
	CU_ASSERT_EQUAL(set.v[1].source, INTERP_PYENV);
	CU_ASSERT_EQUAL(interp_lookup(&set, base, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, base);
	CU_ASSERT_EQUAL(interp_lookup(&set, venv, &it, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(it.source, INTERP_CONFIG);
	interp_set_free(&set);

	/* A venv's python3 first on PATH is the default, apart from its base. */
	memset(&set, 0, sizeof(set));
	fmt(bin, sizeof(bin), "%s/vdisc/env/bin", tmp);
	fmt(py3, sizeof(py3), "%s/python3", bin);
	CU_ASSERT_EQUAL_FATAL(symlink(base, py3), 0);
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, bin, NULL), 2);
	CU_ASSERT_EQUAL_FATAL(set.default_idx, 1);
	CU_ASSERT_STRING_EQUAL(set.v[1].path, py3);
	CU_ASSERT_EQUAL(set.v[1].source, INTERP_PATH);
	interp_set_free(&set);

	/* A default named by a venv path is that venv, not its base. */
	memset(&set, 0, sizeof(set));
	CU_ASSERT_EQUAL_FATAL(interp_discover(&set, NULL, 0, root, NULL, venv), 2);
	CU_ASSERT_EQUAL_FATAL(set.default_idx, 1);
	CU_ASSERT_STRING_EQUAL(set.v[1].path, venv);
	CU_ASSERT_EQUAL(interp_resolve(&set, NULL, &it, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(it.path, venv);
	interp_set_free(&set);
}

static void test_empty_set(void)
{
	struct interp_set set = { 0 };
	struct interp it;
	char err[256];

	CU_ASSERT_EQUAL(interp_discover(&set, NULL, 0, NULL, NULL, NULL), 0);
	CU_ASSERT_EQUAL(set.default_idx, -1);
	CU_ASSERT_EQUAL(interp_resolve(&set, NULL, &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "no Python interpreter found");
	CU_ASSERT_EQUAL(interp_resolve(&set, "3.11", &it, err, sizeof(err)), -ENOENT);
	CU_ASSERT_STRING_EQUAL(err, "python 3.11 not found (available: none)");
	interp_set_free(&set);
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("interp", suite_init, suite_clean);
	CU_add_test(s, "parse version", test_parse_version);
	CU_add_test(s, "probe", test_probe);
	CU_add_test(s, "pyenv discovery and resolution", test_pyenv_resolution);
	CU_add_test(s, "absolute path", test_absolute_path);
	CU_add_test(s, "precedence config > pyenv > PATH", test_precedence);
	CU_add_test(s, "de-dup by real path", test_dedup_realpath);
	CU_add_test(s, "parse name", test_parse_name);
	CU_add_test(s, "names: 3.11, py311, python3.11, python3", test_names);
	CU_add_test(s, "python3 precedence", test_python3_precedence);
	CU_add_test(s, "venv python is its own interpreter", test_venv);
	CU_add_test(s, "venvs in config, on PATH, as default", test_venv_discovery);
	CU_add_test(s, "empty set", test_empty_set);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
