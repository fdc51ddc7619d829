/*
 * fuzz_spec.c - libFuzzer harness for spec_parse: an accepted spec has a
 * canonical form that is a fixed point (parsing it again gives it back)
 * and is safe as a path component; a refused one comes with a reason.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
	return 0;
}
