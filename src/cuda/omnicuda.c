/*
 * omnicuda.c - the driver loaded at run time, device buffers exported as
 * base IPC handle + offset, and the per-process cache of opened handles.
 * See omnicuda.h for the contract.
 */
#include "omnicuda.h"

#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
} drv;

/* One opened allocation: users > 0, or idle with its place in idle order. */
struct ocu_map {
	struct ocu_map *next;
	unsigned char ipc[OCU_IPC_BYTES];
	CUdeviceptr base;
	int device;
	int users;
	unsigned long idle_since; /* tick it went idle */
};

static struct ocu_map *maps;
static unsigned long ticks;
static uint64_t opens;
static int retained_device = -1; /* primary context this library retained */

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

OCU_EXPORT void ocu_unload(void)
{
	while (maps) {
		struct ocu_map *m = maps;

		maps = m->next;
		if (drv.ready)
			drv.ipc_close(m->base);
		free(m);
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

OCU_EXPORT int ocu_export(uint64_t ptr, uint64_t nbytes, void *stream,
			  struct ocu_handle *out, char *err, size_t errlen)
{
	CUdeviceptr base = 0;
	size_t size = 0;
	CUipcMemHandle ipc;
	CUdevice dev = 0;
	CUresult r;
	int rc = ocu_load(err, errlen);

	if (rc)
		return rc;
	if (!ptr) {
		seterr(err, errlen, "cannot export a NULL device pointer");
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
	r = drv.stream_sync((CUstream)stream);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuStreamSynchronize", err, errlen);
	r = drv.ipc_get(&ipc, base);
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuIpcGetMemHandle", err, errlen);
	if (drv.ctx_get_device(&dev) != CUDA_SUCCESS)
		dev = 0;
	memset(out, 0, sizeof *out);
	out->kind = OCU_KIND_IPC;
	out->device = (int32_t)dev;
	out->alloc_size = size;
	out->offset = ptr - base;
	out->nbytes = nbytes;
	memcpy(out->ipc, ipc.reserved, OCU_IPC_BYTES);
	return 0;
}

static struct ocu_map *find(const struct ocu_handle *h)
{
	struct ocu_map *m;

	for (m = maps; m; m = m->next)
		if (!memcmp(m->ipc, h->ipc, OCU_IPC_BYTES))
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
			drv.ipc_close(victim->base);
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

OCU_EXPORT int ocu_import(const struct ocu_handle *h, uint64_t *ptr, char *err, size_t errlen)
{
	struct ocu_map *m;
	CUipcMemHandle ipc;
	CUdeviceptr base;
	CUresult r;
	int rc = ocu_load(err, errlen);

	if (rc)
		return rc;
	if (h->kind != OCU_KIND_IPC || h->device < 0 || h->offset > h->alloc_size ||
	    h->nbytes > h->alloc_size - h->offset) {
		seterr(err, errlen, "bad CUDA handle (kind %u, device %d, offset %llu + %llu bytes in %llu)",
		       h->kind, h->device, (unsigned long long)h->offset,
		       (unsigned long long)h->nbytes, (unsigned long long)h->alloc_size);
		return -EINVAL;
	}
	m = find(h);
	if (m) {
		m->users++;
		*ptr = m->base + h->offset;
		return 0;
	}
	rc = ensure_context(h->device, err, errlen);
	if (rc)
		return rc;
	memcpy(ipc.reserved, h->ipc, OCU_IPC_BYTES);
	r = drv.ipc_open(&base, ipc, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
	opens++;
	if (r != CUDA_SUCCESS)
		return drv_fail(r, "cuIpcOpenMemHandle", err, errlen);
	m = calloc(1, sizeof *m);
	if (!m) {
		drv.ipc_close(base);
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(m->ipc, h->ipc, OCU_IPC_BYTES);
	m->base = base;
	m->device = h->device;
	m->users = 1;
	m->next = maps;
	maps = m;
	*ptr = base + h->offset;
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

/* Wire form: magic, version, kind, device (u32 each), alloc_size, offset,
 * nbytes (u64 each), then the 64 handle bytes; little-endian. */
static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

OCU_EXPORT void ocu_handle_encode(const struct ocu_handle *h, unsigned char out[OCU_WIRE_SIZE])
{
	put32(out, OCU_HANDLE_MAGIC);
	put32(out + 4, OCU_HANDLE_VERSION);
	put32(out + 8, h->kind);
	put32(out + 12, (uint32_t)h->device);
	put64(out + 16, h->alloc_size);
	put64(out + 24, h->offset);
	put64(out + 32, h->nbytes);
	memcpy(out + 40, h->ipc, OCU_IPC_BYTES);
}

OCU_EXPORT int ocu_handle_decode(const void *buf, size_t len, struct ocu_handle *h, char *err,
				 size_t errlen)
{
	const unsigned char *p = buf;
	struct ocu_handle t;

	if (len != OCU_WIRE_SIZE) {
		seterr(err, errlen, "CUDA handle is %zu bytes, not %d", len, OCU_WIRE_SIZE);
		return -EINVAL;
	}
	if (get32(p) != OCU_HANDLE_MAGIC) {
		seterr(err, errlen, "not a CUDA handle (bad magic)");
		return -EINVAL;
	}
	if (get32(p + 4) != OCU_HANDLE_VERSION) {
		seterr(err, errlen, "CUDA handle version %u, this library reads %u", get32(p + 4),
		       OCU_HANDLE_VERSION);
		return -EINVAL;
	}
	t.kind = get32(p + 8);
	t.device = (int32_t)get32(p + 12);
	t.alloc_size = get64(p + 16);
	t.offset = get64(p + 24);
	t.nbytes = get64(p + 32);
	memcpy(t.ipc, p + 40, OCU_IPC_BYTES);
	if (t.kind != OCU_KIND_IPC) {
		seterr(err, errlen, "CUDA handle kind %u unknown", t.kind);
		return -EINVAL;
	}
	if (t.device < 0) {
		seterr(err, errlen, "CUDA handle device %d", t.device);
		return -EINVAL;
	}
	if (t.offset > t.alloc_size || t.nbytes > t.alloc_size - t.offset) {
		seterr(err, errlen, "CUDA handle offset %llu + %llu bytes overruns its allocation of %llu",
		       (unsigned long long)t.offset, (unsigned long long)t.nbytes,
		       (unsigned long long)t.alloc_size);
		return -EINVAL;
	}
	*h = t;
	return 0;
}

OCU_EXPORT void ocu_handle_hex(const struct ocu_handle *h, char out[2 * OCU_WIRE_SIZE + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char w[OCU_WIRE_SIZE];

	ocu_handle_encode(h, w);
	for (int i = 0; i < OCU_WIRE_SIZE; i++) {
		out[2 * i] = digits[w[i] >> 4];
		out[2 * i + 1] = digits[w[i] & 15];
	}
	out[2 * OCU_WIRE_SIZE] = 0;
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

OCU_EXPORT int ocu_handle_unhex(const char *hex, struct ocu_handle *h, char *err, size_t errlen)
{
	unsigned char w[OCU_WIRE_SIZE];
	size_t n = strlen(hex);

	if (n != 2 * OCU_WIRE_SIZE) {
		seterr(err, errlen, "CUDA handle hex is %zu characters, not %d", n, 2 * OCU_WIRE_SIZE);
		return -EINVAL;
	}
	for (int i = 0; i < OCU_WIRE_SIZE; i++) {
		int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			seterr(err, errlen, "CUDA handle hex has a non-hex character at %d", 2 * i);
			return -EINVAL;
		}
		w[i] = (unsigned char)(hi << 4 | lo);
	}
	return ocu_handle_decode(w, sizeof w, h, err, errlen);
}
