/*
 * arrays.c - array descriptors (see arrays.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arrays.h"

#define ARRAYS_MAX_DIM ((int64_t)1 << 62)

static const struct {
	const char *name, *type;
} dtype_names[] = {
	{ "bool", "|b1" }, { "int8", "|i1" }, { "uint8", "|u1" },
	{ "int16", "<i2" }, { "uint16", "<u2" }, { "int32", "<i4" }, { "uint32", "<u4" },
	{ "int64", "<i8" }, { "uint64", "<u8" },
	{ "float16", "<f2" }, { "float32", "<f4" }, { "float64", "<f8" },
	{ "complex64", "<c8" }, { "complex128", "<c16" },
};

static const char *access_names[] = { [ARRAY_INOUT] = "inout", [ARRAY_IN] = "in", [ARRAY_OUT] = "out" };

const char *arrays_access_name(int access)
{
	return access >= 0 && access <= ARRAY_OUT ? access_names[access] : "?";
}

int arrays_dtype(const char *text, char norm[8], size_t *itemsize, size_t *align)
{
	char order = '=', kind;
	const char *p = text;
	unsigned long size;
	char *end;

	for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
		if (strcmp(text, dtype_names[i].name) == 0) {
			p = dtype_names[i].type;
			break;
		}
	if (*p == '<' || *p == '>' || *p == '|' || *p == '=')
		order = *p++;
	kind = *p++;
	if (!strchr("biufc", kind) || kind == 0 || *p < '1' || *p > '9')
		return -EINVAL;
	size = strtoul(p, &end, 10);
	if (*end)
		return -EINVAL;
	switch (kind) {
	case 'b': if (size != 1) return -EINVAL; break;
	case 'i': case 'u': if (size != 1 && size != 2 && size != 4 && size != 8) return -EINVAL; break;
	case 'f': if (size != 2 && size != 4 && size != 8) return -EINVAL; break;
	case 'c': if (size != 8 && size != 16) return -EINVAL; break;
	}
	if (order == '=')
		order = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? '>' : '<';
	if (size == 1)
		order = '|';
	else if (order == '|')
		return -EINVAL;   /* numpy has no order-less multi-byte type */
	snprintf(norm, 8, "%c%c%lu", order, kind, size);
	*itemsize = size;
	*align = kind == 'c' ? size / 2 : size;
	return 0;
}

/* An integral JSON number in [lo, hi] into *out; 0 or -1. */
static int int_in(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
	double d;

	if (!cJSON_IsNumber(v))
		return -1;
	d = v->valuedouble;
	if (!(d >= (double)lo && d <= (double)hi) || floor(d) != d)
		return -1;
	*out = (int64_t)d;
	return 0;
}

int arrays_ident_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n >= max || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return 1;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -EINVAL; } while (0)

static int parse_one(const cJSON *o, int i, struct array_desc *d, char *err, size_t errlen)
{
	static const char *const keys[] = { "name", "segment", "dtype", "shape", "offset",
					    "strides", "access" };
	const cJSON *v, *k;
	__int128 lo, hi;
	int64_t x;

	memset(d, 0, sizeof *d);
	if (!cJSON_IsObject(o))
		FAIL("arrays[%d]: must be an object", i);
	cJSON_ArrayForEach(k, o) {
		size_t j;

		for (j = 0; j < sizeof keys / sizeof keys[0]; j++)
			if (strcmp(k->string, keys[j]) == 0)
				break;
		if (j == sizeof keys / sizeof keys[0])
			FAIL("arrays[%d]: unknown key \"%.32s\"", i, k->string);
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "name");
	if (!cJSON_IsString(v) || !arrays_ident_ok(v->valuestring, ARRAYS_NAME_MAX))
		FAIL("arrays[%d].name: must be a Python identifier of at most %d characters", i,
		     ARRAYS_NAME_MAX - 1);
	snprintf(d->name, sizeof d->name, "%s", v->valuestring);
	v = cJSON_GetObjectItemCaseSensitive(o, "segment");
	if (!cJSON_IsString(v) || !shm_name_ok(v->valuestring))
		FAIL("arrays[%d] (%s).segment: must be a segment name", i, d->name);
	snprintf(d->segment, sizeof d->segment, "%s", v->valuestring);
	v = cJSON_GetObjectItemCaseSensitive(o, "dtype");
	if (!cJSON_IsString(v) || arrays_dtype(v->valuestring, d->dtype, &d->itemsize, &d->align) < 0)
		FAIL("arrays[%d] (%s).dtype: unknown or unsupported dtype \"%.32s\" (a plain fixed-size "
		     "type such as \"<f4\" or \"int64\")", i, d->name,
		     cJSON_IsString(v) ? v->valuestring : "");
	v = cJSON_GetObjectItemCaseSensitive(o, "shape");
	if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > ARRAYS_MAX_DIMS)
		FAIL("arrays[%d] (%s).shape: must be an array of at most %d sizes", i, d->name,
		     ARRAYS_MAX_DIMS);
	d->ndim = cJSON_GetArraySize(v);
	for (int k2 = 0; k2 < d->ndim; k2++)
		if (int_in(cJSON_GetArrayItem(v, k2), 0, ARRAYS_MAX_DIM, &d->shape[k2]) < 0)
			FAIL("arrays[%d] (%s).shape[%d]: must be an integer from 0 to 2^62", i, d->name, k2);
	v = cJSON_GetObjectItemCaseSensitive(o, "offset");
	x = 0;
	if (v && !cJSON_IsNull(v) && int_in(v, 0, ARRAYS_MAX_DIM, &x) < 0)
		FAIL("arrays[%d] (%s).offset: must be an integer from 0 to 2^62", i, d->name);
	d->offset = (uint64_t)x;
	if (d->offset % d->align)
		FAIL("arrays[%d] (%s).offset: %llu is not a multiple of %zu, the alignment of %s", i,
		     d->name, (unsigned long long)d->offset, d->align, d->dtype);
	v = cJSON_GetObjectItemCaseSensitive(o, "strides");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != d->ndim)
			FAIL("arrays[%d] (%s).strides: must be an array as long as shape", i, d->name);
		for (int k2 = 0; k2 < d->ndim; k2++) {
			if (int_in(cJSON_GetArrayItem(v, k2), -ARRAYS_MAX_DIM, ARRAYS_MAX_DIM,
				   &d->strides[k2]) < 0)
				FAIL("arrays[%d] (%s).strides[%d]: must be an integer of at most 2^62 bytes",
				     i, d->name, k2);
			if (d->strides[k2] % (int64_t)d->align)
				FAIL("arrays[%d] (%s).strides[%d]: %lld is not a multiple of %zu, the "
				     "alignment of %s", i, d->name, k2, (long long)d->strides[k2],
				     d->align, d->dtype);
		}
	} else {
		__int128 s = (__int128)d->itemsize;

		for (int k2 = d->ndim - 1; k2 >= 0; k2--) {
			if (s > ARRAYS_MAX_DIM)
				FAIL("arrays[%d] (%s).shape: the array is larger than 2^62 bytes", i, d->name);
			d->strides[k2] = (int64_t)s;
			s *= d->shape[k2] ? d->shape[k2] : 1;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "access");
	d->access = ARRAY_INOUT;
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsString(v))
			FAIL("arrays[%d] (%s).access: must be \"in\", \"out\" or \"inout\"", i, d->name);
		if (strcmp(v->valuestring, "in") == 0)
			d->access = ARRAY_IN;
		else if (strcmp(v->valuestring, "out") == 0)
			d->access = ARRAY_OUT;
		else if (strcmp(v->valuestring, "inout") != 0)
			FAIL("arrays[%d] (%s).access: must be \"in\", \"out\" or \"inout\"", i, d->name);
	}
	/* The bytes the view can reach, in 128 bits so nothing wraps. */
	lo = hi = d->offset;
	for (int k2 = 0; k2 < d->ndim; k2++) {
		__int128 span = (__int128)d->strides[k2] * (d->shape[k2] ? d->shape[k2] - 1 : 0);

		if (d->shape[k2] == 0) {
			lo = hi = d->offset;
			goto empty;
		}
		if (span < 0)
			lo += span;
		else
			hi += span;
	}
	hi += d->itemsize;
empty:
	if (lo < 0)
		FAIL("arrays[%d] (%s).strides: the view reaches %lld bytes before the segment's start",
		     i, d->name, (long long)-lo);
	if (hi > ARRAYS_MAX_DIM)
		FAIL("arrays[%d] (%s).shape: the view reaches past 2^62 bytes", i, d->name);
	d->lo = (uint64_t)lo;
	d->hi = (uint64_t)hi;
	return 0;
}

int arrays_parse(const cJSON *arrays, struct array_desc *out, int max, char *err, size_t errlen)
{
	int n;

	if (!arrays || cJSON_IsNull(arrays))
		return 0;
	if (!cJSON_IsArray(arrays))
		FAIL("arrays: must be an array");
	n = cJSON_GetArraySize(arrays);
	if (n > max)
		FAIL("arrays: at most %d arrays per request", max);
	for (int i = 0; i < n; i++) {
		int r = parse_one(cJSON_GetArrayItem(arrays, i), i, &out[i], err, errlen);

		if (r < 0)
			return r;
		for (int j = 0; j < i; j++)
			if (strcmp(out[j].name, out[i].name) == 0)
				FAIL("arrays[%d].name: \"%s\" is bound twice", i, out[i].name);
	}
	return n;
}

int arrays_fit(const struct array_desc *d, uint64_t size, char *err, size_t errlen)
{
	if (d->hi > size || d->offset > size)
		FAIL("%s: the view reaches byte %llu of segment \"%s\", which has %llu (offset %llu)",
		     d->name, (unsigned long long)(d->hi > d->offset ? d->hi : d->offset), d->segment,
		     (unsigned long long)size, (unsigned long long)d->offset);
	return 0;
}
