/*
 * bench_transfer.c - the floor of a data transfer: memcpy of the same
 * bytes (1 MB, 64 MB, 1 GB), beside the rows of omnipkgd's own transfer,
 * which is recorded as not available until shared-memory transfer exists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

static cJSON *unavailable(const char *name, const char *why)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "status", "unavailable");
	cJSON_AddStringToObject(o, "why", why);
	printf("%-34s unavailable: %s\n", name, why);
	return o;
}

int bench_transfer(void)
{
	static const struct { size_t bytes; const char *label; size_t full, quick; } sizes[] = {
		{ 1u << 20, "1MB", 2000, 200 },
		{ 64u << 20, "64MB", 40, 5 },
		{ 1u << 30, "1GB", 5, 2 },
	};
	cJSON *rows = cJSON_CreateArray();
	char name[64];

	for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
		size_t len = sizes[k].bytes, n = bench_iters(sizes[k].full, sizes[k].quick);
		unsigned char *src = malloc(len), *dst = malloc(len);
		double *v = calloc(n, sizeof *v);
		struct bench_stats s;
		cJSON *row;

		if (!src || !dst || !v) {
			free(src);
			free(dst);
			free(v);
			cJSON_Delete(rows);
			fprintf(stderr, "transfer: out of memory for %s\n", sizes[k].label);
			return 1;
		}
		for (size_t i = 0; i < len; i++)
			src[i] = (unsigned char)(i * 131u + 7u);
		memcpy(dst, src, len);   /* faults the pages in; not counted */
		for (size_t i = 0; i < n; i++) {
			double t0;

			src[i % len] ^= 1;   /* a different buffer content each run */
			t0 = bench_now();
			memcpy(dst, src, len);
			v[i] = bench_now() - t0;
			if (memcmp(dst, src, len) != 0) {
				fprintf(stderr, "transfer: memcpy of %s came out different\n", sizes[k].label);
				abort();
			}
		}
		s = bench_stats(v, n);
		snprintf(name, sizeof name, "memcpy_%s", sizes[k].label);
		bench_line(name, &s, 0, NULL);
		row = bench_row(name, &s, 0, NULL);
		cJSON_AddNumberToObject(row, "bytes", (double)len);
		cJSON_AddItemToArray(rows, row);
		free(src);
		free(dst);
		free(v);
	}
	cJSON_AddItemToArray(rows, unavailable("shm_transfer", "not available yet: shared-memory transfer is not implemented in omnipkgd"));
	return bench_write("transfer", rows) < 0;
}
