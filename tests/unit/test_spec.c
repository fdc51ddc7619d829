/*
 * test_spec.c - spec parsing, canonical form and hostile input; PEP 440
 * ordering and constraint matching.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

static struct spec sp;
static char err[256];

static int parse(const char *s)
{
	err[0] = '\0';
	return spec_parse(s, strlen(s), &sp, err, sizeof(err));
}

/* Asserts that s is refused with rc and that the reason mentions needle. */
static void refused(const char *s, int rc, const char *needle)
{
	CU_ASSERT_EQUAL(parse(s), rc);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
	if (!strstr(err, needle))
		fprintf(stderr, "\n  input '%s': reason '%s' lacks '%s'\n", s, err, needle);
}

static void test_single(void)
{
	CU_ASSERT_EQUAL(parse("numpy==1.26.4"), 0);
	CU_ASSERT_EQUAL(sp.n, 1);
	CU_ASSERT_STRING_EQUAL(sp.items[0].name, "numpy");
	CU_ASSERT_STRING_EQUAL(sp.items[0].version, "1.26.4");
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy==1.26.4");
}

static void test_sorted_and_trimmed(void)
{
	CU_ASSERT_EQUAL(parse("  scipy == 1.11.4 ,numpy==1.26.4\t"), 0);
	CU_ASSERT_EQUAL(sp.n, 2);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy==1.26.4,scipy==1.11.4");
	CU_ASSERT_STRING_EQUAL(sp.items[0].name, "numpy");
	CU_ASSERT_STRING_EQUAL(sp.items[1].version, "1.11.4");
	CU_ASSERT_EQUAL(parse("c==3,a==1,b==2"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "a==1,b==2,c==3");
}

static void test_pep503(void)
{
	char out[SPEC_NAME_MAX + 1];

	CU_ASSERT_EQUAL(parse("Foo.Bar__baz-_-Qux==2.0"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "foo-bar-baz-qux==2.0");
	CU_ASSERT_EQUAL(spec_normalize_name("Django_REST.framework", 21, out, sizeof(out)), 0);
	CU_ASSERT_STRING_EQUAL(out, "django-rest-framework");
	CU_ASSERT_EQUAL(spec_normalize_name("-x", 2, out, sizeof(out)), -EINVAL);
	CU_ASSERT_EQUAL(spec_normalize_name("x.", 2, out, sizeof(out)), -EINVAL);
	CU_ASSERT_EQUAL(spec_normalize_name("a b", 3, out, sizeof(out)), -EINVAL);
	CU_ASSERT_EQUAL(spec_normalize_name("", 0, out, sizeof(out)), -EINVAL);
}

static void test_versions(void)
{
	CU_ASSERT_EQUAL(parse("torch==2.1.0+cu121"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "torch==2.1.0+cu121");
	CU_ASSERT_EQUAL(parse("x==1!2.0rc1"), 0);
	CU_ASSERT_STRING_EQUAL(sp.items[0].version, "1!2.0rc1");
	refused("x==1-2", -EINVAL, "invalid character '-'");
	refused("x==1..2", -EINVAL, "'..'");
	refused("x==v1.0", -EINVAL, "start with a digit");
	refused("x==1.0.", -EINVAL, "end with");
	refused("x==1.*", -EINVAL, "wildcard versions are not supported");
	refused("x==1 2", -EINVAL, "whitespace inside version");
	refused("x==1/2", -EINVAL, "invalid character '/'");
}

static void test_base(void)
{
	CU_ASSERT_EQUAL(parse("base"), 0);
	CU_ASSERT_EQUAL(sp.n, 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "base");
	CU_ASSERT_EQUAL(parse(" BaSe "), 0);
	CU_ASSERT_EQUAL(sp.n, 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "base");
	refused("base,numpy==1", -EINVAL, "'base' must be pinned");
	refused("base>=1", -EINVAL, "'base' must be pinned");
	/* A package that is called base can still be pinned. */
	CU_ASSERT_EQUAL(parse("Base==1.0"), 0);
	CU_ASSERT_EQUAL(sp.n, 1);
	CU_ASSERT_STRING_EQUAL(sp.canon, "base==1.0");
}

static void test_empty(void)
{
	refused("", -EINVAL, "empty spec");
	refused("   ", -EINVAL, "empty spec");
	refused("numpy==1,", -EINVAL, "empty item");
	refused(",numpy==1", -EINVAL, "empty item");
	CU_ASSERT_EQUAL(spec_parse(NULL, 0, &sp, NULL, 0), -EINVAL);
}

static void test_paths_refused(void)
{
	refused("../", -EINVAL, "invalid character '/'");
	refused("../../etc==1", -EINVAL, "invalid character '/'");
	refused("a/b==1", -EINVAL, "invalid character '/'");
	refused("/etc/passwd==1", -EINVAL, "invalid character '/'");
	refused("..==1", -EINVAL, "start and end");
}

static void test_nul_inside(void)
{
	static const char in[] = "numpy==1.0\0,evil==2";

	CU_ASSERT_EQUAL(spec_parse(in, sizeof(in) - 1, &sp, err, sizeof(err)), -EINVAL);
	CU_ASSERT_STRING_EQUAL(err, "spec contains a NUL byte");
	CU_ASSERT_STRING_EQUAL(sp.canon, "");
}

static void test_too_long(void)
{
	char *big = malloc(5001);

	memset(big, 'a', 5000);
	big[5000] = '\0';
	memcpy(big + 4990, "==1.0", 5);
	CU_ASSERT_EQUAL(parse(big), -ENAMETOOLONG);
	CU_ASSERT_STRING_EQUAL(err, "spec is 5000 bytes, max 1023");
	free(big);

	char name[200];

	memset(name, 'n', 150);
	strcpy(name + 150, "==1");
	refused(name, -ENAMETOOLONG, "max 100");
	strcpy(name, "x==1");
	memset(name + 3, '1', 70);
	name[73] = '\0';
	refused(name, -ENAMETOOLONG, "max 64");
}

static void test_too_many(void)
{
	char buf[1024];
	size_t o = 0;

	for (int i = 0; i < 100; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%sp%d==1", i ? "," : "", i);
	CU_ASSERT(o < sizeof(buf));
	refused(buf, -E2BIG, "too many packages");
	o = 0;
	for (int i = 0; i < SPEC_MAX_ITEMS; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%sp%02d==1", i ? "," : "", i);
	CU_ASSERT_EQUAL(parse(buf), 0);
	CU_ASSERT_EQUAL(sp.n, SPEC_MAX_ITEMS);
}

static void test_operators(void)
{
	refused("numpy=1", -EINVAL, "unknown operator");
	refused("numpy=>1", -EINVAL, "unknown operator");
	refused("numpy~1", -EINVAL, "unknown operator");
	refused("numpy===1", -EINVAL, "'===' in 'numpy===1' is not supported");
	refused("numpy==", -EINVAL, "missing version after '=='");
	refused("numpy>= ", -EINVAL, "missing version after '>='");
	refused("numpy>=1,<", -EINVAL, "missing version after '<'");
	refused("==1", -EINVAL, "missing package name");
	refused("<2,numpy", -EINVAL, "missing package name in '<2'");
	refused("numpy>=1<2", -EINVAL, "separate constraints with ','");
	refused("numpy>=v1", -EINVAL, "start with a digit");
	refused("numpy>=1.0abc", -EINVAL, "'1.0abc' in 'numpy>=1.0abc' is not a PEP 440 version");
	refused("numpy<1.0+", -EINVAL, "end with");
	refused("numpy<1.0+a..b", -EINVAL, "'..'");
	refused("numpy<1.0+.a", -EINVAL, "not a PEP 440 version");
	refused("numpy>=1234567890123456789", -EINVAL, "not a PEP 440 version");
	refused("numpy~=1", -EINVAL, "'~=1' needs two release segments");
	refused("numpy==1.*", -EINVAL, "wildcard versions are not supported");
	refused("numpy!=1.2.*", -EINVAL, "wildcard versions are not supported");
	refused("numpy>=1.*", -EINVAL, "invalid character '*'");
	refused("numpy[extra]==1", -EINVAL, "invalid character '['");
	refused("numpy @ file:///x", -EINVAL, "invalid character '@'");
	refused("num py==1", -EINVAL, "whitespace inside package name");
	refused("num\x01py==1", -EINVAL, "'\\x01'");
	refused("numpy>=1,<2,>3,<4,>5,<6,>7,<8,>9", -E2BIG, "too many constraints for 'numpy', max 8");
	refused("numpy>=1,numpy<2", -EINVAL, "'numpy' appears more than once");
}

static void test_unpinned(void)
{
	CU_ASSERT_EQUAL(parse("numpy"), 0);
	CU_ASSERT_EQUAL(sp.n, 1);
	CU_ASSERT_STRING_EQUAL(sp.items[0].name, "numpy");
	CU_ASSERT_STRING_EQUAL(sp.items[0].version, "");
	CU_ASSERT_EQUAL(sp.items[0].ncons, 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy");

	CU_ASSERT_EQUAL(parse("NumPy>=1.26,<2"), 0);
	CU_ASSERT_EQUAL(sp.n, 1);
	CU_ASSERT_EQUAL_FATAL(sp.items[0].ncons, 2);
	CU_ASSERT_EQUAL(sp.items[0].cons[0].op, SPEC_GE);
	CU_ASSERT_STRING_EQUAL(sp.items[0].cons[0].version, "1.26");
	CU_ASSERT_EQUAL(sp.items[0].cons[1].op, SPEC_LT);
	CU_ASSERT_STRING_EQUAL(sp.items[0].cons[1].version, "2");
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy>=1.26,<2");

	/* Constraints sorted by operator, repeats dropped, whitespace gone. */
	CU_ASSERT_EQUAL(parse(" numpy < 2 , >= 1.26 ,<2, != 1.26.1"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy>=1.26,<2,!=1.26.1");
	CU_ASSERT_EQUAL(parse("x~=1.4.5,<=2,>1,==1.4.7,!=1.5"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "x==1.4.7");
	CU_ASSERT_EQUAL(parse("x!=1.5,<=2,>1,~=1.4.5,<3,>=0"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "x~=1.4.5,>=0,>1,<=2,<3,!=1.5");

	/* An operator item continues the name before it, whatever it is. */
	CU_ASSERT_EQUAL(parse("scipy, numpy>=1.26,<2 ,rich~=13.0, >=13.1,six"), 0);
	CU_ASSERT_EQUAL(sp.n, 4);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy>=1.26,<2,rich~=13.0,>=13.1,scipy,six");
	CU_ASSERT_EQUAL(parse("scipy,<2"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "scipy<2");

	/* The canonical form is a fixed point. */
	CU_ASSERT_EQUAL(parse("numpy>=1.26,<2,rich~=13.0,>=13.1,scipy,six"), 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy>=1.26,<2,rich~=13.0,>=13.1,scipy,six");
}

static void test_pin_absorbs(void)
{
	CU_ASSERT_EQUAL(parse("numpy>=1.26,==1.26.4,<2"), 0);
	CU_ASSERT_EQUAL(sp.n, 1);
	CU_ASSERT_STRING_EQUAL(sp.items[0].version, "1.26.4");
	CU_ASSERT_EQUAL(sp.items[0].ncons, 0);
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy==1.26.4");
	CU_ASSERT_EQUAL(parse("numpy==1.26,==1.26.0"), 0);   /* equal in PEP 440: the first is the pin */
	CU_ASSERT_STRING_EQUAL(sp.canon, "numpy==1.26");
	CU_ASSERT_EQUAL(parse("x==1.0abc"), 0);              /* a pin alone is only text */
	CU_ASSERT_STRING_EQUAL(sp.canon, "x==1.0abc");
	refused("numpy==1.26.4,<1", -EINVAL, "'numpy==1.26.4' conflicts with '<1'");
	refused("numpy==1,==2", -EINVAL, "'numpy==1' conflicts with '==2'");
	refused("numpy==1.0abc,<2", -EINVAL, "'numpy==1.0abc' is not a PEP 440 version");
	refused("numpy==1.0,==1.0abc", -EINVAL, "conflicts with '==1.0abc'");
}

/* Every pair of sorted[] compares in order, both ways. */
static void assert_ascending(const char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++) {
			int c = spec_version_cmp(v[i], v[j]), want = (i > j) - (i < j);

			CU_ASSERT_EQUAL((c > 0) - (c < 0), want);
			if ((c > 0) - (c < 0) != want)
				fprintf(stderr, "\n  cmp('%s', '%s') = %d, want %d\n", v[i], v[j], c, want);
		}
}

static void test_version_order(void)
{
	static const char *const sorted[] = {
		"1.0abc", "abc", "not-a-version",              /* not PEP 440: first, by text */
		"0.9", "1.0.dev1", "1.0a1", "1.0a2.dev1", "1.0a2", "1.0b1", "1.0rc1", "1.0rc2",
		"1.0", "1.0+abc", "1.0+abd", "1.0.post1.dev1", "1.0.post1", "1.0.1", "1.1", "1.9",
		"1.10", "1.26.4", "2", "2.0.1a1", "2.2.6", "10", "1!0.1",
	};
	static const char *const same[][2] = {
		{ "1.26", "1.26.0" }, { "1.26", "1.26.0.0.0" }, { "1.0alpha1", "1.0a1" },
		{ "1.0.a.1", "1.0a1" }, { "1.0beta2", "1.0b2" }, { "1.0c1", "1.0rc1" },
		{ "1.0pre1", "1.0rc1" }, { "1.0preview1", "1.0rc1" }, { "1.0RC1", "1.0rc1" },
		{ "1.0a", "1.0a0" }, { "1.0.post", "1.0.post0" }, { "1.0r1", "1.0.post1" },
		{ "1.0rev1", "1.0post1" }, { "1.0dev", "1.0.dev0" }, { "0!1.0", "1.0" }, { "01.02", "1.2" },
		{ "1.0+ABC", "1.0+abc" },
	};

	assert_ascending(sorted, sizeof(sorted) / sizeof(sorted[0]));
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		CU_ASSERT_EQUAL(spec_version_cmp(same[i][0], same[i][1]), 0);
		CU_ASSERT_EQUAL(spec_version_cmp(same[i][1], same[i][0]), 0);
	}
	/* Suffixes out of order, twice, or unknown: not versions, never a crash. */
	CU_ASSERT(spec_version_cmp("1.0.post1a1", "0") < 0);
	CU_ASSERT(spec_version_cmp("1.0a1a2", "0") < 0);
	CU_ASSERT(spec_version_cmp("1.0.dev1.post1", "0") < 0);
	CU_ASSERT(spec_version_cmp("1.0+", "0") < 0);
	CU_ASSERT(spec_version_cmp("", "0") < 0);
	CU_ASSERT(spec_version_cmp("1.", "0") < 0);
	CU_ASSERT(spec_version_cmp("1234567890123456789", "0") < 0);
	CU_ASSERT(spec_version_cmp("123456789012345678", "99999999999999999") > 0);
	/* 32 release segments are a version, 33 are not. */
	CU_ASSERT(spec_version_cmp("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1", "0") > 0);
	CU_ASSERT(spec_version_cmp("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1", "0") < 0);
}

/* Asserts whether spec (one item) allows version. */
static void allows(const char *spec, const char *version, int want)
{
	CU_ASSERT_EQUAL_FATAL(parse(spec), 0);
	CU_ASSERT_EQUAL(spec_item_allows(&sp.items[0], version), want);
	if (spec_item_allows(&sp.items[0], version) != want)
		fprintf(stderr, "\n  '%s' allows '%s': want %d\n", spec, version, want);
}

static void test_matching(void)
{
	char big[80];

	allows("numpy", "2.2.6", 1);
	allows("numpy", "2.3.0rc1", 0);            /* no pre-release unless asked for */
	allows("numpy", "2.3.0.dev0", 0);
	allows("numpy", "nightly", 0);             /* not a version: never */
	allows("numpy>=1.26", "1.26", 1);
	allows("numpy>=1.26", "1.26.0", 1);
	allows("numpy>=1.26", "2.2.6", 1);
	allows("numpy>=1.26", "1.25.9", 0);
	allows("numpy>=1.26", "1.26.0rc1", 0);
	allows("numpy>=1.26,<2", "1.26.4", 1);
	allows("numpy>=1.26,<2", "2.0", 0);
	allows("numpy>=1.26,<2", "2.2.6", 0);
	allows("numpy<=2", "2.0.0", 1);
	allows("numpy<=2", "2.0.1", 0);
	allows("numpy>1", "1.0", 0);
	allows("numpy>1", "1.0.1", 1);
	allows("numpy!=1.26.4", "1.26.3", 1);
	allows("numpy!=1.26.4", "1.26.4", 0);
	allows("numpy!=1.26.4", "1.26.4.0", 0);
	allows("numpy!=1.26.4", "1.26.4+cpu", 0);   /* a local label is ignored ... */
	allows("numpy!=1.26.4+cpu", "1.26.4+gpu", 1);   /* ... unless V has one */
	allows("numpy>=1.26,!=2.2.6,<3", "2.2.6", 0);
	allows("numpy>=1.26,!=2.2.6,<3", "2.2.5", 1);
	allows("x~=1.4.5", "1.4.5", 1);
	allows("x~=1.4.5", "1.4.9", 1);
	allows("x~=1.4.5", "1.4.4", 0);
	allows("x~=1.4.5", "1.5.0", 0);
	allows("x~=2.2", "2.9", 1);
	allows("x~=2.2", "2.2.6", 1);
	allows("x~=2.2", "3.0", 0);
	allows("x~=2.2", "2.1", 0);
	allows("x~=1.4", "1!1.4", 0);              /* another epoch */
	allows("x>=1", "1!0.5", 1);
	/* Pre-releases once a constraint names one; <V still leaves out V's. */
	allows("x>=2.0rc1", "2.0rc2", 1);
	allows("x>=2.0rc1", "2.0", 1);
	allows("x>=2.0rc1", "2.0b1", 0);
	allows("x>=1.0b1,<2", "1.5rc1", 1);
	allows("x>=1.0b1,<2", "2.0rc1", 0);
	allows("x>=1.0b1,<2", "2.0.dev1", 0);
	allows("x<2.0rc2", "2.0rc1", 1);
	/* >V leaves out V's post-releases unless V is one. */
	allows("x>1.7", "1.7.post1", 0);
	allows("x>1.7", "1.7.1", 1);
	allows("x>1.7.post1", "1.7.post2", 1);
	allows("x>1.7", "1.7+local", 0);
	/* A pin allows its own text only. */
	allows("x==1.26", "1.26", 1);
	allows("x==1.26", "1.26.0", 0);
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	big[1] = '.';
	allows("x>=1", big, 0);                    /* longer than any version: never */
}

static void test_duplicates(void)
{
	refused("numpy==1,numpy==2", -EINVAL, "'numpy' appears more than once");
	refused("Foo_Bar==1,foo.bar==1", -EINVAL, "'foo-bar' appears more than once");
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("spec", NULL, NULL);
	CU_add_test(s, "single item", test_single);
	CU_add_test(s, "sorted and trimmed", test_sorted_and_trimmed);
	CU_add_test(s, "PEP 503 names", test_pep503);
	CU_add_test(s, "versions", test_versions);
	CU_add_test(s, "base", test_base);
	CU_add_test(s, "empty", test_empty);
	CU_add_test(s, "path-like input", test_paths_refused);
	CU_add_test(s, "NUL inside", test_nul_inside);
	CU_add_test(s, "too long", test_too_long);
	CU_add_test(s, "too many items", test_too_many);
	CU_add_test(s, "operators", test_operators);
	CU_add_test(s, "duplicates after normalisation", test_duplicates);
	CU_add_test(s, "unpinned items and constraints", test_unpinned);
	CU_add_test(s, "a pin absorbs other constraints", test_pin_absorbs);
	CU_add_test(s, "PEP 440 version order", test_version_order);
	CU_add_test(s, "matching constraints", test_matching);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
