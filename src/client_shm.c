/*
 * client_shm.c - libomnipkg's side of the data plane (omnipkg.h): shared
 * segments (shm_create, shm_list, shm_remove, mapping a segment's file)
 * and the array views and bound values of an exec request.
 *
 * Sizes, offsets, shapes and strides are written as exact integer digits:
 * cJSON prints a double with 15 significant digits.  A failed reply
 * becomes a -errno by its reason first (the daemon's own errno second),
 * so that callers can tell "no such segment" from "in use" without
 * reading text.
 */
#include "omnipkg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client_shm.h"

static const char *const shm__access_names[] = { "inout", "in", "out" };

/* Adds an exact integer to obj under key, or to the array obj when key is
 * NULL.  0 or -ENOMEM. */
static int shm__add_int(cJSON *obj, const char *key, int64_t v)
{
	char text[24];
	cJSON *raw;

	snprintf(text, sizeof text, "%" PRId64, v);
	if (!(raw = cJSON_CreateRaw(text)))
		return -ENOMEM;
	if (key ? cJSON_AddItemToObject(obj, key, raw) : cJSON_AddItemToArray(obj, raw))
		return 0;
	cJSON_Delete(raw);
	return -ENOMEM;
}

static int shm__add_ints(cJSON *obj, const char *key, const int64_t *v, int n)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, key);

	if (!arr)
		return -ENOMEM;
	for (int i = 0; i < n; i++)
		if (shm__add_int(arr, NULL, v[i]) < 0)
			return -ENOMEM;
	return 0;
}

/* One view as proto.h describes it; -EINVAL for what cannot be sent. */
static int shm__array(cJSON *list, const omni_array *a)
{
	cJSON *o;

	if (!a->name || !a->segment || !a->dtype || a->ndim < 0 ||
	    a->ndim > OMNI_ARRAY_MAX_DIM || (a->ndim > 0 && !a->shape) || a->access < 0 ||
	    a->access > OMNI_ACCESS_OUT || a->offset > INT64_MAX)
		return -EINVAL;
	if (!(o = cJSON_CreateObject()))
		return -ENOMEM;
	if (!cJSON_AddItemToArray(list, o)) {
		cJSON_Delete(o);
		return -ENOMEM;
	}
	if (!cJSON_AddStringToObject(o, "name", a->name) ||
	    !cJSON_AddStringToObject(o, "segment", a->segment) ||
	    !cJSON_AddStringToObject(o, "dtype", a->dtype) ||
	    shm__add_ints(o, "shape", a->shape, a->ndim) < 0 ||
	    shm__add_int(o, "offset", (int64_t)a->offset) < 0 ||
	    (a->strides && shm__add_ints(o, "strides", a->strides, a->ndim) < 0) ||
	    !cJSON_AddStringToObject(o, "access", shm__access_names[a->access]))
		return -ENOMEM;
	return 0;
}

int client_shm_exec_args(cJSON *msg, const omni_exec_opts *o)
{
	cJSON *list, *bind;
	int rc;

	if (o->narrays) {
		if (!o->arrays)
			return -EINVAL;
		if (!(list = cJSON_AddArrayToObject(msg, "arrays")))
			return -ENOMEM;
		for (size_t i = 0; i < o->narrays; i++)
			if ((rc = shm__array(list, &o->arrays[i])) < 0)
				return rc;
	}
	if (o->bind_json) {
		if (!(bind = cJSON_Parse(o->bind_json)))
			return -EINVAL;
		if (!cJSON_IsObject(bind)) {
			cJSON_Delete(bind);
			return -EINVAL;
		}
		if (!cJSON_AddItemToObject(msg, "bind", bind)) {
			cJSON_Delete(bind);
			return -ENOMEM;
		}
	}
	return 0;
}

/* The -errno a failed reply stands for. */
static int shm__reply_err(const omni_reply *r)
{
	double e;

	switch (omni_reason_code(omni_reply_str(r, "reason"))) {
	case OMNI_REASON_QUOTA:
		return -EDQUOT;
	case OMNI_REASON_LEASED:
		return -EBUSY;
	case OMNI_REASON_NOSEGMENT:
		return -ENOENT;
	case OMNI_REASON_NOMEM:
		return -ENOMEM;
	}
	e = omni_reply_num(r, "errno");
	if (e >= 1 && e < 4096)
		return -(int)e;
	return omni_reason_code(omni_reply_str(r, "reason")) == OMNI_REASON_BADARG ? -EINVAL
										   : -EPROTO;
}

/* Sends op with msg (owned: deleted here); a failed reply is turned into
 * its -errno and freed. */
static int shm__call(omni_client *c, cJSON *msg, const char *op, omni_reply **out)
{
	int rc;

	*out = NULL;
	if (!msg)
		return -ENOMEM;
	rc = client_call_msg(c, msg, op, out);
	cJSON_Delete(msg);
	if (rc == 0 && !omni_reply_ok(*out)) {
		rc = shm__reply_err(*out);
		omni_reply_free(*out);
		*out = NULL;
	}
	return rc;
}

static int shm__num(const cJSON *o, const char *key, uint64_t *v)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(n) || !(n->valuedouble >= 0) || n->valuedouble > 9007199254740992.0)
		return -EBADMSG;
	*v = (uint64_t)n->valuedouble;
	return 0;
}

static int shm__str(const cJSON *o, const char *key, char *buf, size_t n)
{
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsString(s) || !s->valuestring || strlen(s->valuestring) >= n)
		return -EBADMSG;
	memcpy(buf, s->valuestring, strlen(s->valuestring) + 1);
	return 0;
}

/* A segment object of a reply ({name, id, gen, size, path}) into *out. */
static int shm__segment(const cJSON *o, omni_segment *out)
{
	omni_segment s;

	if (!cJSON_IsObject(o) || shm__str(o, "name", s.name, sizeof s.name) < 0 ||
	    shm__str(o, "path", s.path, sizeof s.path) < 0 || shm__num(o, "id", &s.id) < 0 ||
	    shm__num(o, "gen", &s.gen) < 0 || shm__num(o, "size", &s.size) < 0)
		return -EBADMSG;
	*out = s;
	return 0;
}

int omni_shm_create(omni_client *c, const char *name, uint64_t size, int flags,
		    omni_segment *out)
{
	omni_reply *r = NULL;
	omni_segment s;
	cJSON *msg;
	int rc;

	if (!c || (flags & ~OMNI_SHM_PERSIST) || size > INT64_MAX)
		return -EINVAL;
	if (!(msg = cJSON_CreateObject()))
		return -ENOMEM;
	if (shm__add_int(msg, "size", (int64_t)size) < 0 ||
	    (name && !cJSON_AddStringToObject(msg, "name", name)) ||
	    ((flags & OMNI_SHM_PERSIST) && !cJSON_AddTrueToObject(msg, "persist"))) {
		cJSON_Delete(msg);
		return -ENOMEM;
	}
	if ((rc = shm__call(c, msg, "shm_create", &r)) < 0)
		return rc;
	rc = shm__segment(cJSON_GetObjectItemCaseSensitive(client_reply_obj(r), "segment"), &s);
	if (rc == 0 && out)
		*out = s;
	omni_reply_free(r);
	return rc;
}

int omni_shm_list(omni_client *c, omni_reply **out)
{
	if (!c || !out)
		return -EINVAL;
	return shm__call(c, cJSON_CreateObject(), "shm_list", out);
}

int omni_shm_open(omni_client *c, const char *name, omni_segment *out)
{
	const cJSON *list, *e;
	omni_reply *r = NULL;
	int rc;

	if (!c || !name || !out)
		return -EINVAL;
	if ((rc = omni_shm_list(c, &r)) < 0)
		return rc;
	list = cJSON_GetObjectItemCaseSensitive(client_reply_obj(r), "segments");
	rc = cJSON_IsArray(list) ? -ENOENT : -EBADMSG;
	cJSON_ArrayForEach(e, list) {
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");

		if (cJSON_IsString(n) && n->valuestring && strcmp(n->valuestring, name) == 0) {
			rc = shm__segment(e, out);
			break;
		}
	}
	omni_reply_free(r);
	return rc;
}

int omni_shm_remove(omni_client *c, const char *name)
{
	omni_reply *r = NULL;
	cJSON *msg;
	int rc;

	if (!c || !name)
		return -EINVAL;
	if (!(msg = cJSON_CreateObject()))
		return -ENOMEM;
	if (!cJSON_AddStringToObject(msg, "name", name)) {
		cJSON_Delete(msg);
		return -ENOMEM;
	}
	rc = shm__call(c, msg, "shm_remove", &r);
	omni_reply_free(r);
	return rc;
}

int omni_shm_map(const omni_segment *s, int writable, void **addr, size_t *len)
{
	struct stat st;
	void *p;
	int fd, rc = 0;

	if (!s || !addr || !len)
		return -EINVAL;
	*addr = NULL;
	*len = 0;
	/* the path comes from the daemon: never follow a link planted there */
	fd = open(s->path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EPERM : -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		rc = -EPERM;
	} else if ((uint64_t)st.st_size > SIZE_MAX) {
		rc = -EFBIG;
	} else if (st.st_size > 0) {
		p = mmap(NULL, (size_t)st.st_size, PROT_READ | (writable ? PROT_WRITE : 0),
			 MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			rc = -errno;
		} else {
			*addr = p;
			*len = (size_t)st.st_size;
		}
	}
	close(fd);
	return rc;
}

int omni_shm_unmap(void *addr, size_t len)
{
	if (!addr)
		return 0;
	return munmap(addr, len) < 0 ? -errno : 0;
}
