/*
 * client_cuda.c - omnipkg.h's device buffers: a thin door to libomnipkg-cuda,
 * dlopen()ed at first use so that libomnipkg (and the daemon, which links it)
 * never carries CUDA; device arrays turned into exec bind values and the
 * descriptors that go with them; and an exec request's "fds" (proto.h).
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client_shm.h"
#include "omnipkg.h"

/* libomnipkg-cuda's ocu_handle, as omnicuda.h lays it out. */
struct ocu_handle {
	uint32_t kind;
	int32_t device;
	uint64_t alloc_size, offset, nbytes;
	uint32_t flags;
	int32_t fd;
	unsigned char ipc[64];
	unsigned char event[64];
};

static struct {
	void *lib;
	int (*export_)(uint64_t, uint64_t, void *, unsigned, struct ocu_handle *, char *, size_t);
	int (*import_)(const struct ocu_handle *, uint64_t *, char *, size_t);
	int (*release)(const struct ocu_handle *);
	void (*hex)(const struct ocu_handle *, char *);
	int (*unhex)(const char *, struct ocu_handle *, char *, size_t);
} ocu;

static void seterr(char *err, size_t n, const char *msg)
{
	if (err && n)
		snprintf(err, n, "%s", msg);
}

static int load(char *err, size_t errlen)
{
	const char *path = getenv("OMNIPKG_CUDA_LIB");

	if (ocu.lib)
		return 0;
	if (!path || !*path)
		path = "libomnipkg-cuda.so.0";
	ocu.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!ocu.lib) {
		if (err && errlen)
			snprintf(err, errlen, "no CUDA support library (%s not found)", path);
		return -ENOENT;
	}
	*(void **)&ocu.export_ = dlsym(ocu.lib, "ocu_export_with");
	*(void **)&ocu.import_ = dlsym(ocu.lib, "ocu_import");
	*(void **)&ocu.release = dlsym(ocu.lib, "ocu_release");
	*(void **)&ocu.hex = dlsym(ocu.lib, "ocu_handle_hex");
	*(void **)&ocu.unhex = dlsym(ocu.lib, "ocu_handle_unhex");
	if (!ocu.export_ || !ocu.import_ || !ocu.release || !ocu.hex || !ocu.unhex) {
		dlclose(ocu.lib);
		memset(&ocu, 0, sizeof ocu);
		seterr(err, errlen, "libomnipkg-cuda lacks its entry points");
		return -ENOENT;
	}
	return 0;
}

OMNI_API int omni_cuda_export_fd(uint64_t devptr, uint64_t nbytes, void *stream, int flags,
				 char *hex, size_t hexlen, int *fd, char *err, size_t errlen)
{
	struct ocu_handle h;
	int rc = load(err, errlen);

	if (fd)
		*fd = -1;
	if (rc)
		return rc;
	if (!hex || hexlen < OMNI_CUDA_HANDLE_HEX + 1) {
		seterr(err, errlen, "handle buffer shorter than OMNI_CUDA_HANDLE_HEX + 1");
		return -EINVAL;
	}
	if (flags & ~(OMNI_CUDA_IPC | OMNI_CUDA_FD | OMNI_CUDA_SYNC)) {
		seterr(err, errlen, "unknown OMNI_CUDA_* flags");
		return -EINVAL;
	}
	if (!fd)
		flags |= OMNI_CUDA_IPC;   /* nowhere to put a descriptor */
	rc = ocu.export_(devptr, nbytes, stream, (unsigned)flags, &h, err, errlen);
	if (rc)
		return rc;
	ocu.hex(&h, hex);
	if (fd)
		*fd = h.fd;
	return 0;
}

OMNI_API int omni_cuda_export(uint64_t devptr, uint64_t nbytes, void *stream, char *hex,
			      size_t hexlen, char *err, size_t errlen)
{
	return omni_cuda_export_fd(devptr, nbytes, stream, OMNI_CUDA_IPC, hex, hexlen, NULL, err,
				   errlen);
}

OMNI_API int omni_cuda_import_fd(const char *hex, int fd, uint64_t *devptr, char *err,
				 size_t errlen)
{
	struct ocu_handle h;
	int rc = load(err, errlen);

	if (rc)
		return rc;
	rc = ocu.unhex(hex, &h, err, errlen);
	h.fd = fd;
	return rc ? rc : ocu.import_(&h, devptr, err, errlen);
}

OMNI_API int omni_cuda_import(const char *hex, uint64_t *devptr, char *err, size_t errlen)
{
	return omni_cuda_import_fd(hex, -1, devptr, err, errlen);
}

OMNI_API int omni_cuda_release(const char *hex)
{
	struct ocu_handle h;

	if (load(NULL, 0) || ocu.unhex(hex, &h, NULL, 0))
		return -EINVAL;
	return ocu.release(&h);
}

static int valid_name(const char *s)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9')))
			return 0;
	return 1;
}

/* "<f4"-style typestr: its item size, or 0. */
static unsigned itemsize(const char *t)
{
	char *end;
	unsigned long n;

	if (!t || !strchr("<>|=", t[0]) || !t[0] || !t[1] || !strchr("biufc", t[1]) ||
	    t[2] < '0' || t[2] > '9')
		return 0;
	n = strtoul(t + 2, &end, 10);
	return *end || n == 0 || n > 64 ? 0 : (unsigned)n;
}

/* Bytes from the first element to past the last, or -1. */
static int64_t span(const omni_device_array *a, unsigned item)
{
	int64_t n = item;

	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] == 0)
			return 0;
	for (int i = 0; i < a->ndim; i++) {
		int64_t d = a->shape[i], s = a->strides ? a->strides[i] : 0;

		if (d < 0 || s < 0)
			return -1;
		if (a->strides) {
			if (s && d - 1 > (INT64_MAX - n) / s)
				return -1;
			n += (d - 1) * s;
		} else {
			if (d > INT64_MAX / n)
				return -1;
			n *= d;
		}
	}
	return n;
}

/* Adds a's bind value to bind; *fd: its descriptor, or -1. */
static int describe(const omni_device_array *a, int flags, cJSON *bind, int *fd, char *err,
		    size_t errlen)
{
	char hex[OMNI_CUDA_HANDLE_HEX + 1], msg[256];
	const char *fw = a->framework ? a->framework : "auto";
	unsigned item = itemsize(a->dtype);
	cJSON *d, *v, *arr;
	int64_t n = 0;
	int rc;

	msg[0] = 0;
	if (!valid_name(a->name))
		snprintf(msg, sizeof msg, "device array name %s is not an identifier",
			 a->name ? a->name : "(null)");
	else if (!item)
		snprintf(msg, sizeof msg, "device array %s: dtype %s is not a typestr like \"<f4\"",
			 a->name, a->dtype ? a->dtype : "(null)");
	else if (a->ndim < 0 || a->ndim > OMNI_ARRAY_MAX_DIM || (a->ndim && !a->shape))
		snprintf(msg, sizeof msg, "device array %s: bad ndim %d", a->name, a->ndim);
	else if (strcmp(fw, "auto") && strcmp(fw, "cupy") && strcmp(fw, "torch") &&
		 strcmp(fw, "jax") && strcmp(fw, "tensorflow") && strcmp(fw, "raw"))
		snprintf(msg, sizeof msg, "device array %s: framework %s unknown", a->name, fw);
	else if (a->access < OMNI_ACCESS_INOUT || a->access > OMNI_ACCESS_OUT)
		snprintf(msg, sizeof msg, "device array %s: access %d unknown", a->name, a->access);
	else if ((n = span(a, item)) < 0)
		snprintf(msg, sizeof msg, "device array %s: bad shape or strides", a->name);
	if (msg[0]) {
		seterr(err, errlen, msg);
		return -EINVAL;
	}
	rc = omni_cuda_export_fd(a->devptr, n ? (uint64_t)n : 1, a->stream, flags, hex, sizeof hex,
				 fd, err, errlen);
	if (rc)
		return rc;
	d = cJSON_CreateObject();
	v = cJSON_AddObjectToObject(d, "__cuda_ipc__");
	cJSON_AddStringToObject(v, "handle", hex);
	arr = cJSON_AddArrayToObject(v, "shape");
	for (int i = 0; i < a->ndim; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)a->shape[i]));
	cJSON_AddStringToObject(v, "dtype", a->dtype);
	if (a->strides) {
		arr = cJSON_AddArrayToObject(v, "strides");
		for (int i = 0; i < a->ndim; i++)
			cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)a->strides[i]));
	} else {
		cJSON_AddNullToObject(v, "strides");
	}
	if (getenv("OMNIPKG_CUDA_LIB"))
		cJSON_AddStringToObject(v, "lib", getenv("OMNIPKG_CUDA_LIB"));
	cJSON_AddStringToObject(v, "framework", fw);
	cJSON_AddBoolToObject(v, "readonly", a->access == OMNI_ACCESS_IN);
	cJSON_AddItemToObject(bind, a->name, d);
	return 0;
}

OMNI_API int omni_cuda_bind(const omni_device_array *a, size_t n, int flags,
			    omni_cuda_binding *out, char *err, size_t errlen)
{
	cJSON *bind = cJSON_CreateObject();
	int rc = 0;

	memset(out, 0, sizeof *out);
	if (!bind)
		return -ENOMEM;
	for (size_t i = 0; i < n && !rc; i++) {
		int fd = -1;

		rc = describe(&a[i], flags, bind, &fd, err, errlen);
		if (fd < 0)
			continue;
		if (out->nfds == OMNI_EXEC_MAX_FDS) {
			close(fd);
			seterr(err, errlen, "more device arrays need a descriptor than a request carries");
			rc = -E2BIG;
			break;
		}
		out->fds[out->nfds] = fd;
		out->fd_for[out->nfds++] = a[i].name;
	}
	if (!rc && !(out->bind_json = cJSON_PrintUnformatted(bind)))
		rc = -ENOMEM;
	cJSON_Delete(bind);
	if (rc)
		omni_cuda_binding_free(out);
	return rc;
}

OMNI_API void omni_cuda_binding_free(omni_cuda_binding *b)
{
	if (!b)
		return;
	free(b->bind_json);
	while (b->nfds > 0)
		close(b->fds[--b->nfds]);
	memset(b, 0, sizeof *b);
}

OMNI_API int omni_cuda_bind_json(const omni_device_array *a, size_t n, char **json_out,
				 char *err, size_t errlen)
{
	omni_cuda_binding b;
	int rc = omni_cuda_bind(a, n, OMNI_CUDA_IPC, &b, err, errlen);

	*json_out = rc ? NULL : b.bind_json;
	return rc;
}

int client_fds_exec_args(cJSON *msg, const omni_exec_opts *o)
{
	cJSON *a;

	if (o->nfds > OMNI_EXEC_MAX_FDS || !o->fds || !o->fd_for)
		return -EINVAL;
	if (!(a = cJSON_AddArrayToObject(msg, "fds")))
		return -ENOMEM;
	for (size_t i = 0; i < o->nfds; i++) {
		struct stat st;
		cJSON *d;

		if (!o->fd_for[i] || fstat(o->fds[i], &st) < 0)
			return -EBADF;
		if (!(d = cJSON_CreateObject()))
			return -ENOMEM;
		cJSON_AddItemToArray(a, d);
		if (!cJSON_AddStringToObject(d, "for", o->fd_for[i]) ||
		    !cJSON_AddStringToObject(d, "kind", "cuda") ||
		    !cJSON_AddNumberToObject(d, "dev", (double)st.st_dev) ||
		    !cJSON_AddNumberToObject(d, "ino", (double)st.st_ino))
			return -ENOMEM;
	}
	return 0;
}
