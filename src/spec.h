/*
 * spec.h - package specs: "name==version[,name==version...]" or "base".
 *
 * Canonical form: names normalised as PEP 503 says (lower case, each run of
 * '-', '_', '.' becomes one '-'), entries sorted by name, joined by ','.
 * Only exact pins ("==") are specs; every byte is validated, so a canonical
 * spec is safe to use as a path component.
 */
#ifndef OMNI_SPEC_H
#define OMNI_SPEC_H

#include <stddef.h>

#define SPEC_MAX_LEN 1024     /* input and canonical text, NUL included */
#define SPEC_MAX_ITEMS 16
#define SPEC_NAME_MAX 100
#define SPEC_VERSION_MAX 64

struct spec_item {
	char name[SPEC_NAME_MAX + 1];       /* normalised */
	char version[SPEC_VERSION_MAX + 1];
};

struct spec {
	int n;                              /* 0 means "base" */
	struct spec_item items[SPEC_MAX_ITEMS];
	char canon[SPEC_MAX_LEN];
};

/*
 * Parses and canonicalises `in` (len bytes; embedded NUL is an error).
 * Returns 0, or -EINVAL / -ENAMETOOLONG / -E2BIG with a readable reason
 * in err (which may be NULL).
 */
int spec_parse(const char *in, size_t len, struct spec *out, char *err, size_t errlen);

/* PEP 503 normalisation of one name into out (n bytes); -EINVAL if invalid. */
int spec_normalize_name(const char *name, size_t len, char *out, size_t n);

#endif
