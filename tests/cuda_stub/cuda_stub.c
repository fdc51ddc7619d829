/*
 * cuda_stub.c - a stand-in for libcuda.so.1, built only for the tests and
 * never installed.  It fakes device allocations (stub_alloc) with host
 * memory, hands out IPC handles that name them, maps them back on
 * cuIpcOpenMemHandle, and counts every call (stub_calls) so tests can see
 * how often a handle was opened.
 *
 *   $STUB_CUDA_NODEVICE=1  cuInit fails with CUDA_ERROR_NO_DEVICE
 *   $STUB_CUDA_LOG=<file>  every call appended to <file>, one name a line
 *                          (lets a test see a forked worker's calls)
 */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STUB_API __attribute__((visibility("default")))
#define STUB_MAX 64

static struct alloc {
	unsigned char *mem;
	size_t size;
	unsigned serial; /* changes when the slot is reused, as a real handle would */
} allocs[STUB_MAX];
static unsigned serial;
static int inited;
static CUcontext current;
static int primary_refs;
static int open_refs[STUB_MAX];

static struct {
	const char *name;
	int n;
} calls[32];

static void note(const char *name)
{
	const char *log = getenv("STUB_CUDA_LOG");
	int i;

	for (i = 0; i < 32 && calls[i].name; i++)
		if (!strcmp(calls[i].name, name))
			break;
	if (i < 32) {
		calls[i].name = name;
		calls[i].n++;
	}
	if (log && *log) {
		FILE *f = fopen(log, "a");

		if (f) {
			fprintf(f, "%s\n", name);
			fclose(f);
		}
	}
}

STUB_API int stub_calls(const char *name)
{
	for (int i = 0; i < 32 && calls[i].name; i++)
		if (!strcmp(calls[i].name, name))
			return calls[i].n;
	return 0;
}

STUB_API void stub_reset(void)
{
	memset(calls, 0, sizeof calls);
}

STUB_API int stub_open_mappings(void)
{
	int n = 0;

	for (int i = 0; i < STUB_MAX; i++)
		n += open_refs[i];
	return n;
}

STUB_API int stub_primary_refs(void)
{
	return primary_refs;
}

/* A fake device allocation; its "device pointer" is the host address. */
STUB_API CUdeviceptr stub_alloc(size_t size)
{
	for (int i = 0; i < STUB_MAX; i++)
		if (!allocs[i].mem) {
			allocs[i].mem = calloc(1, size ? size : 1);
			allocs[i].size = size;
			allocs[i].serial = ++serial;
			return (CUdeviceptr)(uintptr_t)allocs[i].mem;
		}
	return 0;
}

STUB_API void stub_free(CUdeviceptr p)
{
	for (int i = 0; i < STUB_MAX; i++)
		if ((CUdeviceptr)(uintptr_t)allocs[i].mem == p) {
			free(allocs[i].mem);
			allocs[i].mem = NULL;
		}
}

static int which(CUdeviceptr p)
{
	for (int i = 0; i < STUB_MAX; i++) {
		CUdeviceptr b = (CUdeviceptr)(uintptr_t)allocs[i].mem;

		if (allocs[i].mem && p >= b && p < b + allocs[i].size + (allocs[i].size == 0))
			return i;
	}
	return -1;
}

STUB_API CUresult cuInit(unsigned int flags)
{
	const char *nodev = getenv("STUB_CUDA_NODEVICE");

	note("cuInit");
	if (flags)
		return CUDA_ERROR_INVALID_VALUE;
	if (nodev && *nodev == '1')
		return CUDA_ERROR_NO_DEVICE;
	inited = 1;
	return CUDA_SUCCESS;
}

#define NEED_INIT()                                                                   \
	do {                                                                          \
		if (!inited)                                                          \
			return CUDA_ERROR_NOT_INITIALIZED;                            \
	} while (0)

STUB_API CUresult cuDeviceGetCount(int *n)
{
	note("cuDeviceGetCount");
	NEED_INIT();
	*n = 1;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
	note("cuDeviceGet");
	NEED_INIT();
	if (ordinal != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	*d = 0;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuGetErrorString(CUresult r, const char **s)
{
	switch (r) {
	case CUDA_SUCCESS: *s = "no error"; break;
	case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
	case CUDA_ERROR_NOT_INITIALIZED: *s = "initialization error"; break;
	case CUDA_ERROR_NO_DEVICE: *s = "no CUDA-capable device is detected"; break;
	case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; break;
	case CUDA_ERROR_INVALID_HANDLE: *s = "invalid resource handle"; break;
	default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

STUB_API CUresult cuCtxGetCurrent(CUcontext *c)
{
	note("cuCtxGetCurrent");
	NEED_INIT();
	*c = current;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuCtxSetCurrent(CUcontext c)
{
	note("cuCtxSetCurrent");
	NEED_INIT();
	current = c;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuCtxGetDevice(CUdevice *d)
{
	note("cuCtxGetDevice");
	NEED_INIT();
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	*d = 0;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
	note("cuDevicePrimaryCtxRetain");
	NEED_INIT();
	if (d != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	primary_refs++;
	*c = (CUcontext)(uintptr_t)0x1000;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
	note("cuDevicePrimaryCtxRelease_v2");
	NEED_INIT();
	if (d != 0 || primary_refs <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	/* the last release destroys the primary context: nothing is current */
	if (--primary_refs == 0)
		current = NULL;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
	int i;

	note("cuMemGetAddressRange_v2");
	NEED_INIT();
	i = which(p);
	if (i < 0)
		return CUDA_ERROR_INVALID_VALUE;
	*base = (CUdeviceptr)(uintptr_t)allocs[i].mem;
	*size = allocs[i].size;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuStreamSynchronize(CUstream s)
{
	(void)s;
	note("cuStreamSynchronize");
	NEED_INIT();
	return CUDA_SUCCESS;
}

/* Handle bytes: "STUB", slot, serial, then zeros. */
STUB_API CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p)
{
	int i;

	note("cuIpcGetMemHandle");
	NEED_INIT();
	i = which(p);
	if (i < 0 || (CUdeviceptr)(uintptr_t)allocs[i].mem != p)
		return CUDA_ERROR_INVALID_VALUE;
	memset(h, 0, sizeof *h);
	memcpy(h->reserved, "STUB", 4);
	memcpy(h->reserved + 4, &i, sizeof i);
	memcpy(h->reserved + 8, &allocs[i].serial, sizeof allocs[i].serial);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned int flags)
{
	int i;
	unsigned s;

	(void)flags;
	note("cuIpcOpenMemHandle_v2");
	NEED_INIT();
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (memcmp(h.reserved, "STUB", 4))
		return CUDA_ERROR_INVALID_HANDLE;
	memcpy(&i, h.reserved + 4, sizeof i);
	memcpy(&s, h.reserved + 8, sizeof s);
	if (i < 0 || i >= STUB_MAX || !allocs[i].mem || allocs[i].serial != s)
		return CUDA_ERROR_INVALID_HANDLE;
	open_refs[i]++;
	*p = (CUdeviceptr)(uintptr_t)allocs[i].mem;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuIpcCloseMemHandle(CUdeviceptr p)
{
	int i;

	note("cuIpcCloseMemHandle");
	NEED_INIT();
	i = which(p);
	if (i < 0 || open_refs[i] <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	open_refs[i]--;
	return CUDA_SUCCESS;
}
