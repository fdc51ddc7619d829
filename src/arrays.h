/*
 * arrays.h - array descriptors of an exec request: parsed, normalised and
 * checked before any code runs.
 *
 *   {"name": "arr_in", "segment": "frame", "dtype": "float32",
 *    "shape": [1024, 1024]}        -> dtype "<f4", itemsize 4, C strides
 *                                     [4096, 4], offset 0, access inout
 *
 * arrays_parse checks what the request alone can tell (names, dtype,
 * shape, strides, alignment, no overflow); arrays_fit checks a view against
 * the size of its segment once the registry has found it.  Errors are
 * -EINVAL with the array and the field named in err.
 */
#ifndef OMNI_ARRAYS_H
#define OMNI_ARRAYS_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "shm.h"

#define ARRAYS_MAX 64          /* arrays one request may bind */
#define ARRAYS_MAX_DIMS 32
#define ARRAYS_NAME_MAX 64

enum array_access { ARRAY_INOUT, ARRAY_IN, ARRAY_OUT };

struct array_desc {
	char name[ARRAYS_NAME_MAX];
	char segment[SHM_NAME_MAX + 1];
	char dtype[8];             /* normalised: "<f4", "|u1", ">c16" */
	size_t itemsize, align;
	int ndim;
	int64_t shape[ARRAYS_MAX_DIMS];
	int64_t strides[ARRAYS_MAX_DIMS];
	uint64_t offset;
	int access;                /* enum array_access */
	uint64_t lo, hi;           /* bytes the view can reach: [lo, hi) of the segment */
};

/*
 * Parses a numpy type string ("<f4", "=i8", "|b1") or name ("float32",
 * "bool") of a plain fixed-size type into a normalised type string (8
 * bytes) and its item size and alignment.  0 or -EINVAL.
 */
int arrays_dtype(const char *text, char norm[8], size_t *itemsize, size_t *align);

/* Parses the "arrays" member (NULL or null: none) into out (up to max).
 * The count, or -EINVAL with a reason. */
int arrays_parse(const cJSON *arrays, struct array_desc *out, int max, char *err, size_t errlen);

/* Does d lie inside a segment of size bytes?  0 or -EINVAL with a reason. */
int arrays_fit(const struct array_desc *d, uint64_t size, char *err, size_t errlen);

/* Is s an ASCII Python identifier shorter than max bytes?  1 or 0. */
int arrays_ident_ok(const char *s, size_t max);

/* The access name ("in", "out", "inout"). */
const char *arrays_access_name(int access);

#endif
