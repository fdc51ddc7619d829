/*
 * cuda_stub.c - a stand-in for libcuda.so.1, built only for the tests and
 * never installed.  It fakes device allocations (stub_alloc) with POSIX
 * shared memory, so a "device pointer" is a host address another process
 * can map: its IPC handles name the segment, cuIpcOpenMemHandle maps it
 * (in the allocating process: the allocation itself, which a real driver
 * refuses), and every call is counted (stub_calls) so tests can see how
 * often a handle was opened.
 *
 * The VMM calls are emulated as the driver documents them: cuMemCreate
 * makes a memfd (the physical memory), cuMemAddressReserve reserves
 * address space (PROT_NONE), cuMemMap maps the memfd there but leaves it
 * inaccessible until cuMemSetAccess, cuMemExportToShareableHandle hands
 * out a real descriptor of the memfd, and cuMemImportFromShareableHandle
 * takes one (from any process), so an importer maps the same bytes.
 * Handles count their references (creation, retains, imports, mappings)
 * and the memory goes with the last.  stub_vmm_alloc does all four steps.
 *
 * Streams do their work at once, unless a test defers some
 * (stub_stream_defer: a memset a "kernel" will do later), which then runs
 * at stub_stream_run, cuStreamSynchronize or cuCtxSynchronize.  An event
 * recorded behind deferred work completes with it; interprocess events
 * keep their two counters (recorded, done) in shared memory, so another
 * process's cuEventSynchronize waits (polling, up to 10 s) until the
 * producer runs its stream.
 *
 *   $STUB_CUDA_NODEVICE=1  cuInit fails with CUDA_ERROR_NO_DEVICE
 *   $STUB_CUDA_NOEVENTS=1  cuEventCreate refuses interprocess events
 *   $STUB_CUDA_LOG=<file>  every call appended to <file>, "pid name" a line
 *                          (lets a test see a forked worker's calls)
 */
#include <cuda.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STUB_API __attribute__((visibility("default")))
#define STUB_MAX 64
#define STUB_CALLS 64
#define STUB_GRANULE 65536   /* cuMemGetAllocationGranularity */

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
static unsigned long long buffer_ids;   /* CU_POINTER_ATTRIBUTE_BUFFER_ID: never reused */
static unsigned long long alloc_ids[STUB_MAX];
static int inited;
static CUcontext current;
static int primary_refs;
static int open_refs[STUB_MAX];

static struct {
	const char *name;
	int n;
} calls[STUB_CALLS];

static void note(const char *name)
{
	const char *log = getenv("STUB_CUDA_LOG");
	int i;

	for (i = 0; i < STUB_CALLS && calls[i].name; i++)
		if (!strcmp(calls[i].name, name))
			break;
	if (i < STUB_CALLS) {
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
	for (int i = 0; i < STUB_CALLS && calls[i].name; i++)
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
static int vmm_range(CUdeviceptr p, CUdeviceptr *base, size_t *size, unsigned long long *id);
static void streams_run(CUstream s, int all);

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
			alloc_ids[i] = ++buffer_ids;
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
	if (vmm_range(p, base, size, NULL))
		return CUDA_SUCCESS;
	i = which(p);
	if (i < 0)
		return CUDA_ERROR_INVALID_VALUE;
	*base = (CUdeviceptr)(uintptr_t)allocs[i].mem;
	*size = allocs[i].size;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuStreamSynchronize(CUstream s)
{
	note("cuStreamSynchronize");
	NEED_INIT();
	streams_run(s, 0);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuCtxSynchronize(void)
{
	note("cuCtxSynchronize");
	NEED_INIT();
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	streams_run(NULL, 1);
	return CUDA_SUCCESS;
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

/* ---- VMM: physical allocations, reservations, mappings ---------------- */

static struct phys {
	int fd;                  /* memfd: the memory; -1 the slot is free */
	size_t size;
	unsigned types;          /* requestedHandleTypes */
	int refs;                /* handles given out, and mappings */
	unsigned gen;            /* in the handle value: a stale handle is refused */
} phys[STUB_MAX];
static struct range {
	unsigned char *p;
	size_t size;
	int slot;                /* mappings: the physical allocation */
	unsigned long long id;   /* mappings: buffer id */
} resv[STUB_MAX], maps_[STUB_MAX];
static unsigned phys_gen;

static CUmemGenericAllocationHandle handle_of(int i)
{
	return (CUmemGenericAllocationHandle)phys[i].gen << 8 | (unsigned)i;
}

/* The slot a handle names, or -1. */
static int phys_of(CUmemGenericAllocationHandle h)
{
	int i = (int)(h & 0xff);

	if (i >= STUB_MAX || !phys[i].size || phys[i].gen != (unsigned)(h >> 8))
		return -1;
	return i;
}

static void phys_unref(int i)
{
	if (--phys[i].refs == 0) {
		close(phys[i].fd);
		memset(&phys[i], 0, sizeof phys[i]);
	}
}

static int phys_new(int fd, size_t size, unsigned types)
{
	for (int i = 0; i < STUB_MAX; i++)
		if (!phys[i].size) {
			phys[i] = (struct phys){ .fd = fd, .size = size, .types = types, .refs = 1,
						 .gen = ++phys_gen };
			return i;
		}
	return -1;
}

static struct range *range_at(struct range *t, CUdeviceptr p)
{
	for (int i = 0; i < STUB_MAX; i++)
		if (t[i].p && p >= (CUdeviceptr)(uintptr_t)t[i].p &&
		    p < (CUdeviceptr)(uintptr_t)t[i].p + t[i].size)
			return &t[i];
	return NULL;
}

static struct range *range_free(struct range *t)
{
	for (int i = 0; i < STUB_MAX; i++)
		if (!t[i].p)
			return &t[i];
	return NULL;
}

static int vmm_range(CUdeviceptr p, CUdeviceptr *base, size_t *size, unsigned long long *id)
{
	struct range *m = range_at(maps_, p);

	if (!m)
		return 0;
	*base = (CUdeviceptr)(uintptr_t)m->p;
	*size = m->size;
	if (id)
		*id = m->id;
	return 1;
}

STUB_API CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop,
						CUmemAllocationGranularity_flags option)
{
	(void)option;
	note("cuMemGetAllocationGranularity");
	NEED_INIT();
	if (!g || !prop)
		return CUDA_ERROR_INVALID_VALUE;
	*g = STUB_GRANULE;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size,
			      const CUmemAllocationProp *prop, unsigned long long flags)
{
	int fd, i;

	note("cuMemCreate");
	NEED_INIT();
	if (!h || !prop || flags || !size || size % STUB_GRANULE ||
	    prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
	    prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id != 0)
		return CUDA_ERROR_INVALID_VALUE;
	fd = memfd_create("omnicudastub-vmm", MFD_CLOEXEC);
	if (fd < 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	if (ftruncate(fd, (off_t)size) < 0 || (i = phys_new(fd, size, prop->requestedHandleTypes)) < 0) {
		close(fd);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*h = handle_of(i);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
	int i;

	note("cuMemRelease");
	NEED_INIT();
	if ((i = phys_of(h)) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	phys_unref(i);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr,
				      unsigned long long flags)
{
	struct range *r;
	unsigned char *m, *at;

	(void)addr;
	note("cuMemAddressReserve");
	NEED_INIT();
	if (!p || !size || size % STUB_GRANULE || flags || (align && align % STUB_GRANULE) ||
	    !(r = range_free(resv)))
		return CUDA_ERROR_INVALID_VALUE;
	/* aligned to the granularity, as the driver's are */
	m = mmap(NULL, size + STUB_GRANULE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (m == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	at = m + (STUB_GRANULE - (uintptr_t)m % STUB_GRANULE) % STUB_GRANULE;
	if (at > m)
		munmap(m, (size_t)(at - m));
	munmap(at + size, (size_t)(m + STUB_GRANULE - at));
	m = at;
	*r = (struct range){ .p = m, .size = size };
	*p = (CUdeviceptr)(uintptr_t)m;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemAddressFree(CUdeviceptr p, size_t size)
{
	struct range *r;

	note("cuMemAddressFree");
	NEED_INIT();
	r = range_at(resv, p);
	if (!r || (CUdeviceptr)(uintptr_t)r->p != p || r->size != size)
		return CUDA_ERROR_INVALID_VALUE;
	for (int i = 0; i < STUB_MAX; i++)
		if (maps_[i].p >= r->p && maps_[i].p < r->p + r->size)
			return CUDA_ERROR_INVALID_VALUE;   /* still mapped */
	munmap(r->p, r->size);
	memset(r, 0, sizeof *r);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemMap(CUdeviceptr p, size_t size, size_t offset, CUmemGenericAllocationHandle h,
			   unsigned long long flags)
{
	struct range *r = range_at(resv, p), *m;
	int i = phys_of(h);

	note("cuMemMap");
	NEED_INIT();
	if (i < 0 || !r || offset || flags || !size || size % STUB_GRANULE || size > phys[i].size ||
	    p + size > (CUdeviceptr)(uintptr_t)r->p + r->size)
		return CUDA_ERROR_INVALID_VALUE;
	for (int k = 0; k < STUB_MAX; k++)
		if (maps_[k].p && (CUdeviceptr)(uintptr_t)maps_[k].p < p + size &&
		    p < (CUdeviceptr)(uintptr_t)maps_[k].p + maps_[k].size)
			return CUDA_ERROR_INVALID_VALUE;   /* already mapped */
	if (!(m = range_free(maps_)))
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* mapped, but not accessible until cuMemSetAccess */
	if (mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, phys[i].fd, 0) ==
	    MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*m = (struct range){ .p = (unsigned char *)(uintptr_t)p, .size = size, .slot = i,
			     .id = ++buffer_ids };
	phys[i].refs++;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemUnmap(CUdeviceptr p, size_t size)
{
	struct range *m;

	note("cuMemUnmap");
	NEED_INIT();
	m = range_at(maps_, p);
	if (!m || (CUdeviceptr)(uintptr_t)m->p != p || m->size != size)
		return CUDA_ERROR_INVALID_VALUE;
	/* back to reserved address space */
	mmap(m->p, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	phys_unref(m->slot);
	memset(m, 0, sizeof *m);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *desc,
				 size_t count)
{
	struct range *m;
	int prot = PROT_NONE;

	note("cuMemSetAccess");
	NEED_INIT();
	m = range_at(maps_, p);
	if (!m || (CUdeviceptr)(uintptr_t)m->p != p || m->size != size || !desc || count != 1 ||
	    desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc->location.id != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (desc->flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
		prot = PROT_READ | PROT_WRITE;
	else if (desc->flags == CU_MEM_ACCESS_FLAGS_PROT_READ)
		prot = PROT_READ;
	else if (desc->flags != CU_MEM_ACCESS_FLAGS_PROT_NONE)
		return CUDA_ERROR_INVALID_VALUE;
	return mprotect(m->p, m->size, prot) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

STUB_API CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr)
{
	struct range *m;

	note("cuMemRetainAllocationHandle");
	NEED_INIT();
	m = range_at(maps_, (CUdeviceptr)(uintptr_t)addr);
	if (!m || !h)
		return CUDA_ERROR_INVALID_VALUE;   /* not VMM memory */
	phys[m->slot].refs++;
	*h = handle_of(m->slot);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
							 CUmemGenericAllocationHandle h)
{
	int i;

	note("cuMemGetAllocationPropertiesFromHandle");
	NEED_INIT();
	if (!prop || (i = phys_of(h)) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	memset(prop, 0, sizeof *prop);
	prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop->requestedHandleTypes = (CUmemAllocationHandleType)phys[i].types;
	prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop->location.id = 0;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h,
					       CUmemAllocationHandleType type, unsigned long long flags)
{
	int i = phys_of(h), fd;

	note("cuMemExportToShareableHandle");
	NEED_INIT();
	if (i < 0 || !out || flags || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_INVALID_VALUE;
	if (!(phys[i].types & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return CUDA_ERROR_NOT_PERMITTED;
	/* a new descriptor the caller owns, as the driver's is */
	if ((fd = fcntl(phys[i].fd, F_DUPFD, 3)) < 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	memcpy(out, &fd, sizeof fd);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os,
						 CUmemAllocationHandleType type)
{
	int fd = (int)(uintptr_t)os, mine, i;
	char link[64], target[256];
	struct stat st;
	ssize_t n;

	note("cuMemImportFromShareableHandle");
	NEED_INIT();
	if (!h || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_INVALID_VALUE;
	/* only what cuMemExportToShareableHandle gave: one of our memfds */
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof target - 1);
	if (n < 0 || fstat(fd, &st) < 0)
		return CUDA_ERROR_INVALID_VALUE;
	target[n] = 0;
	if (strncmp(target, "/memfd:omnicudastub-vmm", 23) || !st.st_size)
		return CUDA_ERROR_INVALID_VALUE;
	/* the caller keeps its descriptor; the handle holds its own */
	if ((mine = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	if ((i = phys_new(mine, (size_t)st.st_size, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) < 0) {
		close(mine);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*h = handle_of(i);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attr, CUdeviceptr p)
{
	unsigned long long id = 0;
	CUdeviceptr base;
	size_t size;
	int i;

	note("cuPointerGetAttribute");
	NEED_INIT();
	if (!data || attr != CU_POINTER_ATTRIBUTE_BUFFER_ID)
		return CUDA_ERROR_INVALID_VALUE;
	if (!vmm_range(p, &base, &size, &id)) {
		if ((i = which(p)) < 0)
			return CUDA_ERROR_INVALID_VALUE;
		id = alloc_ids[i];
	}
	memcpy(data, &id, sizeof id);
	return CUDA_SUCCESS;
}

/* A VMM allocation of size bytes allowing types, mapped read-write. */
STUB_API CUdeviceptr stub_vmm_alloc(size_t size, unsigned types)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .requestedHandleTypes = (CUmemAllocationHandleType)types,
				     .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 } };
	CUmemAccessDesc a = { .location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemGenericAllocationHandle h;
	CUdeviceptr p;

	size = (size + STUB_GRANULE - 1) / STUB_GRANULE * STUB_GRANULE;
	if (cuMemCreate(&h, size, &prop, 0) != CUDA_SUCCESS)
		return 0;
	if (cuMemAddressReserve(&p, size, 0, 0, 0) != CUDA_SUCCESS) {
		cuMemRelease(h);
		return 0;
	}
	if (cuMemMap(p, size, 0, h, 0) != CUDA_SUCCESS || cuMemSetAccess(p, size, &a, 1) != CUDA_SUCCESS) {
		cuMemUnmap(p, size);
		cuMemAddressFree(p, size);
		cuMemRelease(h);
		return 0;
	}
	cuMemRelease(h);   /* the mapping holds it */
	return p;
}

STUB_API void stub_vmm_free(CUdeviceptr p)
{
	struct range *m = range_at(maps_, p);
	size_t size;

	if (!m)
		return;
	size = m->size;
	p = (CUdeviceptr)(uintptr_t)m->p;
	cuMemUnmap(p, size);
	cuMemAddressFree(p, size);
}

/* Live mappings and physical allocations in this process. */
STUB_API int stub_vmm_mappings(void)
{
	int n = 0;

	for (int i = 0; i < STUB_MAX; i++)
		n += maps_[i].p != NULL;
	return n;
}

STUB_API int stub_vmm_handles(void)
{
	int n = 0;

	for (int i = 0; i < STUB_MAX; i++)
		n += phys[i].size != 0;
	return n;
}

/* ---- streams and events ------------------------------------------------- */

/* Two counters an event shares with whoever opened it. */
struct evword {
	unsigned long long recorded, done;
};

static struct event {
	struct evword *w;        /* NULL: the slot is free */
	unsigned flags;
	int imported;
	int owner_pid;
	unsigned serial;
} evs[STUB_MAX];
static unsigned ev_serial;

static struct stream {
	CUstream s;
	int used;
	struct { unsigned char *dst; int byte; size_t n; } work[8];
	int nwork;
	struct { struct evword *w; unsigned long long seq; } after[16];
	int nafter;
} streams[8];

static struct stream *stream_of(CUstream s, int make)
{
	for (int i = 0; i < 8; i++)
		if (streams[i].used && streams[i].s == s)
			return &streams[i];
	if (!make)
		return NULL;
	for (int i = 0; i < 8; i++)
		if (!streams[i].used) {
			memset(&streams[i], 0, sizeof streams[i]);
			streams[i].used = 1;
			streams[i].s = s;
			return &streams[i];
		}
	return NULL;
}

/* Queues a memset that the stream does later (a kernel still running). */
STUB_API int stub_stream_defer(CUstream s, CUdeviceptr dst, int byte, size_t n)
{
	struct stream *st = stream_of(s, 1);

	if (!st || st->nwork == 8)
		return -1;
	st->work[st->nwork].dst = (unsigned char *)(uintptr_t)dst;
	st->work[st->nwork].byte = byte;
	st->work[st->nwork].n = n;
	st->nwork++;
	return 0;
}

static void stream_run(struct stream *st)
{
	for (int i = 0; i < st->nwork; i++)
		memset(st->work[i].dst, st->work[i].byte, st->work[i].n);
	for (int i = 0; i < st->nafter; i++)
		if (st->after[i].w->done < st->after[i].seq)
			__atomic_store_n(&st->after[i].w->done, st->after[i].seq, __ATOMIC_RELEASE);
	st->used = 0;
}

static void streams_run(CUstream s, int all)
{
	for (int i = 0; i < 8; i++)
		if (streams[i].used && (all || streams[i].s == s))
			stream_run(&streams[i]);
}

/* Finishes what stream s was deferred to do. */
STUB_API void stub_stream_run(CUstream s)
{
	streams_run(s, 0);
}

static void evname(char *buf, size_t n, int pid, unsigned serial_)
{
	snprintf(buf, n, "/omnicudastub-ev-%d-%u", pid, serial_);
}

static struct evword *evmap(int pid, unsigned serial_, int create)
{
	char name[64];
	void *p;
	int fd;

	evname(name, sizeof name, pid, serial_);
	fd = shm_open(name, create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
	if (fd < 0)
		return NULL;
	if (create && ftruncate(fd, sizeof(struct evword)) < 0) {
		close(fd);
		shm_unlink(name);
		return NULL;
	}
	p = mmap(NULL, sizeof(struct evword), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

static int ev_slot(CUevent e)
{
	int i = (int)(uintptr_t)e - 1;

	return i >= 0 && i < STUB_MAX && evs[i].w ? i : -1;
}

STUB_API CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
	const char *noev = getenv("STUB_CUDA_NOEVENTS");
	int ipc = (flags & CU_EVENT_INTERPROCESS) != 0;

	note("cuEventCreate");
	NEED_INIT();
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!e || (ipc && !(flags & CU_EVENT_DISABLE_TIMING)))
		return CUDA_ERROR_INVALID_VALUE;
	if (ipc && noev && *noev == '1')
		return CUDA_ERROR_NOT_SUPPORTED;
	for (int i = 0; i < STUB_MAX; i++)
		if (!evs[i].w) {
			unsigned s = ++ev_serial;
			struct evword *w = ipc ? evmap(getpid(), s, 1) : calloc(1, sizeof *w);

			if (!w)
				return CUDA_ERROR_OUT_OF_MEMORY;
			evs[i] = (struct event){ .w = w, .flags = flags, .owner_pid = getpid(),
						 .serial = s };
			*e = (CUevent)(uintptr_t)(i + 1);
			return CUDA_SUCCESS;
		}
	return CUDA_ERROR_OUT_OF_MEMORY;
}

STUB_API CUresult cuEventDestroy_v2(CUevent e)
{
	char name[64];
	int i = ev_slot(e);

	note("cuEventDestroy_v2");
	NEED_INIT();
	if (i < 0)
		return CUDA_ERROR_INVALID_HANDLE;
	if (evs[i].flags & CU_EVENT_INTERPROCESS) {
		munmap(evs[i].w, sizeof *evs[i].w);
		if (!evs[i].imported) {
			evname(name, sizeof name, evs[i].owner_pid, evs[i].serial);
			shm_unlink(name);
		}
	} else {
		free(evs[i].w);
	}
	memset(&evs[i], 0, sizeof evs[i]);
	return CUDA_SUCCESS;
}

STUB_API CUresult cuEventRecord(CUevent e, CUstream s)
{
	struct stream *st;
	unsigned long long seq;
	int i = ev_slot(e);

	note("cuEventRecord");
	NEED_INIT();
	if (i < 0)
		return CUDA_ERROR_INVALID_HANDLE;
	seq = __atomic_add_fetch(&evs[i].w->recorded, 1, __ATOMIC_ACQ_REL);
	st = stream_of(s, 0);
	if (!st) {
		__atomic_store_n(&evs[i].w->done, seq, __ATOMIC_RELEASE);
		return CUDA_SUCCESS;
	}
	if (st->nafter == 16)
		return CUDA_ERROR_OUT_OF_MEMORY;
	st->after[st->nafter].w = evs[i].w;
	st->after[st->nafter].seq = seq;
	st->nafter++;
	return CUDA_SUCCESS;
}

STUB_API CUresult cuEventSynchronize(CUevent e)
{
	unsigned long long want;
	int i = ev_slot(e);

	note("cuEventSynchronize");
	NEED_INIT();
	if (i < 0)
		return CUDA_ERROR_INVALID_HANDLE;
	want = __atomic_load_n(&evs[i].w->recorded, __ATOMIC_ACQUIRE);
	if (!evs[i].imported) {
		/* this process's own streams: they finish what they were doing */
		for (int k = 0; k < 8; k++)
			for (int j = 0; streams[k].used && j < streams[k].nafter; j++)
				if (streams[k].after[j].w == evs[i].w)
					stream_run(&streams[k]);
	}
	for (int ms = 0; __atomic_load_n(&evs[i].w->done, __ATOMIC_ACQUIRE) < want; ms++) {
		struct timespec t = { 0, 1000000 };

		if (ms == 10000)
			return CUDA_ERROR_LAUNCH_TIMEOUT;
		nanosleep(&t, NULL);
	}
	return CUDA_SUCCESS;
}

STUB_API CUresult cuIpcGetEventHandle(CUipcEventHandle *h, CUevent e)
{
	int i = ev_slot(e);

	note("cuIpcGetEventHandle");
	NEED_INIT();
	if (i < 0 || !h)
		return CUDA_ERROR_INVALID_HANDLE;
	if (!(evs[i].flags & CU_EVENT_INTERPROCESS) || !(evs[i].flags & CU_EVENT_DISABLE_TIMING) ||
	    evs[i].imported)
		return CUDA_ERROR_INVALID_VALUE;
	memset(h, 0, sizeof *h);
	memcpy(h->reserved, "STEV", 4);
	memcpy(h->reserved + 4, &evs[i].owner_pid, sizeof(int));
	memcpy(h->reserved + 8, &evs[i].serial, sizeof(unsigned));
	return CUDA_SUCCESS;
}

STUB_API CUresult cuIpcOpenEventHandle(CUevent *e, CUipcEventHandle h)
{
	int pid;
	unsigned s;

	note("cuIpcOpenEventHandle");
	NEED_INIT();
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!e || memcmp(h.reserved, "STEV", 4))
		return CUDA_ERROR_INVALID_VALUE;
	memcpy(&pid, h.reserved + 4, sizeof pid);
	memcpy(&s, h.reserved + 8, sizeof s);
	for (int i = 0; i < STUB_MAX; i++)
		if (!evs[i].w) {
			struct evword *w = evmap(pid, s, 0);

			if (!w)
				return CUDA_ERROR_INVALID_VALUE;
			evs[i] = (struct event){ .w = w, .flags = CU_EVENT_INTERPROCESS |
						 CU_EVENT_DISABLE_TIMING, .imported = 1,
						 .owner_pid = pid, .serial = s };
			*e = (CUevent)(uintptr_t)(i + 1);
			return CUDA_SUCCESS;
		}
	return CUDA_ERROR_OUT_OF_MEMORY;
}

/* Live events in this process (made or opened). */
STUB_API int stub_events(void)
{
	int n = 0;

	for (int i = 0; i < STUB_MAX; i++)
		n += evs[i].w != NULL;
	return n;
}
