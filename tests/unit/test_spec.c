/*
 * test_spec.c - spec parsing, canonical form and hostile input.
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
	refused("x==1.*", -EINVAL, "exact pins");
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
	refused("base,numpy==1", -EINVAL, "no version");
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
	refused("numpy>=1", -EINVAL, "exact pins");
	refused("numpy<2", -EINVAL, "exact pins");
	refused("numpy~=1.2", -EINVAL, "exact pins");
	refused("numpy!=1", -EINVAL, "exact pins");
	refused("numpy=1", -EINVAL, "exact pins");
	refused("numpy===1", -EINVAL, "exact pins");
	refused("numpy==1,<2", -EINVAL, "invalid character '<'");
	refused("numpy==", -EINVAL, "missing version");
	refused("numpy", -EINVAL, "no version");
	refused("==1", -EINVAL, "missing package name");
	refused("numpy[extra]==1", -EINVAL, "invalid character '['");
	refused("numpy @ file:///x", -EINVAL, "invalid character '@'");
	refused("num py==1", -EINVAL, "whitespace inside package name");
	refused("num\x01py==1", -EINVAL, "'\\x01'");
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
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
