/*
 * bench_cold.c - what starting a worker costs: a fresh interpreter (no
 * zygote), a fork from a warm zygote, and, for reference, the plain
 * `python -c "import numpy"` of the same interpreter with the same bubble.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bench.h"
#include "omnipkg.h"

#define SPEC "numpy==1.26.4"
#define PY "3.11"

/* Wall time of `python -c code` with PYTHONPATH=pythonpath, or -1. */
static double time_python(const char *python, const char *pythonpath, const char *code)
{
	double t0 = bench_now();
	int st;
	pid_t pid = fork();

	if (pid == 0) {
		if (pythonpath)
			setenv("PYTHONPATH", pythonpath, 1);
		execl(python, python, "-s", "-c", code, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return -1;
	return bench_now() - t0;
}

/* n once-jobs; v gets the client wall time, s the worker's start time. */
static int once_jobs(const char *spec, const char *code, size_t n, double *v, double *s)
{
	omni_exec_opts o = { .spec = spec, .python = PY, .code = code, .once = 1 };
	omni_client *c;
	omni_reply *r;
	int rc = omni_connect(&c, NULL, 0);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		double t0 = bench_now();

		rc = omni_exec(c, &o, &r);
		if (rc == 0 && !omni_reply_ok(r)) {
			fprintf(stderr, "cold_start: %s\n", omni_reply_str(r, "error"));
			rc = -1;
		}
		if (rc == 0) {
			v[i] = bench_now() - t0;
			s[i] = omni_reply_num(r, "worker_start_ms") / 1000;
			omni_reply_free(r);
		}
	}
	omni_close(c);
	return rc;
}

static void add(cJSON *rows, const char *name, double *v, size_t n, double ref, const char *refname)
{
	struct bench_stats s = bench_stats(v, n);

	bench_line(name, &s, ref, refname);
	cJSON_AddItemToArray(rows, bench_row(name, &s, ref, refname));
}

int bench_cold_start(void)
{
	size_t n = bench_iters(15, 4);
	double v[64], s[64], ref_import, ref_pass;
	char python[PATH_MAX], bubble[PATH_MAX];
	cJSON *rows = cJSON_CreateArray();
	struct bench_stats st;
	int rc;

	if (bench_python_path(PY, python, sizeof python) < 0 ||
	    bench_bubble_dir(SPEC, PY, bubble, sizeof bubble) < 0) {
		fprintf(stderr, "cold_start: needs python %s and the %s bubble (scripts/bubbles.sh)\n", PY, SPEC);
		cJSON_Delete(rows);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = time_python(python, bubble, "import numpy");
	st = bench_stats(v, n);
	ref_import = st.p50;
	add(rows, "python_c_import_numpy", v, n, 0, NULL);
	for (size_t i = 0; i < n; i++)
		v[i] = time_python(python, NULL, "pass");
	st = bench_stats(v, n);
	ref_pass = st.p50;
	add(rows, "python_c_pass", v, n, 0, NULL);

	/* Fresh interpreter per worker. */
	rc = bench_daemon_start("{\"zygote\": false}");
	if (rc == 0)
		rc = once_jobs(SPEC, "import numpy", n, v, s);
	bench_daemon_stop();
	if (rc < 0)
		goto fail;
	add(rows, "cold_exec_numpy_job", v, n, ref_import, "python_c_import_numpy");
	add(rows, "cold_exec_worker_start", s, n, ref_pass, "python_c_pass");

	/* Forked from a warm zygote (the first job warms it and is not counted). */
	rc = bench_daemon_start("{\"zygote\": true}");
	if (rc == 0)
		rc = once_jobs("base", "pass", 1, v, s);
	if (rc == 0)
		rc = once_jobs("base", "pass", n, v, s);
	if (rc == 0) {
		add(rows, "zygote_worker_start", s, n, 0, NULL);
		add(rows, "zygote_pass_job", v, n, ref_pass, "python_c_pass");
		rc = once_jobs(SPEC, "import numpy", n, v, s);
	}
	bench_daemon_stop();
	if (rc < 0)
		goto fail;
	add(rows, "zygote_numpy_job", v, n, ref_import, "python_c_import_numpy");
	return bench_write("cold_start", rows) < 0;
fail:
	fprintf(stderr, "cold_start: a daemon run failed\n");
	cJSON_Delete(rows);
	return 1;
}
