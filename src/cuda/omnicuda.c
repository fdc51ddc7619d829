/*
 * omnicuda.c - the driver loaded at run time, device buffers exported as a
 * named allocation + offset (a legacy IPC handle, or a VMM allocation's
 * POSIX descriptor), the events that order an importer after the
 * producer, and the per-process caches of what was opened.  See
 * omnicuda.h for the contract; the wire form is ocu_handle.c's.
 */
#include "omnicuda.h"

#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define OCU_EXPORT __attribute__((visibility("default")))

/* The driver entry points used, resolved by their ABI names. */
static struct {
	void *lib;
	int ready;
	CUresult (*init)(unsigned int);
	CUresult (*device_count)(int *);
	CUresult (*device_get)(CUdevice *, int);
	CUresult (*error_string)(CUresult, const char **);
	CUresult (*ctx_get_current)(CUcontext *);
	CUresult (*ctx_set_current)(CUcontext);
	CUresult (*ctx_get_device)(CUdevice *);
	CUresult (*primary_retain)(CUcontext *, CUdevice);
	CUresult (*primary_release)(CUdevice);
	CUresult (*address_range)(CUdeviceptr *, size_t *, CUdeviceptr);
	CUresult (*stream_sync)(CUstream);
	CUresult (*ctx_sync)(void);
	CUresult (*ipc_get)(CUipcMemHandle *, CUdeviceptr);
	CUresult (*ipc_open)(CUdeviceptr *, CUipcMemHandle, unsigned int);
	CUresult (*ipc_close)(CUdeviceptr);
	/* VMM, for descriptors: optional (vmm says whether all are there) */
	int vmm;
	CUresult (*retain)(CUmemGenericAllocationHandle *, void *);
	CUresult (*props)(CUmemAllocationProp *, CUmemGenericAllocationHandle);
	CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
			      unsigned long long);
	CUresult (*import_fd)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType);
	CUresult (*mem_release)(CUmemGenericAllocationHandle);
	CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*addr_free)(CUdeviceptr, size_t);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
			unsigned long long);
	CUresult (*unmap)(CUdeviceptr, size_t);
	CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	CUresult (*ptr_attr)(void *, CUpointer_attribute, CUdeviceptr);
	/* IPC events: optional too (without them, the stream is synchronised) */
	int events;
	CUresult (*ev_create)(CUevent *, unsigned int);
	CUresult (*ev_record)(CUevent, CUstream);
	CUresult (*ev_destroy)(CUevent);
	CUresult (*ev_sync)(CUevent);
	CUresult (*ev_ipc_get)(CUipcEventHandle *, CUevent);
	CUresult (*ev_ipc_open)(CUevent *, CUipcEventHandle);
} drv;

/* One opened allocation: users > 0, or idle with its place in idle order. */
struct ocu_map {
	struct ocu_map *next;
	uint32_t kind;
	unsigned char key[OCU_IPC_BYTES];   /* the handle's ipc bytes */
	CUdeviceptr base;
	size_t size;                        /* FD: of the reservation and mapping */
	CUmemGenericAllocationHandle mem;   /* FD: the imported allocation */
	int device;
	int users;
	unsigned long idle_since; /* tick it went idle */
};

/*
 * An event: one this process made for a stream of a context (producer),
 * or one it opened from another process's handle (importer).  A
 * producer's events live as long as the process: an importer may hold a
 * copy, and using that after the original is destroyed is undefined.
 */
struct ocu_event {
	struct ocu_event *next;
	int imported;
	CUcontext ctx;                      /* producer: the key */
	CUstream stream;
	unsigned char handle[OCU_IPC_BYTES];   /* importer: the key */
	CUevent ev;
	unsigned long used;
};

static struct ocu_map *maps;
static struct ocu_event *events;
static unsigned long ticks;
static uint64_t opens;
static int retained_device = -1; /* primary context this library retained */
static struct {
	int pid;              /* who drew it: a forked child draws its own */
	uint64_t nonce;
	uint64_t serial;      /* for allocations without a buffer id */
} me;

static void seterr(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (!err || !n)
		return;
	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
}

/* -EIO with "what: driver's words (code)". */
static int drv_fail(CUresult r, const char *what, char *err, size_t n)
{
	const char *s = NULL;

	if (drv.error_string)
		drv.error_string(r, &s);
	seterr(err, n, "%s: %s (CUDA error %d)", what, s ? s : "unknown error", (int)r);
	if (r == CUDA_ERROR_NO_DEVICE)
		return -ENODEV;
	if (r == CUDA_ERROR_INVALID_VALUE || r == CUDA_ERROR_INVALID_HANDLE)
		return -EINVAL;
	return -EIO;
}

static void *sym(const char *name, int *missing)
{
	void *p = dlsym(drv.lib, name);

	if (!p)
		(*missing)++;
	return p;
}

/* Entry points a driver may lack: the features they serve are then off. */
static void load_optional(void)
{
	int vmm = 0, ev = 0;

	*(void **)&drv.retain = sym("cuMemRetainAllocationHandle", &vmm);
	*(void **)&drv.props = sym("cuMemGetAllocationPropertiesFromHandle", &vmm);
	*(void **)&drv.export_fd = sym("cuMemExportToShareableHandle", &vmm);
	*(void **)&drv.import_fd = sym("cuMemImportFromShareableHandle", &vmm);
	*(void **)&drv.mem_release = sym("cuMemRelease", &vmm);
	*(void **)&drv.reserve = sym("cuMemAddressReserve", &vmm);
	*(void **)&drv.addr_free = sym("cuMemAddressFree", &vmm);
	*(void **)&drv.map = sym("cuMemMap", &vmm);
	*(void **)&drv.unmap = sym("cuMemUnmap", &vmm);
	*(void **)&drv.set_access = sym("cuMemSetAccess", &vmm);
	*(void **)&drv.ptr_attr = sym("cuPointerGetAttribute", &vmm);
	drv.vmm = !vmm;
	*(void **)&drv.ev_create = sym("cuEventCreate", &ev);
	*(void **)&drv.ev_record = sym("cuEventRecord", &ev);
	*(void **)&drv.ev_destroy = sym("cuEventDestroy_v2", &ev);
	*(void **)&drv.ev_sync = sym("cuEventSynchronize", &ev);
	*(void **)&drv.ev_ipc_get = sym("cuIpcGetEventHandle", &ev);
	*(void **)&drv.ev_ipc_open = sym("cuIpcOpenEventHandle", &ev);
	drv.events = !ev;
}

OCU_EXPORT int ocu_load(char *err, size_t errlen)
{
	const char *path = getenv("OMNIPKG_CUDA_DRIVER");
	int missing = 0, count = 0;
	CUresult r;

	if (drv.ready)
		return 0;
	if (!path || !*path)
		path = "libcuda.so.1";
	if (!drv.lib)
		drv.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!drv.lib) {
		seterr(err, errlen, "no CUDA driver (%s not found)", path);
		return -ENOENT;
	}
	*(void **)&drv.init = sym("cuInit", &missing);
	*(void **)&drv.device_count = sym("cuDeviceGetCount", &missing);
	*(void **)&drv.device_get = sym("cuDeviceGet", &missing);
	*(void **)&drv.error_string = sym("cuGetErrorString", &missing);
	*(void **)&drv.ctx_get_current = sym("cuCtxGetCurrent", &missing);
	*(void **)&drv.ctx_set_current = sym("cuCtxSetCurrent", &missing);
	*(void **)&drv.ctx_get_device = sym("cuCtxGetDevice", &missing);
	*(void **)&drv.primary_retain = sym("cuDevicePrimaryCtxRetain", &missing);
	*(void **)&drv.primary_release = sym("cuDevicePrimaryCtxRelease_v2", &missing);
	*(void **)&drv.address_range = sym("cuMemGetAddressRange_v2", &missing);
	*(void **)&drv.stream_sync = sym("cuStreamSynchronize", &missing);
	*(void **)&drv.ctx_sync = sym("cuCtxSynchronize", &missing);
	*(void **)&drv.ipc_get = sym("cuIpcGetMemHandle", &missing);
	*(void **)&drv.ipc_open = sym("cuIpcOpenMemHandle_v2", &missing);
	*(void **)&drv.ipc_close = sym("cuIpcCloseMemHandle", &missing);
	if (missing) {
		seterr(err, errlen, "CUDA driver %s lacks %d needed entry points (too old?)",
		       path, missing);
		dlclose(drv.lib);
		memset(&drv, 0, sizeof drv);
		return -ENOENT;
	}
	load_optional();
	r = drv.init(0);
	if (r == CUDA_SUCCESS)
		r = drv.device_count(&count);
	if (r == CUDA_ERROR_NO_DEVICE || (r == CUDA_SUCCESS && count == 0)) {
		seterr(err, errlen, "no CUDA device");
		return -ENODEV;
	}
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuInit", err, errlen);
	drv.ready = 1;
	return 0;
}

static void unmap_fd(CUdeviceptr base, size_t size, CUmemGenericAllocationHandle mem, int mapped)
{
	if (mapped)
		drv.unmap(base, size);
	if (base)
		drv.addr_free(base, size);
	drv.mem_release(mem);
}

static void close_map(struct ocu_map *m)
{
	if (!drv.ready)
		return;
	if (m->kind == OCU_KIND_FD)
		unmap_fd(m->base, m->size, m->mem, 1);
	else
		drv.ipc_close(m->base);
}

OCU_EXPORT void ocu_unload(void)
{
	while (maps) {
		struct ocu_map *m = maps;

		maps = m->next;
		close_map(m);
		free(m);
	}
	while (events) {
		struct ocu_event *e = events;

		events = e->next;
		if (drv.ready)
			drv.ev_destroy(e->ev);
		free(e);
	}
	if (drv.ready && retained_device >= 0) {
		CUdevice d;

		if (drv.device_get(&d, retained_device) == CUDA_SUCCESS)
			drv.primary_release(d);
	}
	retained_device = -1;
	opens = 0;
	if (drv.lib)
		dlclose(drv.lib);
	memset(&drv, 0, sizeof drv);
}

/* ---- the producer ------------------------------------------------------ */

static int count_events(int imported)
{
	int n = 0;

	for (struct ocu_event *e = events; e; e = e->next)
		n += e->imported == imported;
	return n;
}

/*
 * Records this context's event for stream after what is queued on it and
 * writes its IPC handle to out.  1 done; 0 no event to be had here (the
 * caller synchronises the stream instead); < 0 a driver error.
 */
static int record_event(CUstream stream, unsigned char out[OCU_IPC_BYTES], char *err,
			size_t errlen)
{
	CUcontext ctx = NULL;
	struct ocu_event *e;
	CUipcEventHandle h;
	CUresult r;

	if (!drv.events || drv.ctx_get_current(&ctx) != CUDA_SUCCESS || !ctx)
		return 0;
	for (e = events; e; e = e->next)
		if (!e->imported && e->ctx == ctx && e->stream == stream)
			break;
	if (!e) {
		CUevent ev;

		if (count_events(0) >= OCU_EVENTS_MAX)
			return 0;
		r = drv.ev_create(&ev, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING);
		if (r != CUDA_SUCCESS)
			return 0;   /* no IPC events here (MPS, a driver without them) */
		r = drv.ev_ipc_get(&h, ev);
		if (r != CUDA_SUCCESS || !(e = calloc(1, sizeof *e))) {
			drv.ev_destroy(ev);
			return 0;
		}
		e->ctx = ctx;
		e->stream = stream;
		e->ev = ev;
		memcpy(e->handle, h.reserved, OCU_IPC_BYTES);
		e->next = events;
		events = e;
	}
	r = drv.ev_record(e->ev, stream);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuEventRecord", err, errlen);
	memcpy(out, e->handle, OCU_IPC_BYTES);
	return 1;
}

/* This process's name for its allocations: pid and a number drawn once. */
static void name_self(void)
{
	if (me.pid == (int)getpid())
		return;
	me.pid = (int)getpid();
	if (getrandom(&me.nonce, sizeof me.nonce, GRND_NONBLOCK) != (ssize_t)sizeof me.nonce)
		me.nonce = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)clock() << 20;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/*
 * A descriptor of the VMM allocation mapped at base into *fd, and its name
 * into key.  The allocation's buffer id names it; without one (a driver
 * that gives none for VMM memory) every export is named anew, which is
 * correct but opens the allocation again in the importer.
 */
static int export_fd(CUmemGenericAllocationHandle mem, CUdeviceptr base, int *fd,
		     unsigned char key[OCU_IPC_BYTES], char *err, size_t errlen)
{
	unsigned long long id = 0;
	int h = -1;
	CUresult r;

	r = drv.export_fd(&h, mem, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuMemExportToShareableHandle", err, errlen);
	/* ours from here on, and never inherited by a child */
	if (fcntl(h, F_SETFD, FD_CLOEXEC) < 0) {
		seterr(err, errlen, "cuMemExportToShareableHandle gave no descriptor");
		return -EIO;
	}
	if (drv.ptr_attr(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID, base) != CUDA_SUCCESS || !id)
		id = UINT64_C(1) << 63 | ++me.serial;
	name_self();
	memset(key, 0, OCU_IPC_BYTES);
	memcpy(key, "OCUF", 4);
	put_le(key + 4, (uint32_t)me.pid, 4);
	put_le(key + 8, me.nonce, 8);
	put_le(key + 16, id, 8);
	*fd = h;
	return 0;
}

/* Whether ptr lies in a VMM allocation that allows a POSIX descriptor:
 * 1 and *mem retained (the caller releases it), or 0. */
static int fd_allowed(CUdeviceptr ptr, CUmemGenericAllocationHandle *mem)
{
	CUmemAllocationProp prop;

	if (!drv.vmm || drv.retain(mem, (void *)(uintptr_t)ptr) != CUDA_SUCCESS)
		return 0;    /* not VMM memory */
	memset(&prop, 0, sizeof prop);
	if (drv.props(&prop, *mem) == CUDA_SUCCESS &&
	    (prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return 1;
	drv.mem_release(*mem);
	return 0;
}

OCU_EXPORT int ocu_export_with(uint64_t ptr, uint64_t nbytes, void *stream, unsigned flags,
			       struct ocu_handle *out, char *err, size_t errlen)
{
	CUdeviceptr base = 0;
	CUmemGenericAllocationHandle mem = 0;
	size_t size = 0;
	CUipcMemHandle ipc;
	CUdevice dev = 0;
	CUresult r;
	int rc = ocu_load(err, errlen), fd_ok = 0, fd = -1;

	if (rc)
		return rc;
	memset(out, 0, sizeof *out);
	out->fd = -1;
	if (!ptr) {
		seterr(err, errlen, "cannot export a NULL device pointer");
		return -EINVAL;
	}
	if ((flags & OCU_EXPORT_IPC) && (flags & OCU_EXPORT_FD)) {
		seterr(err, errlen, "an export is an IPC handle or a descriptor, not both");
		return -EINVAL;
	}
	r = drv.address_range(&base, &size, (CUdeviceptr)ptr);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuMemGetAddressRange (not a device pointer?)", err, errlen);
	if (ptr - base > size || nbytes > size - (ptr - base)) {
		seterr(err, errlen, "buffer of %llu bytes at offset %llu overruns its allocation of %zu bytes",
		       (unsigned long long)nbytes, (unsigned long long)(ptr - base), size);
		return -EINVAL;
	}
	if (!(flags & OCU_EXPORT_IPC))
		fd_ok = fd_allowed(base, &mem);
	if ((flags & OCU_EXPORT_FD) && !fd_ok) {
		seterr(err, errlen, "not a VMM allocation that allows a POSIX descriptor (cuMemCreate "
		       "with CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR in requestedHandleTypes)");
		return -EINVAL;
	}
	rc = 0;
	if (!(flags & OCU_EXPORT_SYNC))
		rc = record_event((CUstream)stream, out->event, err, errlen);
	if (rc == 0) {
		r = drv.stream_sync((CUstream)stream);
		if (r != CUDA_SUCCESS)
			rc = drv_fail(r, "cuStreamSynchronize", err, errlen);
	} else if (rc > 0) {
		out->flags |= OCU_HAS_EVENT;
		rc = 0;
	}
	if (rc == 0 && fd_ok) {
		rc = export_fd(mem, base, &fd, out->ipc, err, errlen);
	} else if (rc == 0) {
		r = drv.ipc_get(&ipc, base);
		if (r != CUDA_SUCCESS)
			rc = drv_fail(r, "cuIpcGetMemHandle", err, errlen);
		else
			memcpy(out->ipc, ipc.reserved, OCU_IPC_BYTES);
	}
	if (fd_ok)
		drv.mem_release(mem);
	if (rc) {
		if (fd >= 0)
			close(fd);
		memset(out, 0, sizeof *out);
		out->fd = -1;
		return rc;
	}
	if (drv.ctx_get_device(&dev) != CUDA_SUCCESS)
		dev = 0;
	out->kind = fd_ok ? OCU_KIND_FD : OCU_KIND_IPC;
	out->fd = fd;
	out->device = (int32_t)dev;
	out->alloc_size = size;
	out->offset = ptr - base;
	out->nbytes = nbytes;
	return 0;
}

OCU_EXPORT int ocu_export(uint64_t ptr, uint64_t nbytes, void *stream, struct ocu_handle *out,
			  char *err, size_t errlen)
{
	return ocu_export_with(ptr, nbytes, stream, 0, out, err, errlen);
}

/* ---- the importer ------------------------------------------------------ */

static struct ocu_map *find(const struct ocu_handle *h)
{
	struct ocu_map *m;

	for (m = maps; m; m = m->next)
		if (m->kind == h->kind && !memcmp(m->key, h->ipc, OCU_IPC_BYTES))
			return m;
	return NULL;
}

/* Make the device's primary context current when the thread has none. */
static int ensure_context(int device, char *err, size_t errlen)
{
	CUcontext ctx = NULL;
	CUdevice d;
	CUresult r;

	if (drv.ctx_get_current(&ctx) == CUDA_SUCCESS && ctx)
		return 0;
	r = drv.device_get(&d, device);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuDeviceGet", err, errlen);
	r = drv.primary_retain(&ctx, d);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuDevicePrimaryCtxRetain", err, errlen);
	r = drv.ctx_set_current(ctx);
	if (r != CUDA_SUCCESS) {
		drv.primary_release(d);
		return drv_fail(r, "cuCtxSetCurrent", err, errlen);
	}
	if (retained_device < 0)
		retained_device = device;
	else
		drv.primary_release(d); /* hold one reference only */
	return 0;
}

static int closemap(struct ocu_map *victim)
{
	struct ocu_map **pp;

	for (pp = &maps; *pp; pp = &(*pp)->next)
		if (*pp == victim) {
			*pp = victim->next;
			close_map(victim);
			free(victim);
			return 1;
		}
	return 0;
}

/* Close the longest-idle mappings beyond OCU_IDLE_MAX. */
static void evict(void)
{
	for (;;) {
		struct ocu_map *m, *oldest = NULL;
		int idle = 0;

		for (m = maps; m; m = m->next)
			if (!m->users) {
				idle++;
				if (!oldest || m->idle_since < oldest->idle_since)
					oldest = m;
			}
		if (idle <= OCU_IDLE_MAX)
			return;
		closemap(oldest);
	}
}

/* Waits on the host for the producer's event (opened once, cached; the
 * least recently used of OCU_EVENTS_MAX opened ones is closed for a new
 * one).  The job's stream is not known here, so a host wait covers any. */
static int wait_event(const unsigned char handle[OCU_IPC_BYTES], char *err, size_t errlen)
{
	struct ocu_event *e, **pp, *lru = NULL;
	CUipcEventHandle h;
	CUresult r;

	if (!drv.events) {
		seterr(err, errlen, "the CUDA driver has no IPC events");
		return -EIO;
	}
	for (e = events; e; e = e->next)
		if (e->imported && !memcmp(e->handle, handle, OCU_IPC_BYTES))
			break;
	if (!e) {
		if (count_events(1) >= OCU_EVENTS_MAX) {
			for (e = events; e; e = e->next)
				if (e->imported && (!lru || e->used < lru->used))
					lru = e;
			for (pp = &events; *pp != lru; pp = &(*pp)->next)
				;
			*pp = lru->next;
			drv.ev_destroy(lru->ev);
			free(lru);
		}
		if (!(e = calloc(1, sizeof *e))) {
			seterr(err, errlen, "out of memory");
			return -ENOMEM;
		}
		memcpy(h.reserved, handle, OCU_IPC_BYTES);
		r = drv.ev_ipc_open(&e->ev, h);
		if (r != CUDA_SUCCESS) {
			free(e);
			return drv_fail(r, "cuIpcOpenEventHandle", err, errlen);
		}
		e->imported = 1;
		memcpy(e->handle, handle, OCU_IPC_BYTES);
		e->next = events;
		events = e;
	}
	e->used = ++ticks;
	r = drv.ev_sync(e->ev);
	return r == CUDA_SUCCESS ? 0 : drv_fail(r, "cuEventSynchronize", err, errlen);
}

/* Maps the allocation behind descriptor h->fd: import, reserve, map, grant. */
static int open_fd(const struct ocu_handle *h, struct ocu_map *m, char *err, size_t errlen)
{
	CUmemAccessDesc access;
	CUresult r;

	if (!drv.vmm) {
		seterr(err, errlen, "the CUDA driver has no VMM entry points for a descriptor");
		return -EIO;
	}
	if (h->fd < 0) {
		seterr(err, errlen, "a descriptor handle needs its descriptor (none came with it)");
		return -EINVAL;
	}
	r = drv.import_fd(&m->mem, (void *)(uintptr_t)h->fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuMemImportFromShareableHandle", err, errlen);
	m->size = (size_t)h->alloc_size;
	r = drv.reserve(&m->base, m->size, 0, 0, 0);
	if (r != CUDA_SUCCESS) {
		m->base = 0;
		unmap_fd(0, 0, m->mem, 0);
		return drv_fail(r, "cuMemAddressReserve", err, errlen);
	}
	r = drv.map(m->base, m->size, 0, m->mem, 0);
	if (r != CUDA_SUCCESS) {
		unmap_fd(m->base, m->size, m->mem, 0);
		return drv_fail(r, "cuMemMap", err, errlen);
	}
	memset(&access, 0, sizeof access);
	access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	access.location.id = h->device;
	access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	r = drv.set_access(m->base, m->size, &access, 1);
	if (r != CUDA_SUCCESS) {
		unmap_fd(m->base, m->size, m->mem, 1);
		return drv_fail(r, "cuMemSetAccess", err, errlen);
	}
	return 0;
}

OCU_EXPORT int ocu_import(const struct ocu_handle *h, uint64_t *ptr, char *err, size_t errlen)
{
	struct ocu_map *m;
	CUipcMemHandle ipc;
	CUresult r;
	int rc = ocu_load(err, errlen);

	if (rc)
		return rc;
	if ((h->kind != OCU_KIND_IPC && h->kind != OCU_KIND_FD) || h->device < 0 ||
	    h->offset > h->alloc_size || h->nbytes > h->alloc_size - h->offset) {
		seterr(err, errlen, "bad CUDA handle (kind %u, device %d, offset %llu + %llu bytes in %llu)",
		       h->kind, h->device, (unsigned long long)h->offset,
		       (unsigned long long)h->nbytes, (unsigned long long)h->alloc_size);
		return -EINVAL;
	}
	m = find(h);
	if (!m || (h->flags & OCU_HAS_EVENT)) {
		rc = ensure_context(h->device, err, errlen);
		if (rc)
			return rc;
	}
	/* before the buffer is used, even if it is mapped already */
	if ((h->flags & OCU_HAS_EVENT) && (rc = wait_event(h->event, err, errlen)))
		return rc;
	if (m) {
		m->users++;
		*ptr = m->base + h->offset;
		return 0;
	}
	m = calloc(1, sizeof *m);
	if (!m) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (h->kind == OCU_KIND_FD) {
		rc = open_fd(h, m, err, errlen);
	} else {
		memcpy(ipc.reserved, h->ipc, OCU_IPC_BYTES);
		r = drv.ipc_open(&m->base, ipc, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
		if (r != CUDA_SUCCESS)
			rc = drv_fail(r, "cuIpcOpenMemHandle", err, errlen);
	}
	opens++;
	if (rc) {
		free(m);
		return rc;
	}
	m->kind = h->kind;
	memcpy(m->key, h->ipc, OCU_IPC_BYTES);
	m->device = h->device;
	m->users = 1;
	m->next = maps;
	maps = m;
	*ptr = m->base + h->offset;
	return 0;
}

OCU_EXPORT int ocu_sync(char *err, size_t errlen)
{
	CUcontext ctx = NULL;
	CUresult r;
	int rc = ocu_load(err, errlen);

	if (rc)
		return rc;
	if (drv.ctx_get_current(&ctx) != CUDA_SUCCESS || !ctx)
		return 0; /* no context: nothing was queued */
	r = drv.ctx_sync();
	return r == CUDA_SUCCESS ? 0 : drv_fail(r, "cuCtxSynchronize", err, errlen);
}

OCU_EXPORT int ocu_release(const struct ocu_handle *h)
{
	struct ocu_map *m = find(h);

	if (!m || m->users <= 0)
		return -ENOENT;
	if (--m->users == 0) {
		m->idle_since = ++ticks;
		evict();
	}
	return 0;
}

OCU_EXPORT int ocu_trim(void)
{
	struct ocu_map *m, *next;
	int n = 0;

	for (m = maps; m; m = next) {
		next = m->next;
		if (!m->users)
			n += closemap(m);
	}
	return n;
}

OCU_EXPORT uint64_t ocu_opens(void)
{
	return opens;
}

OCU_EXPORT int ocu_refs(const struct ocu_handle *h)
{
	struct ocu_map *m = find(h);

	return m ? m->users : -1;
}
