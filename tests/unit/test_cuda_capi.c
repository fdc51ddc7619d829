/*
 * test_cuda_capi.c - omnipkg.h's device buffers against the stand-in
 * driver: export/import/release through libomnipkg (which dlopen()s
 * libomnipkg-cuda), VMM buffers as POSIX descriptors, and device arrays
 * turned into exec bind values and the descriptors that go with them, bad
 * descriptors refused with what was wrong.
 */
#include <CUnit/Basic.h>
#include <cuda.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "omnipkg.h"

static char err[512];
static uint64_t (*s_alloc)(size_t);
static void (*s_free)(uint64_t);
static int (*s_calls)(const char *);
static uint64_t (*s_vmm_alloc)(size_t, unsigned);
static void (*s_vmm_free)(uint64_t);

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n - 1;
}

static void test_round_trip(void)
{
	char hex[OMNI_CUDA_HANDLE_HEX + 1], small[16];
	uint64_t a = s_alloc(1 << 16), p = 0;

	CU_ASSERT_EQUAL_FATAL(omni_cuda_export(a + 4096, 512, NULL, hex, sizeof hex, err, sizeof err), 0);
	CU_ASSERT_EQUAL(strlen(hex), OMNI_CUDA_HANDLE_HEX);
	CU_ASSERT_EQUAL(omni_cuda_export(a, 512, NULL, small, sizeof small, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL_FATAL(omni_cuda_import(hex, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(p, a + 4096);
	CU_ASSERT_EQUAL(omni_cuda_import(hex, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenMemHandle_v2"), 1);
	CU_ASSERT_EQUAL(omni_cuda_release(hex), 0);
	CU_ASSERT_EQUAL(omni_cuda_release(hex), 0);
	CU_ASSERT_EQUAL(omni_cuda_release(hex), -ENOENT);
	CU_ASSERT_EQUAL(omni_cuda_import("zz", &p, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(omni_cuda_export(a + (1 << 16) - 8, 512, NULL, hex, sizeof hex, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "overruns"));
	s_free(a);
}

static void test_bind_json(void)
{
	uint64_t a = s_alloc(4096);
	int64_t shape[2] = { 4, 8 }, strides[2] = { 64, 4 };
	omni_device_array d[2] = {
		{ .name = "tensor_in", .devptr = a, .dtype = "<f4", .shape = shape, .ndim = 2,
		  .access = OMNI_ACCESS_IN },
		{ .name = "tensor_out", .devptr = a + 1024, .dtype = "<f4", .shape = shape, .ndim = 2,
		  .strides = strides, .access = OMNI_ACCESS_OUT, .framework = "raw" },
	};
	char *json = NULL;
	cJSON *j, *v;

	CU_ASSERT_EQUAL_FATAL(omni_cuda_bind_json(d, 2, &json, err, sizeof err), 0);
	j = cJSON_Parse(json);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	v = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tensor_in"), "__cuda_ipc__");
	CU_ASSERT_PTR_NOT_NULL_FATAL(v);
	CU_ASSERT_EQUAL(strlen(cJSON_GetObjectItem(v, "handle")->valuestring), OMNI_CUDA_HANDLE_HEX);
	CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(v, "dtype")->valuestring, "<f4");
	CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(v, "framework")->valuestring, "auto");
	CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(v, "readonly")));
	CU_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(v, "strides")));
	v = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tensor_out"), "__cuda_ipc__");
	CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(v, "strides")), 2);
	CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(v, "readonly")));
	cJSON_Delete(j);
	free(json);
	s_free(a);
}

static void test_fd_round_trip(void)
{
	char hex[OMNI_CUDA_HANDLE_HEX + 1];
	uint64_t a = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), l = s_alloc(4096);
	uint64_t p = 0, q = 0;
	int fd = -2, n = open_fds();

	CU_ASSERT_FATAL(a && l);
	CU_ASSERT_EQUAL_FATAL(omni_cuda_export_fd(a + 256, 64, NULL, OMNI_CUDA_AUTO, hex, sizeof hex,
						  &fd, err, sizeof err), 0);
	CU_ASSERT(fd >= 0);
	CU_ASSERT_EQUAL_FATAL(omni_cuda_import_fd(hex, fd, &p, err, sizeof err), 0);
	close(fd);
	/* mapped: the handle alone is enough now */
	CU_ASSERT_EQUAL(omni_cuda_import(hex, &q, err, sizeof err), 0);
	CU_ASSERT_EQUAL(p, q);
	CU_ASSERT(p != a + 256);
	*(volatile char *)(uintptr_t)p = 'v';
	CU_ASSERT_EQUAL(*(volatile char *)(uintptr_t)(a + 256), 'v');
	CU_ASSERT_EQUAL(omni_cuda_release(hex), 0);
	CU_ASSERT_EQUAL(omni_cuda_release(hex), 0);
	/* the IPC-only call, and a descriptor asked of memory without one */
	CU_ASSERT_EQUAL(omni_cuda_export(a, 64, NULL, hex, sizeof hex, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(omni_cuda_export_fd(l, 64, NULL, OMNI_CUDA_FD, hex, sizeof hex, &fd, err,
					    sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(fd, -1);
	CU_ASSERT_EQUAL(omni_cuda_export_fd(l, 64, NULL, 0x40, hex, sizeof hex, &fd, err,
					    sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(omni_cuda_export_fd(l, 64, NULL, OMNI_CUDA_AUTO, hex, sizeof hex, &fd, err,
					    sizeof err), 0);
	CU_ASSERT_EQUAL(fd, -1);     /* an IPC handle needs none */
	CU_ASSERT_EQUAL(open_fds(), n + 1);   /* the mapping's hold on the allocation */
	s_free(l);
}

static void test_bind_fds(void)
{
	uint64_t a = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), l = s_alloc(4096);
	int64_t shape[1] = { 16 };
	omni_device_array d[3] = {
		{ .name = "tensor_in", .devptr = l, .dtype = "<f4", .shape = shape, .ndim = 1 },
		{ .name = "tensor_out", .devptr = a, .dtype = "<f4", .shape = shape, .ndim = 1,
		  .framework = "tensorflow" },
		{ .name = "third", .devptr = a + 4096, .dtype = "<f4", .shape = shape, .ndim = 1 },
	};
	omni_cuda_binding b;
	int n = open_fds();
	cJSON *j;

	CU_ASSERT_EQUAL_FATAL(omni_cuda_bind(d, 3, OMNI_CUDA_AUTO, &b, err, sizeof err), 0);
	CU_ASSERT_EQUAL(b.nfds, 2);
	CU_ASSERT_STRING_EQUAL(b.fd_for[0], "tensor_out");
	CU_ASSERT_STRING_EQUAL(b.fd_for[1], "third");
	CU_ASSERT_EQUAL(open_fds(), n + 2);
	j = cJSON_Parse(b.bind_json);
	CU_ASSERT_EQUAL(cJSON_GetArraySize(j), 3);
	CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j,
			       "tensor_out"), "__cuda_ipc__"), "framework")->valuestring, "tensorflow");
	cJSON_Delete(j);
	omni_cuda_binding_free(&b);
	CU_ASSERT_EQUAL(open_fds(), n);
	CU_ASSERT_EQUAL(b.nfds, 0);
	/* IPC only: the VMM arrays cannot go */
	CU_ASSERT_EQUAL(omni_cuda_bind(d, 3, OMNI_CUDA_IPC, &b, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NULL(b.bind_json);
	CU_ASSERT_EQUAL(open_fds(), n);
	/* a failure after a descriptor was made closes it */
	d[2].dtype = "bad";
	CU_ASSERT_EQUAL(omni_cuda_bind(d, 3, OMNI_CUDA_AUTO, &b, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(b.nfds, 0);
	CU_ASSERT_EQUAL(open_fds(), n);
	s_vmm_free(a);
	s_free(l);
}

static void refused(omni_device_array d, const char *word)
{
	char *json = (char *)1;

	err[0] = 0;
	CU_ASSERT_EQUAL(omni_cuda_bind_json(&d, 1, &json, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NULL(json);
	if (!strstr(err, word))
		fprintf(stderr, "\n  expected %s in: %s\n", word, err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, word));
}

static void test_bad_descriptors(void)
{
	uint64_t a = s_alloc(256);
	int64_t shape[1] = { 64 }, big[1] = { 65 }, neg[1] = { -1 }, nstr[1] = { -4 };
	omni_device_array ok = { .name = "x", .devptr = a, .dtype = "<f4", .shape = shape, .ndim = 1 };
	omni_device_array d;

	d = ok; d.name = "1x"; refused(d, "identifier");
	d = ok; d.name = NULL; refused(d, "identifier");
	d = ok; d.dtype = "float32"; refused(d, "typestr");
	d = ok; d.dtype = "<f"; refused(d, "typestr");
	d = ok; d.ndim = OMNI_ARRAY_MAX_DIM + 1; refused(d, "ndim");
	d = ok; d.framework = "tf"; refused(d, "framework");
	d = ok; d.access = 7; refused(d, "access");
	d = ok; d.shape = neg; refused(d, "shape");
	d = ok; d.strides = nstr; refused(d, "strides");
	d = ok; d.shape = big; refused(d, "overruns");
	s_free(a);
}

int main(void)
{
	const char *path = getenv("OMNIPKG_CUDA_DRIVER");
	void *stub;
	CU_pSuite s;
	unsigned failed;

	stub = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
	if (!stub) {
		fprintf(stderr, "OMNIPKG_CUDA_DRIVER must name the stand-in driver\n");
		return 2;
	}
	*(void **)&s_alloc = dlsym(stub, "stub_alloc");
	*(void **)&s_free = dlsym(stub, "stub_free");
	*(void **)&s_calls = dlsym(stub, "stub_calls");
	*(void **)&s_vmm_alloc = dlsym(stub, "stub_vmm_alloc");
	*(void **)&s_vmm_free = dlsym(stub, "stub_vmm_free");
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("cuda C API", NULL, NULL);
	CU_add_test(s, "export, import, release", test_round_trip);
	CU_add_test(s, "device arrays as bind values", test_bind_json);
	CU_add_test(s, "bad device arrays", test_bad_descriptors);
	CU_add_test(s, "VMM buffers as descriptors", test_fd_round_trip);
	CU_add_test(s, "device arrays with descriptors", test_bind_fds);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	dlclose(stub);
	return failed ? 1 : 0;
}
