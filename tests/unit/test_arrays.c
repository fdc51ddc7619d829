/*
 * test_arrays.c - array descriptors: dtypes, defaults, and every bad
 * descriptor refused with the field it got wrong.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arrays.h"

static struct array_desc d[ARRAYS_MAX];
static char err[512];

static int parse(const char *json)
{
	cJSON *a = cJSON_Parse(json);
	int n;

	err[0] = 0;
	n = arrays_parse(a, d, ARRAYS_MAX, err, sizeof err);
	cJSON_Delete(a);
	return n;
}

/* Refused, and err names each of the NULL-ended words. */
static void refused(const char *json, ...)
{
	va_list ap;
	const char *w;

	CU_ASSERT_EQUAL(parse(json), -EINVAL);
	va_start(ap, json);
	while ((w = va_arg(ap, const char *))) {
		CU_ASSERT_PTR_NOT_NULL(strstr(err, w));
		if (!strstr(err, w))
			fprintf(stderr, "\n%s: \"%s\" lacks \"%s\"\n", json, err, w);
	}
	va_end(ap);
}

static void test_dtypes(void)
{
	char n[8];
	size_t size, align;

	CU_ASSERT_EQUAL(arrays_dtype("float32", n, &size, &align), 0);
	CU_ASSERT_STRING_EQUAL(n, "<f4");
	CU_ASSERT_EQUAL(size, 4);
	CU_ASSERT_EQUAL(arrays_dtype(">f8", n, &size, &align), 0);
	CU_ASSERT_STRING_EQUAL(n, ">f8");
	CU_ASSERT_EQUAL(arrays_dtype("=i8", n, &size, &align), 0);
	CU_ASSERT_STRING_EQUAL(n, "<i8");
	CU_ASSERT_EQUAL(arrays_dtype("<u1", n, &size, &align), 0);
	CU_ASSERT_STRING_EQUAL(n, "|u1");
	CU_ASSERT_EQUAL(arrays_dtype("bool", n, &size, &align), 0);
	CU_ASSERT_STRING_EQUAL(n, "|b1");
	CU_ASSERT_EQUAL(arrays_dtype("<c16", n, &size, &align), 0);
	CU_ASSERT_EQUAL(size, 16);
	CU_ASSERT_EQUAL(align, 8);
	for (const char *const *b = (const char *const[]){ "O", "|O", "object", "<U4", "|S3", "V8",
							    "<M8", "<f16", "<i3", "|i4", "f", "",
							    "<f4x", "float128", NULL }; *b; b++)
		CU_ASSERT_EQUAL(arrays_dtype(*b, n, &size, &align), -EINVAL);
}

static void test_defaults_and_c_strides(void)
{
	CU_ASSERT_EQUAL(parse("[{\"name\":\"arr_in\",\"segment\":\"frame\",\"dtype\":\"float32\","
			      "\"shape\":[3,4]}]"), 1);
	CU_ASSERT_STRING_EQUAL(d[0].dtype, "<f4");
	CU_ASSERT_EQUAL(d[0].strides[0], 16);
	CU_ASSERT_EQUAL(d[0].strides[1], 4);
	CU_ASSERT_EQUAL(d[0].offset, 0);
	CU_ASSERT_EQUAL(d[0].access, ARRAY_INOUT);
	CU_ASSERT_EQUAL(d[0].lo, 0);
	CU_ASSERT_EQUAL(d[0].hi, 48);
	CU_ASSERT_EQUAL(arrays_fit(&d[0], 48, err, sizeof err), 0);
	CU_ASSERT_EQUAL(arrays_fit(&d[0], 47, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "frame"));
	CU_ASSERT_EQUAL(parse(NULL), 0);
	CU_ASSERT_EQUAL(parse("null"), 0);
	CU_ASSERT_EQUAL(parse("[]"), 0);
}

static void test_fortran_negative_and_big_endian_views(void)
{
	/* Fortran order. */
	CU_ASSERT_EQUAL(parse("[{\"name\":\"f\",\"segment\":\"s\",\"dtype\":\">f8\",\"shape\":[3,4],"
			      "\"strides\":[8,24],\"access\":\"in\"}]"), 1);
	CU_ASSERT_EQUAL(d[0].hi, 96);
	CU_ASSERT_EQUAL(d[0].access, ARRAY_IN);
	/* Reversed: starts at the last element and walks back to byte 0. */
	CU_ASSERT_EQUAL(parse("[{\"name\":\"r\",\"segment\":\"s\",\"dtype\":\"<i4\",\"shape\":[10],"
			      "\"strides\":[-4],\"offset\":36}]"), 1);
	CU_ASSERT_EQUAL(d[0].lo, 0);
	CU_ASSERT_EQUAL(d[0].hi, 40);
	/* An empty view reaches nothing. */
	CU_ASSERT_EQUAL(parse("[{\"name\":\"e\",\"segment\":\"s\",\"dtype\":\"<i4\",\"shape\":[0,5]}]"), 1);
	CU_ASSERT_EQUAL(d[0].hi, 0);
	/* A 0-d array is one element. */
	CU_ASSERT_EQUAL(parse("[{\"name\":\"z\",\"segment\":\"s\",\"dtype\":\"<f8\",\"shape\":[],"
			      "\"offset\":8,\"access\":\"out\"}]"), 1);
	CU_ASSERT_EQUAL(d[0].hi, 16);
	CU_ASSERT_EQUAL(d[0].access, ARRAY_OUT);
}

#define A(rest) "[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[4]" rest "}]"

static void test_bad_descriptors(void)
{
	refused("{}", "arrays", NULL);
	refused("[1]", "arrays[0]", NULL);
	refused(A(",\"shpae\":[1]"), "unknown key", "shpae", NULL);
	refused("[{\"name\":\"1x\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[4]}]", "name", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"../x\",\"dtype\":\"<f4\",\"shape\":[4]}]", "segment", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"O\",\"shape\":[4]}]", "dtype", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<U8\",\"shape\":[4]}]", "dtype", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[-1]}]", "shape[0]", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[1.5]}]", "shape[0]", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[1e30]}]", "shape[0]", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":4}]", "shape", NULL);
	/* Each size fits, the product does not. */
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f8\","
		"\"shape\":[4611686018427387904,4611686018427387904]}]", "shape", NULL);
	refused(A(",\"offset\":-8"), "offset", NULL);
	refused(A(",\"offset\":2"), "offset", "alignment", NULL);
	refused(A(",\"strides\":[4,4]"), "strides", NULL);
	refused(A(",\"strides\":[6]"), "strides[0]", "alignment", NULL);
	refused(A(",\"strides\":[-4]"), "strides", "before", NULL);
	refused(A(",\"strides\":[4611686018427387904]"), "shape", NULL);
	refused(A(",\"access\":\"rw\""), "access", NULL);
	refused("[{\"name\":\"a\",\"segment\":\"s\",\"dtype\":\"<f4\",\"shape\":[4]},"
		"{\"name\":\"a\",\"segment\":\"t\",\"dtype\":\"<f4\",\"shape\":[4]}]", "twice", NULL);
}

static void test_past_the_end(void)
{
	CU_ASSERT_EQUAL(parse(A(",\"offset\":4096")), 1);
	CU_ASSERT_EQUAL(arrays_fit(&d[0], 4096, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "4112"));
	CU_ASSERT_EQUAL(arrays_fit(&d[0], 4112, err, sizeof err), 0);
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("arrays", NULL, NULL);
	CU_add_test(s, "dtypes", test_dtypes);
	CU_add_test(s, "defaults and C strides", test_defaults_and_c_strides);
	CU_add_test(s, "Fortran, negative strides, big-endian", test_fortran_negative_and_big_endian_views);
	CU_add_test(s, "bad descriptors", test_bad_descriptors);
	CU_add_test(s, "past the end", test_past_the_end);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
