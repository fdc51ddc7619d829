/*
 * test_cuda.c - libomnipkg-cuda against the stand-in driver
 * (tests/cuda_stub, named by $OMNIPKG_CUDA_DRIVER): a missing driver and a
 * missing device reported, export as base + offset, the import cache (one
 * open per allocation, reference counts, idle eviction), stale handles and
 * the strict wire form; VMM allocations exported as POSIX descriptors and
 * mapped again (import, reserve, map, grant; unmapped on the last user),
 * and the interprocess events that order an importer after the producer's
 * stream, with the stream synchronised where events cannot be had.
 */
#include <CUnit/Basic.h>
#include <cuda.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
static CUdeviceptr (*s_vmm_alloc)(size_t, unsigned);
static void (*s_vmm_free)(CUdeviceptr);
static int (*s_vmm_mappings)(void);
static int (*s_vmm_handles)(void);
static int (*s_events)(void);
static int (*s_defer)(CUstream, CUdeviceptr, int, size_t);
static void (*s_run)(CUstream);
static CUresult (*s_retain)(CUcontext *, CUdevice);
static CUresult (*s_set_current)(CUcontext);
static CUresult (*s_release)(CUdevice);

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

/* A producer has a context current, as one that allocated memory does. */
static void producer_context(void)
{
	CUcontext c;

	CU_ASSERT_EQUAL_FATAL(s_retain(&c, 0), CUDA_SUCCESS);
	CU_ASSERT_EQUAL_FATAL(s_set_current(c), CUDA_SUCCESS);
}

static void producer_context_done(void)
{
	s_release(0);
}

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
	CU_ASSERT_EQUAL(h.fd, -1);
	/* no context current here: no event, the stream is synchronised */
	CU_ASSERT_EQUAL(h.flags, 0);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 1);
	CU_ASSERT_EQUAL(s_calls("cuIpcGetMemHandle"), 1);
	/* not VMM memory: asked, and the IPC handle it is */
	CU_ASSERT_EQUAL(s_calls("cuMemRetainAllocationHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemExportToShareableHandle"), 0);
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
				.offset = 4096, .nbytes = 1u << 20, .fd = -1 };
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
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not 176"));
	w[0] ^= 1;
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "magic"));
	w[0] ^= 1;
	w[4] = 1;       /* the form before descriptors and events */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 1"));
	w[4] = 2;
	w[8] = 3;
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "kind 3"));
	w[8] = 2;       /* a descriptor handle must name its allocation */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "does not name"));
	w[8] = 1;
	w[40] = 2;      /* an unknown flag */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "flags"));
	w[40] = 0;
	w[120] = 1;     /* event bytes without the flag */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), -EINVAL);
	w[40] = 1;      /* with it */
	CU_ASSERT_EQUAL(ocu_handle_decode(w, sizeof w, &back, err, sizeof err), 0);
	CU_ASSERT_EQUAL(back.flags, OCU_HAS_EVENT);
	CU_ASSERT_EQUAL(back.event[8], 1);
	w[40] = 0;
	w[120] = 0;
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


static void test_wire_fd(void)
{
	struct ocu_handle h = { .kind = OCU_KIND_FD, .alloc_size = 1 << 20, .offset = 64,
				.nbytes = 64, .flags = OCU_HAS_EVENT, .fd = 17 };
	struct ocu_handle back;
	char hex[2 * OCU_WIRE_SIZE + 1];

	memcpy(h.ipc, "OCUF", 4);
	h.ipc[4] = 42;
	h.event[0] = 'E';
	ocu_handle_hex(&h, hex);
	CU_ASSERT_EQUAL_FATAL(ocu_handle_unhex(hex, &back, err, sizeof err), 0);
	/* the descriptor is this process's: it never travels in the handle */
	CU_ASSERT_EQUAL(back.fd, -1);
	back.fd = 17;
	CU_ASSERT_EQUAL(memcmp(&h, &back, sizeof h), 0);
}

static void test_vmm_export_fd(void)
{
	struct ocu_handle h, h2;
	CUdeviceptr a;
	int fds;

	use_stub();
	a = s_vmm_alloc(1 << 20, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	CU_ASSERT_FATAL(a != 0);
	producer_context();
	s_reset();
	fds = open_fds();
	CU_ASSERT_EQUAL_FATAL(ocu_export(a + 4096, 512, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.kind, OCU_KIND_FD);
	CU_ASSERT(h.fd > 2);
	CU_ASSERT(fcntl(h.fd, F_GETFD) & FD_CLOEXEC);
	CU_ASSERT_EQUAL(open_fds(), fds + 1);
	CU_ASSERT_EQUAL(h.offset, 4096);
	CU_ASSERT_EQUAL(h.nbytes, 512);
	CU_ASSERT_EQUAL(h.alloc_size, 1 << 20);
	CU_ASSERT_EQUAL(memcmp(h.ipc, "OCUF", 4), 0);
	CU_ASSERT_EQUAL(h.flags, OCU_HAS_EVENT);
	CU_ASSERT_EQUAL(memcmp(h.event, "STEV", 4), 0);
	CU_ASSERT_EQUAL(s_calls("cuMemRetainAllocationHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemGetAllocationPropertiesFromHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemExportToShareableHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemRelease"), 1);       /* the retain given back */
	CU_ASSERT_EQUAL(s_calls("cuIpcGetMemHandle"), 0);
	CU_ASSERT_EQUAL(s_calls("cuEventCreate"), 1);
	CU_ASSERT_EQUAL(s_calls("cuEventRecord"), 1);
	CU_ASSERT_EQUAL(s_calls("cuIpcGetEventHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 0);
	CU_ASSERT_EQUAL(s_vmm_handles(), 1);
	/* again: a new descriptor, the same name, the same event recorded again */
	CU_ASSERT_EQUAL_FATAL(ocu_export(a, 64, NULL, &h2, err, sizeof err), 0);
	CU_ASSERT_EQUAL(memcmp(h.ipc, h2.ipc, OCU_IPC_BYTES), 0);
	CU_ASSERT_EQUAL(memcmp(h.event, h2.event, OCU_IPC_BYTES), 0);
	CU_ASSERT(h2.fd != h.fd);
	CU_ASSERT_EQUAL(s_calls("cuEventCreate"), 1);
	CU_ASSERT_EQUAL(s_calls("cuEventRecord"), 2);
	close(h.fd);
	close(h2.fd);
	CU_ASSERT_EQUAL(open_fds(), fds);
	/* another allocation is another name */
	{
		CUdeviceptr b = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);

		CU_ASSERT_EQUAL_FATAL(ocu_export(b, 64, NULL, &h2, err, sizeof err), 0);
		CU_ASSERT(memcmp(h.ipc, h2.ipc, OCU_IPC_BYTES) != 0);
		close(h2.fd);
		s_vmm_free(b);
	}
	ocu_unload();
	CU_ASSERT_EQUAL(s_events(), 0);
	producer_context_done();
	s_vmm_free(a);
	CU_ASSERT_EQUAL(s_vmm_handles(), 0);
}

static void test_vmm_export_modes(void)
{
	struct ocu_handle h;
	CUdeviceptr v, plain, l;

	use_stub();
	v = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	plain = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_NONE);
	l = s_alloc(4096);
	CU_ASSERT_FATAL(v && plain && l);
	/* a descriptor asked of memory that has none */
	CU_ASSERT_EQUAL(ocu_export_with(l, 64, NULL, OCU_EXPORT_FD, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "POSIX descriptor"));
	CU_ASSERT_EQUAL(h.fd, -1);
	CU_ASSERT_EQUAL(ocu_export_with(plain, 64, NULL, OCU_EXPORT_FD, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_EQUAL(s_vmm_handles(), 2);               /* no retain left behind */
	/* a VMM allocation has no legacy IPC handle: the driver says so */
	CU_ASSERT_EQUAL(ocu_export_with(v, 64, NULL, OCU_EXPORT_IPC, &h, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cuIpcGetMemHandle"));
	CU_ASSERT_EQUAL(ocu_export_with(v, 64, NULL, OCU_EXPORT_IPC | OCU_EXPORT_FD, &h, err,
					sizeof err), -EINVAL);
	/* forced, and automatic: the kinds each allocation has */
	CU_ASSERT_EQUAL(ocu_export_with(v, 64, NULL, OCU_EXPORT_FD, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.kind, OCU_KIND_FD);
	close(h.fd);
	CU_ASSERT_EQUAL(ocu_export_with(l, 64, NULL, OCU_EXPORT_IPC, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.kind, OCU_KIND_IPC);
	CU_ASSERT_EQUAL(ocu_export(l, 64, NULL, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.kind, OCU_KIND_IPC);
	ocu_unload();
	s_vmm_free(v);
	s_vmm_free(plain);
	s_free(l);
	CU_ASSERT_EQUAL(s_vmm_handles(), 0);
}

static void test_vmm_import_cached(void)
{
	struct ocu_handle h;
	CUdeviceptr a;
	uint64_t p = 0, base = 0;
	int fds;

	use_stub();
	a = s_vmm_alloc(1 << 20, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	CU_ASSERT_FATAL(a != 0);
	producer_context();
	s_reset();
	fds = open_fds();
	/* 1000 calls, each with a fresh descriptor as a client sends one, at
	 * offsets all over the allocation: mapped once */
	for (int i = 0; i < 1000; i++) {
		uint64_t off = (uint64_t)(i % 250) * 4096;

		if (ocu_export(a + off, 4096, NULL, &h, err, sizeof err)) {
			CU_FAIL_FATAL("export");
		}
		if (ocu_import(&h, &p, err, sizeof err)) {
			fprintf(stderr, "\n  import: %s\n", err);
			CU_FAIL_FATAL("import");
		}
		close(h.fd);    /* the importer keeps what it needs */
		if (!base)
			base = p - off;
		if (p != base + off)
			CU_FAIL_FATAL("offset");
		/* the same bytes, at another address */
		((volatile unsigned char *)(uintptr_t)p)[7] = (unsigned char)i;
		if (((volatile unsigned char *)(uintptr_t)(a + off))[7] != (unsigned char)i)
			CU_FAIL_FATAL("not the same memory");
		if (ocu_release(&h))
			CU_FAIL_FATAL("release");
	}
	CU_ASSERT(base != a);
	CU_ASSERT_EQUAL(ocu_opens(), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemImportFromShareableHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemAddressReserve"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemMap"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemSetAccess"), 1);
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenEventHandle"), 1);
	CU_ASSERT_EQUAL(s_calls("cuEventSynchronize"), 1000);
	CU_ASSERT_EQUAL(s_vmm_mappings(), 2);     /* the producer's and the import's */
	CU_ASSERT_EQUAL(s_vmm_handles(), 2);
	CU_ASSERT_EQUAL(open_fds(), fds + 1);     /* the import's own hold on the memfd */
	CU_ASSERT_EQUAL(ocu_refs(&h), 0);
	/* the last user gone and trimmed: unmapped, released, freed */
	CU_ASSERT_EQUAL(ocu_trim(), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemUnmap"), 1);
	CU_ASSERT_EQUAL(s_calls("cuMemAddressFree"), 1);
	CU_ASSERT_EQUAL(s_vmm_mappings(), 1);
	CU_ASSERT_EQUAL(s_vmm_handles(), 1);
	CU_ASSERT_EQUAL(open_fds(), fds);
	ocu_unload();
	producer_context_done();
	s_vmm_free(a);
	CU_ASSERT_EQUAL(s_vmm_handles(), 0);
}

static void test_vmm_import_refused(void)
{
	struct ocu_handle h, bad;
	CUdeviceptr a;
	uint64_t p;
	int pfd[2];

	use_stub();
	a = s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a, 64, NULL, &h, err, sizeof err), 0);
	bad = h;
	bad.fd = -1;       /* not mapped yet, and no descriptor came */
	CU_ASSERT_EQUAL(ocu_import(&bad, &p, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "needs its descriptor"));
	CU_ASSERT_FATAL(pipe(pfd) == 0);
	bad.fd = pfd[0];   /* a descriptor, but not of memory */
	CU_ASSERT_EQUAL(ocu_import(&bad, &p, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cuMemImportFromShareableHandle"));
	close(pfd[0]);
	close(pfd[1]);
	CU_ASSERT_EQUAL(ocu_refs(&h), -1);
	CU_ASSERT_EQUAL(s_vmm_mappings(), 1);
	CU_ASSERT_EQUAL(s_vmm_handles(), 1);
	/* mapped once, later calls need no descriptor */
	CU_ASSERT_EQUAL_FATAL(ocu_import(&h, &p, err, sizeof err), 0);
	close(h.fd);
	h.fd = -1;
	CU_ASSERT_EQUAL(ocu_import(&h, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(ocu_refs(&h), 2);
	/* unload unmaps even held ones */
	ocu_unload();
	CU_ASSERT_EQUAL(s_vmm_mappings(), 1);
	CU_ASSERT_EQUAL(s_vmm_handles(), 1);
	s_vmm_free(a);
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/*
 * The producer's "kernel" is still writing when the handle leaves; a
 * child process imports it and must see the kernel's bytes, which it can
 * only if it waits for the event: the producer finishes the kernel 200 ms
 * later.  kind: the allocation's.
 */
static void event_orders(int vmm)
{
	struct ocu_handle h;
	CUstream s = (CUstream)(uintptr_t)0x5000;
	CUdeviceptr a;
	pid_t pid;
	int status, pfd[2];

	use_stub();
	a = vmm ? s_vmm_alloc(1 << 16, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) : s_alloc(1 << 16);
	CU_ASSERT_FATAL(a != 0);
	memset((void *)(uintptr_t)a, 1, 1 << 16);
	producer_context();
	CU_ASSERT_EQUAL_FATAL(s_defer(s, a + 128, 7, 256), 0);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a + 128, 256, s, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.flags, OCU_HAS_EVENT);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 0);
	/* not written yet: the export did not wait */
	CU_ASSERT_EQUAL(((unsigned char *)(uintptr_t)a)[128], 1);
	CU_ASSERT_FATAL(pipe(pfd) == 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		uint64_t p;
		double t0 = now();
		int bad = 0;

		close(pfd[0]);
		if (write(pfd[1], "x", 1) != 1)
			_exit(10);
		s_reset();               /* count the child's calls alone */
		if (ocu_import(&h, &p, err, sizeof err)) {
			fprintf(stderr, "child import: %s\n", err);
			_exit(11);
		}
		for (int i = 0; i < 256; i++)
			bad += ((unsigned char *)(uintptr_t)p)[i] != 7;
		if (s_calls("cuIpcOpenEventHandle") != 1 || s_calls("cuEventSynchronize") != 1)
			_exit(12);
		_exit(bad ? 13 : now() - t0 < 0.15 ? 14 : 0);
	}
	close(pfd[1]);
	{
		char c;

		CU_ASSERT_EQUAL(read(pfd[0], &c, 1), 1);
	}
	close(pfd[0]);
	usleep(200000);
	s_run(s);                    /* the kernel ends, and the event with it */
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "\n  child: status %d\n", status);
	CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
	if (h.fd >= 0)
		close(h.fd);
	ocu_unload();
	producer_context_done();
	if (vmm)
		s_vmm_free(a);
	else
		s_free(a);
}

static void test_event_orders_ipc(void)
{
	event_orders(0);
}

static void test_event_orders_fd(void)
{
	event_orders(1);
}

static void test_stream_sync_fallback(void)
{
	struct ocu_handle h;
	CUstream s = (CUstream)(uintptr_t)0x6000;
	CUdeviceptr a;
	uint64_t p;

	use_stub();
	a = s_alloc(4096);
	producer_context();
	/* asked for */
	CU_ASSERT_EQUAL_FATAL(s_defer(s, a, 9, 16), 0);
	CU_ASSERT_EQUAL_FATAL(ocu_export_with(a, 16, s, OCU_EXPORT_SYNC, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.flags, 0);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 1);
	CU_ASSERT_EQUAL(s_calls("cuEventRecord"), 0);
	CU_ASSERT_EQUAL(((unsigned char *)(uintptr_t)a)[15], 9);     /* done before it left */
	CU_ASSERT_EQUAL_FATAL(ocu_import(&h, &p, err, sizeof err), 0);
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenEventHandle"), 0);
	CU_ASSERT_EQUAL(s_calls("cuEventSynchronize"), 0);
	ocu_release(&h);
	ocu_unload();
	/* a driver without interprocess events */
	setenv("STUB_CUDA_NOEVENTS", "1", 1);
	use_stub();
	CU_ASSERT_EQUAL_FATAL(s_defer(s, a, 4, 16), 0);
	CU_ASSERT_EQUAL_FATAL(ocu_export(a, 16, s, &h, err, sizeof err), 0);
	CU_ASSERT_EQUAL(h.flags, 0);
	CU_ASSERT_EQUAL(s_calls("cuEventCreate"), 1);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 1);
	CU_ASSERT_EQUAL(((unsigned char *)(uintptr_t)a)[0], 4);
	unsetenv("STUB_CUDA_NOEVENTS");
	ocu_unload();
	producer_context_done();
	s_free(a);
}

static void test_events_per_stream(void)
{
	struct ocu_handle h[OCU_EVENTS_MAX + 1];
	CUdeviceptr a;
	uint64_t p;

	use_stub();
	a = s_alloc(4096);
	producer_context();
	/* one event per stream, then the stream is synchronised instead */
	for (int i = 0; i <= OCU_EVENTS_MAX; i++)
		CU_ASSERT_EQUAL_FATAL(ocu_export(a, 16, (void *)(uintptr_t)(0x100 + i), &h[i], err,
						 sizeof err), 0);
	CU_ASSERT_EQUAL(s_calls("cuEventCreate"), OCU_EVENTS_MAX);
	CU_ASSERT_EQUAL(h[OCU_EVENTS_MAX - 1].flags, OCU_HAS_EVENT);
	CU_ASSERT_EQUAL(h[OCU_EVENTS_MAX].flags, 0);
	CU_ASSERT_EQUAL(s_calls("cuStreamSynchronize"), 1);
	CU_ASSERT(memcmp(h[0].event, h[1].event, OCU_IPC_BYTES) != 0);
	/* the importer opens each once, and keeps OCU_EVENTS_MAX of its own */
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < OCU_EVENTS_MAX; i++) {
			CU_ASSERT_EQUAL_FATAL(ocu_import(&h[i], &p, err, sizeof err), 0);
			ocu_release(&h[i]);
		}
	CU_ASSERT_EQUAL(s_calls("cuIpcOpenEventHandle"), OCU_EVENTS_MAX);
	CU_ASSERT_EQUAL(s_events(), 2 * OCU_EVENTS_MAX);
	ocu_unload();
	CU_ASSERT_EQUAL(s_events(), 0);
	producer_context_done();
	s_free(a);
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
	*(void **)&s_vmm_alloc = dlsym(stub, "stub_vmm_alloc");
	*(void **)&s_vmm_free = dlsym(stub, "stub_vmm_free");
	*(void **)&s_vmm_mappings = dlsym(stub, "stub_vmm_mappings");
	*(void **)&s_vmm_handles = dlsym(stub, "stub_vmm_handles");
	*(void **)&s_events = dlsym(stub, "stub_events");
	*(void **)&s_defer = dlsym(stub, "stub_stream_defer");
	*(void **)&s_run = dlsym(stub, "stub_stream_run");
	*(void **)&s_retain = dlsym(stub, "cuDevicePrimaryCtxRetain");
	*(void **)&s_set_current = dlsym(stub, "cuCtxSetCurrent");
	*(void **)&s_release = dlsym(stub, "cuDevicePrimaryCtxRelease_v2");
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
	CU_add_test(s, "wire form: descriptor kind", test_wire_fd);
	CU_add_test(s, "VMM: exported as a descriptor", test_vmm_export_fd);
	CU_add_test(s, "VMM: kinds asked for", test_vmm_export_modes);
	CU_add_test(s, "VMM: mapped once over 1000 imports", test_vmm_import_cached);
	CU_add_test(s, "VMM: imports refused", test_vmm_import_refused);
	CU_add_test(s, "events: IPC importer waits", test_event_orders_ipc);
	CU_add_test(s, "events: descriptor importer waits", test_event_orders_fd);
	CU_add_test(s, "events: stream synchronised instead", test_stream_sync_fallback);
	CU_add_test(s, "events: one per stream, opened once", test_events_per_stream);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	ocu_unload();
	dlclose(stub);
	return failed ? 1 : 0;
}
