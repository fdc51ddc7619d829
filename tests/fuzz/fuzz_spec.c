/*
 * fuzz_spec.c - libFuzzer harness for spec_parse: an accepted spec has a
 * canonical form that is a fixed point (parsing it again gives it back)
 * and is safe as a path component; a refused one comes with a reason.
 * The versions of an accepted spec's constraints are then ordered and
 * matched against each other: the order must be antisymmetric and
 * reflexive, and nothing may crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sign(int c)
{
	return (c > 0) - (c < 0);
}

static void check_versions(const struct spec *s)
{
	for (int i = 0; i < s->n; i++) {
		const struct spec_item *it = &s->items[i];

		if (it->version[0] && it->ncons)
			abort();        /* a pin has no other constraints */
		if (it->version[0] && !spec_item_allows(it, it->version))
			abort();
		for (int a = 0; a < it->ncons; a++) {
			const char *va = it->cons[a].version;

			if (spec_version_cmp(va, va) != 0)
				abort();
			(void)spec_item_allows(it, va);
			for (int b = 0; b < it->ncons; b++)
				if (sign(spec_version_cmp(va, it->cons[b].version)) !=
				    -sign(spec_version_cmp(it->cons[b].version, va)))
					abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct spec s, again;
	char err[256];
	size_t n;

	err[0] = '\0';
	if (spec_parse((const char *)data, size, &s, err, sizeof(err)) < 0) {
		if (!err[0])
			abort();
		return 0;
	}
	n = strnlen(s.canon, sizeof(s.canon));
	if (n == 0 || n == sizeof(s.canon) || s.n < 0 || s.n > SPEC_MAX_ITEMS ||
	    strchr(s.canon, '/') || strcmp(s.canon, "..") == 0 || strcmp(s.canon, ".") == 0)
		abort();
	if ((s.n == 0) != (strcmp(s.canon, "base") == 0))
		abort();
	if (spec_parse(s.canon, n, &again, err, sizeof(err)) != 0 ||
	    strcmp(again.canon, s.canon) != 0 || again.n != s.n)
		abort();
	for (int i = 1; i < s.n; i++)
		if (strcmp(s.items[i - 1].name, s.items[i].name) >= 0)
			abort();        /* sorted, no name twice */
	check_versions(&s);
	return 0;
}
