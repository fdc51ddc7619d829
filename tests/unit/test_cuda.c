/*
 * test_cuda.c - libomnipkg-cuda against the stand-in driver
 * (tests/cuda_stub, named by $OMNIPKG_CUDA_DRIVER): a missing driver and a
 * missing device reported, export as base + offset, the import cache (one
 * open per allocation, reference counts, idle eviction), stale handles and
 * the strict wire form.
 */
#include <CUnit/Basic.h>
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnicuda.h"

static char err[512];
static char stub_path[4096];
static void *stub;
static CUdeviceptr (*s_alloc)(size_t);
static void (*s_free)(CUdeviceptr);
static int (*s_calls)(const char *);
static void (*s_reset)(void);
static int (*s_open)(void);
static int (*s_primary)(void);

static void use_stub(void)
{
	setenv("OMNIPKG_CUDA_DRIVER", stub_path, 1);
	unsetenv("STUB_CUDA_NODEVICE");
	ocu_unload();
	err[0] = 0;
	CU_ASSERT_EQUAL_FATAL(ocu_load(err, sizeof err), 0);
	s_reset();
}

static void test_no_driver(void)
{
	struct ocu_handle h = { .kind = OCU_KIND_IPC, .alloc_size = 16, .nbytes = 16 };
	uint64_t p;

	ocu_unload();
	setenv("OMNIPKG_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
	CU_ASSERT_EQUAL(ocu_load(err, sizeof err), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no CUDA driver"));
	CU_ASSERT_EQUAL(ocu_export(0x1000, 16, NULL, &h, err, sizeof err), -ENOENT);
	CU_ASSERT_EQUAL(ocu_import(&h, &p, err, sizeof err), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "libcuda.so.1 not found"));
	CU_ASSERT_EQUAL(ocu_release(&h), -ENOENT);
	ocu_unload();
}

static void test_no_device(void)
{
	ocu_unload();
	setenv("OMNIPKG_CUDA_DRIVER", stub_path, 1);
	setenv("STUB_CUDA_NODEVICE", "1", 1);
	CU_ASSERT_EQUAL(ocu_load(err, sizeof err), -ENODEV);
	CU_ASSERT_STRING_EQUAL(err, "no CUDA device");
	unsetenv("STUB_CUDA_NODEVICE");
	CU_ASSERT_EQUAL(ocu_load(err, sizeof err), 0);
	ocu_unload();
}

static void test_export_offset(void)
{
	struct ocu_handle h;
	CUdeviceptr a;

	use_stub();
	a = s_alloc(4096);
	CU_ASSERT_EQUAL(ocu_export(a + 256, 1024, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.kind, OCU_KIND_IPC);
	CU_ASSERT_EQUAL(h.offset, 256);
	CU_ASSERT_EQUAL(h.nbytes, 1024);
	CU_ASSERT_EQUAL(h.alloc_size, 4096);
	CU_ASSERT_EQUAL(memcmp(h.ipc, "STUB", 4), 0);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 1);
	CU_ASSERT_EQUAL(s_calls("cuIpcGetMemHandle"), 1);
	/* the whole allocation, and a zero-length buffer at its end */
	CU_ASSERT_EQUAL(ocu_export(a, 4096, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(ocu_export(a + 4095, 1, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.offset, 4095);
	s_free(a);
	ocu_unload();
}

static void test_export_refused(void)
{
	struct ocu_handle h;
	CUdeviceptr a;

	use_stub();
	a = s_alloc(4096);
	CU_ASSERT_EQUAL(ocu_export(a + 4000, 200, NULL, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "overruns"));
	CU_ASSERT_EQUAL(ocu_export(0, 16, NULL, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(ocu_export((uint64_t)(uintptr_t)err, 16, NULL, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cuMemGetAddressRange"));
	CU_ASSERT_EQUAL(s_calls("cuIpcGetMemHandle"), 0);
	s_free(a);
	ocu_unload();
}

static void test_import_cached(void)
{
	struct ocu_handle h, h2;
	uint64_t p, p2;
	CUdeviceptr a;

	use_stub();
	a = s_alloc(1 << 20);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a + 512, 64, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a + 8192, 64, NULL, &h2, err, sizeof err), 0);
	CU_ASSERT_EQUAL(ocu_refs(&h), -1);
	CU_ASSERT_EQUAL_FATAL(ocu_import(&h, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(p, a + 512);
	/* another buffer of the same allocation rides on the same mapping */
	CU_ASSERT_EQUAL_FATAL(ocu_import(&h2, &p2, err, sizeof err), 0);
	CU_ASSERT_EQUAL(p2, a + 8192);
	CU_ASSERT_EQUAL(ocu_refs(&h), 2);
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenMemHandle_v2"), 1);
	CU_ASSERT_EQUAL(ocu_release(&h), 0);
	CU_ASSERT_EQUAL(ocu_release(&h2), 0);
	CU_ASSERT_EQUAL(ocu_refs(&h), 0);
	CU_ASSERT_EQUAL(ocu_release(&h), -ENOENT);
	/* idle, still mapped: 10,000 more calls open nothing */
	for (int i = 0; i < 10000; i++) {
		if (ocu_import(&h, &p, err, sizeof err) || ocu_release(&h))
			CU_FAIL_FATAL("import/release");
	}
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenMemHandle_v2"), 1);
	CU_ASSERT_EQUAL(ocu_opens(), 1);
	CU_ASSERT_EQUAL(s_calls("cuIpcCloseMemHandle"), 0);
	CU_ASSERT_EQUAL(s_open(), 1);
	CU_ASSERT_EQUAL(ocu_trim(), 1);
	CU_ASSERT_EQUAL(s_open(), 0);
	CU_ASSERT_EQUAL(ocu_refs(&h), -1);
	s_free(a);
	ocu_unload();
}

static void test_held_not_trimmed(void)
{
	struct ocu_handle h;
	uint64_t p;
	CUdeviceptr a;

	use_stub();
	a = s_alloc(64);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a, 64, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(ocu_import(&h, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(ocu_trim(), 0);
	CU_ASSERT_EQUAL(s_open(), 1);
	/* unload closes even held mappings, and gives the primary context back */
	CU_ASSERT_EQUAL(s_primary(), 1);
	ocu_unload();
	CU_ASSERT_EQUAL(s_open(), 0);
	CU_ASSERT_EQUAL(s_primary(), 0);
	s_free(a);
}

static void test_idle_eviction(void)
{
	enum { N = OCU_IDLE_MAX + 4 };
	struct ocu_handle h[N];
	CUdeviceptr a[N];
	uint64_t p;

	use_stub();
	for (int i = 0; i < N; i++) {
		a[i] = s_alloc(128);
		CU_ASSERT_EQUAL_FATAL(ocu_export(a[i], 128, NULL, &h[i], err, sizeof err), 0);
		CU_ASSERT_EQUAL_FATAL(ocu_import(&h[i], &p, err, sizeof err), 0);
	}
	for (int i = 0; i < N; i++)
		CU_ASSERT_EQUAL(ocu_release(&h[i]), 0);
	CU_ASSERT_EQUAL(s_open(), OCU_IDLE_MAX);
	/* the first released went first */
	for (int i = 0; i < N - OCU_IDLE_MAX; i++)
		CU_ASSERT_EQUAL(ocu_refs(&h[i]), -1);
	CU_ASSERT_EQUAL(ocu_refs(&h[N - 1]), 0);
	ocu_unload();
	for (int i = 0; i < N; i++)
		s_free(a[i]);
}

static void test_stale_and_bad_handles(void)
{
	struct ocu_handle h, bad;
	uint64_t p;
	CUdeviceptr a;

	use_stub();
	a = s_alloc(256);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a, 256, NULL, &h, err, sizeof err), 0);
	s_free(a);
	CU_ASSERT_EQUAL(ocu_import(&h, &p, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cuIpcOpenMemHandle"));
	CU_ASSERT_EQUAL(ocu_refs(&h), -1);
	bad = h;
	bad.offset = 200;
	bad.nbytes = 57;
	CU_ASSERT_EQUAL(ocu_import(&bad, &p, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad CUDA handle"));
	bad = h;
	bad.kind = 9;
	CU_ASSERT_EQUAL(ocu_import(&bad, &p, err, sizeof err), -EINVAL);
	ocu_unload();
}

static void test_wire(void)
{
	struct ocu_handle h = { .kind = OCU_KIND_IPC, .device = 0, .alloc_size = 1u << 30,
				.offset = 4096, .nbytes = 1u << 20 };
	struct ocu_handle back;
	unsigned char w[OCU_WIRE_SIZE];
	char hex[2 * OCU_WIRE_SIZE + 1];

	for (int i = 0; i < OCU_IPC_BYTES; i++)
		h.ipc[i] = (unsigned char)(i * 7);
	ocu_handle_encode(&h, w);
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), 0);
	CU_ASSERT_EQUAL(memcmp(&h, &back, sizeof h), 0);
	ocu_handle_hex(&h, hex);
	CU_ASSERT_EQUAL(strlen(hex), 2 * OCU_WIRE_SIZE);
	memset(&back, 0, sizeof back);
	CU_ASSERT_EQUAL(ocu_handle_unhex(hex, &back, err, sizeof err), 0);
	CU_ASSERT_EQUAL(memcmp(&h, &back, sizeof h), 0);

	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w - 1, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not 104"));
	w[0] ^= 1;
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "magic"));
	w[0] ^= 1;
	w[4] = 2;
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 2"));
	w[4] = 1;
	w[8] = 3;
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "kind 3"));
	w[8] = 1;
	w[15] = 0x80; /* device < 0 */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	w[15] = 0;
	memset(w + 24, 0xff, 8); /* offset past the allocation, and wrapping */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "overruns"));
	hex[10] = 'g';
	CU_ASSERT_EQUAL(ocu_handle_unhex(hex, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(ocu_handle_unhex("00", &back, err, sizeof err), -EINVAL);
}

int main(void)
{
	const char *path = getenv("OMNIPKG_CUDA_DRIVER");
	CU_pSuite s;
	unsigned failed;

	if (!path) {
		fprintf(stderr, "OMNIPKG_CUDA_DRIVER must name the stand-in driver\n");
		return 2;
	}
	snprintf(stub_path, sizeof stub_path, "%s", path);
	/* held open across the tests, so the stub's fake allocations outlive ocu_unload() */
	stub = dlopen(stub_path, RTLD_NOW | RTLD_LOCAL);
	if (!stub) {
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	*(void **)&s_alloc = dlsym(stub, "stub_alloc");
	*(void **)&s_free = dlsym(stub, "stub_free");
	*(void **)&s_calls = dlsym(stub, "stub_calls");
	*(void **)&s_reset = dlsym(stub, "stub_reset");
	*(void **)&s_open = dlsym(stub, "stub_open_mappings");
	*(void **)&s_primary = dlsym(stub, "stub_primary_refs");
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("cuda", NULL, NULL);
	CU_add_test(s, "no driver", test_no_driver);
	CU_add_test(s, "no device", test_no_device);
	CU_add_test(s, "export: base + offset", test_export_offset);
	CU_add_test(s, "export: refused ranges", test_export_refused);
	CU_add_test(s, "import: opened once, cached", test_import_cached);
	CU_add_test(s, "import: held mappings kept", test_held_not_trimmed);
	CU_add_test(s, "import: idle eviction", test_idle_eviction);
	CU_add_test(s, "import: stale and bad handles", test_stale_and_bad_handles);
	CU_add_test(s, "wire form", test_wire);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	ocu_unload();
	dlclose(stub);
	return failed ? 1 : 0;
}
