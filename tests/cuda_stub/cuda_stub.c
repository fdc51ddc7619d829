/*
 * cuda_stub.c - a stand-in for libcuda.so.1, built only for the tests and
 * never installed.  It fakes device allocations (stub_alloc) with POSIX
 * shared memory, so a "device pointer" is a host address another process
 * can map: its IPC handles name the segment, cuIpcOpenMemHandle maps it
 * (in the allocating process: the allocation itself, which a real driver
 * refuses), and every call is counted (stub_calls) so tests can see how
 * often a handle was opened.
 *
 *   $STUB_CUDA_NODEVICE=1  cuInit fails with CUDA_ERROR_NO_DEVICE
 *   $STUB_CUDA_LOG=<file>  every call appended to <file>, "pid name" a line
 *                          (lets a test see a forked worker's calls)
 */
#include <cuda.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
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
/* Another process's allocation, mapped by cuIpcOpenMemHandle. */
static struct peer {
	unsigned char *mem;
	size_t size;
	int refs;
} peers[STUB_MAX];

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
			fprintf(f, "%d %s\n", (int)getpid(), name);
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
		n += open_refs[i] + peers[i].refs;
	return n;
}

STUB_API int stub_primary_refs(void)
{
	return primary_refs;
}

static void segname(char *buf, size_t n, int pid, unsigned s)
{
	snprintf(buf, n, "/omnicudastub-%d-%u", pid, s);
}

static void *mapseg(int pid, unsigned s, size_t size, int create)
{
	char name[64];
	void *p;
	int fd;

	segname(name, sizeof name, pid, s);
	fd = shm_open(name, create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
	if (fd < 0)
		return NULL;
	if (create && ftruncate(fd, (off_t)(size ? size : 1)) < 0) {
		close(fd);
		shm_unlink(name);
		return NULL;
	}
	p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

/* A fake device allocation; its "device pointer" is the host address. */
STUB_API CUdeviceptr stub_alloc(size_t size)
{
	for (int i = 0; i < STUB_MAX; i++)
		if (!allocs[i].mem) {
			unsigned char *m = mapseg(getpid(), serial + 1, size, 1);

			if (!m)
				return 0;
			allocs[i].mem = m;
			allocs[i].size = size;
			allocs[i].serial = ++serial;
			return (CUdeviceptr)(uintptr_t)allocs[i].mem;
		}
	return 0;
}

STUB_API void stub_free(CUdeviceptr p)
{
	char name[64];

	for (int i = 0; i < STUB_MAX; i++)
		if (allocs[i].mem && (CUdeviceptr)(uintptr_t)allocs[i].mem == p) {
			munmap(allocs[i].mem, allocs[i].size ? allocs[i].size : 1);
			segname(name, sizeof name, getpid(), allocs[i].serial);
			shm_unlink(name);
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

STUB_API CUresult cuCtxSynchronize(void)
{
	note("cuCtxSynchronize");
	NEED_INIT();
	return current ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

/* Handle bytes: "STUB", slot, serial, pid, size, then zeros. */
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
	{
		int pid = getpid();
		uint64_t size = allocs[i].size;

		memcpy(h->reserved + 12, &pid, sizeof pid);
		memcpy(h->reserved + 16, &size, sizeof size);
	}
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
	{
		int pid;
		uint64_t size;

		memcpy(&pid, h.reserved + 12, sizeof pid);
		memcpy(&size, h.reserved + 16, sizeof size);
		if (pid != getpid()) {
			for (int k = 0; k < STUB_MAX; k++)
				if (!peers[k].mem) {
					peers[k].mem = mapseg(pid, s, (size_t)size, 0);
					if (!peers[k].mem)
						return CUDA_ERROR_INVALID_HANDLE;
					peers[k].size = (size_t)size;
					peers[k].refs = 1;
					*p = (CUdeviceptr)(uintptr_t)peers[k].mem;
					return CUDA_SUCCESS;
				}
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
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
	for (int k = 0; k < STUB_MAX; k++)
		if (peers[k].mem && (CUdeviceptr)(uintptr_t)peers[k].mem == p) {
			munmap(peers[k].mem, peers[k].size ? peers[k].size : 1);
			peers[k].mem = NULL;
			peers[k].refs = 0;
			return CUDA_SUCCESS;
		}
	i = which(p);
	if (i < 0 || open_refs[i] <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	open_refs[i]--;
	return CUDA_SUCCESS;
}
