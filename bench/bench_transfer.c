/*
 * bench_transfer.c - an array in and out of a worker through shared
 * segments (1 MB, 64 MB, 1 GB), beside its floor, memcpy of the same bytes.
 *
 *   shm_transfer_<size>       the data already in a segment: one exec binds
 *                             arr_in and arr_out and the worker runs omnipkg
 *                             3.4.1's benchmark code, arr_out[:] = arr_in
 *   shm_transfer_view_<size>  the same call touching one element of each
 *                             (arr_out[-1] = arr_in[-1]): what moving the
 *                             array costs, apart from the worker's own copy
 *   shm_copyin_<size>         an ordinary buffer copied into the segment
 *                             first, then shm_transfer_view's call
 *
 * Every call's answer is checked in the client's own mapping of arr_out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "omnipkg.h"

#define SPEC "numpy==1.26.4"   /* the spec omnipkg 3.4.1's rows use */

static cJSON *unavailable(const char *name, const char *why)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "status", "unavailable");
	cJSON_AddStringToObject(o, "why", why);
	printf("%-34s unavailable: %s\n", name, why);
	return o;
}

/* One exec with arr_in and arr_out bound; 0 or -1 (reported). */
static int shm_call(omni_client *c, const char *code, int64_t count)
{
	omni_array a[2] = {
		{ .name = "arr_in", .segment = "bench_in", .dtype = "<f8", .shape = &count, .ndim = 1,
		  .access = OMNI_ACCESS_IN },
		{ .name = "arr_out", .segment = "bench_out", .dtype = "<f8", .shape = &count, .ndim = 1,
		  .access = OMNI_ACCESS_OUT },
	};
	omni_exec_opts o = { .spec = SPEC, .python = "3.11", .code = code, .arrays = a, .narrays = 2 };
	omni_reply *r;
	int rc = omni_exec(c, &o, &r);

	if (rc < 0 || !omni_reply_ok(r)) {
		fprintf(stderr, "transfer: %s: %s\n", rc < 0 ? omni_strerror(rc) : "job failed",
			rc < 0 ? "" : omni_reply_str(r, "error"));
		if (rc == 0)
			omni_reply_free(r);
		return -1;
	}
	omni_reply_free(r);
	return 0;
}

/* The rows of one size: (0) full copy in the worker, (1) one element, (2)
 * copied in by the client first.  NULL rows when it could not run. */
static int shm_rows(omni_client *c, size_t len, size_t n, double *ref, const char *label,
		    cJSON *rows)
{
	static const char *const what[] = { "shm_transfer", "shm_transfer_view", "shm_copyin" };
	int64_t count = (int64_t)(len / 8);
	omni_segment in, out;
	double *src = NULL, *inp = NULL, *outp = NULL, *v = calloc(n, sizeof *v);
	size_t inlen = 0, outlen = 0;
	int rc = -1;

	if (!v || omni_shm_create(c, "bench_in", len, 0, &in) < 0 ||
	    omni_shm_create(c, "bench_out", len, 0, &out) < 0 ||
	    omni_shm_map(&in, 1, (void **)&inp, &inlen) < 0 ||
	    omni_shm_map(&out, 1, (void **)&outp, &outlen) < 0 || !(src = malloc(len)))
		goto out;
	for (int64_t i = 0; i < count; i++)
		src[i] = inp[i] = (double)i;
	for (int k = 0; k < 3; k++) {
		const char *code = k == 0 ? "arr_out[:] = arr_in" : "arr_out[-1] = arr_in[-1]";
		struct bench_stats s;
		char name[64];
		cJSON *row;

		if (shm_call(c, code, count) < 0)   /* warm: the worker maps both */
			goto out;
		for (size_t i = 0; i < n; i++) {
			double t0, mark = (double)(i + 1) * 0.5;

			src[count - 1] = mark;
			if (k < 2)
				inp[count - 1] = mark;
			t0 = bench_now();
			if (k == 2)
				memcpy(inp, src, len);
			if (shm_call(c, code, count) < 0)
				goto out;
			v[i] = bench_now() - t0;
			if (outp[count - 1] != mark || (k == 0 && outp[count / 2] != (double)(count / 2))) {
				fprintf(stderr, "transfer: %s %s: arr_out came back wrong\n", what[k], label);
				abort();
			}
		}
		s = bench_stats(v, n);
		snprintf(name, sizeof name, "%s_%s", what[k], label);
		bench_line(name, &s, ref[k], k == 0 ? "memcpy" : k == 1 ? "hot_exec" : "memcpy");
		row = bench_row(name, &s, ref[k], k == 0 ? "memcpy" : k == 1 ? "hot_exec" : "memcpy");
		cJSON_AddNumberToObject(row, "bytes", (double)len);
		cJSON_AddItemToArray(rows, row);
	}
	rc = 0;
out:
	omni_shm_unmap(inp, inlen);
	omni_shm_unmap(outp, outlen);
	omni_shm_remove(c, "bench_in");
	omni_shm_remove(c, "bench_out");
	free(src);
	free(v);
	return rc;
}

static const struct size_case {
	size_t bytes;
	const char *label;
	size_t full, quick;
} sizes[] = {
	{ 1u << 20, "1MB", 2000, 200 },
	{ 64u << 20, "64MB", 40, 5 },
	{ 1u << 30, "1GB", 5, 2 },
};
#define NSIZES (sizeof sizes / sizeof *sizes)

/* Our rows, on a private daemon; memcpy_p50 per size is their floor. */
static int shm_all(cJSON *rows, const double *memcpy_p50)
{
	size_t n = bench_iters(2000, 200);
	double *v = calloc(n, sizeof *v);
	omni_exec_opts o = { .spec = SPEC, .python = "3.11", .code = "pass" };
	omni_client *c = NULL;
	struct bench_stats hot;
	omni_reply *r;
	int rc = -1;

	if (!v || bench_daemon_start("{\"shm_quota\": 3221225472}") < 0 ||
	    omni_connect(&c, NULL, 0) < 0)
		goto out;
	/* The reference of the view rows: a hot exec of the same spec. */
	for (size_t i = 0; i < n + 50; i++) {
		double t0 = bench_now();

		if (omni_exec(c, &o, &r) < 0)
			goto out;
		if (!omni_reply_ok(r)) {
			fprintf(stderr, "transfer: %s\n", omni_reply_str(r, "error"));
			omni_reply_free(r);
			goto out;
		}
		omni_reply_free(r);
		if (i >= 50)
			v[i - 50] = bench_now() - t0;
	}
	hot = bench_stats(v, n);
	bench_line("hot_exec_numpy", &hot, 0, NULL);
	cJSON_AddItemToArray(rows, bench_row("hot_exec_numpy", &hot, 0, NULL));
	for (size_t k = 0; k < NSIZES; k++) {
		double ref[3] = { memcpy_p50[k], hot.p50, memcpy_p50[k] };

		if (shm_rows(c, sizes[k].bytes, bench_iters(sizes[k].full, sizes[k].quick), ref,
			     sizes[k].label, rows) < 0)
			goto out;
	}
	rc = 0;
out:
	omni_close(c);
	bench_daemon_stop();
	free(v);
	return rc;
}

int bench_transfer(void)
{
	cJSON *rows = cJSON_CreateArray();
	double memcpy_p50[NSIZES];
	char name[64];

	for (size_t k = 0; k < NSIZES; k++) {
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
		memcpy_p50[k] = s.p50;
		snprintf(name, sizeof name, "memcpy_%s", sizes[k].label);
		bench_line(name, &s, 0, NULL);
		row = bench_row(name, &s, 0, NULL);
		cJSON_AddNumberToObject(row, "bytes", (double)len);
		cJSON_AddItemToArray(rows, row);
		free(src);
		free(dst);
		free(v);
	}
	if (shm_all(rows, memcpy_p50) < 0)
		cJSON_AddItemToArray(rows, unavailable("shm_transfer", "the daemon or the numpy bubble "
						       "(" SPEC ", 3.11) could not be used"));
	return bench_write("transfer", rows) < 0;
}
