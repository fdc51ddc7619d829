/* bench_hot.c - hot exec round trip of `pass` through the socket with the
 * C client, next to the machine's Unix-socket ping-pong in the same run:
 * unpinned (as the hot path runs), both ends on one core and on two.  The
 * ratio's reference is the cross-core figure, measured in batches between
 * the hot loop's: on a VM it is the cost of the wake-ups a hot exec
 * makes, and unlike the unpinned one it does not depend on where the
 * scheduler happened to put the two ends.  A second
 * row runs the same loop with all three processes on one CPU: what the
 * work costs once no wake-up crosses a core. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bench.h"
#include "omnipkg.h"

static const struct {
	const char *name;
	enum bench_place place;
} rtts[] = {
	{ "unix_socket_rtt", BENCH_CROSS_CORE },          /* the reference */
	{ "unix_socket_rtt_unpinned", BENCH_UNPINNED },
	{ "unix_socket_rtt_same_core", BENCH_SAME_CORE },
};
#define NRTT (sizeof rtts / sizeof rtts[0])
#define ROUNDS 10   /* hot and cross-core batches, alternated */

/* One hot call: its seconds, and in *worker the pid that ran it; -1 (and
 * why, said) when it failed. */
static double hot_call(omni_client *c, const omni_exec_opts *o, size_t i, pid_t *worker)
{
	double t0 = bench_now(), t;
	omni_reply *r;
	int rc = omni_exec(c, o, &r);

	if (rc < 0 || !omni_reply_ok(r)) {
		fprintf(stderr, "hot_exec: call %zu failed: %s %s\n", i, omni_strerror(rc),
			rc < 0 ? "" : omni_reply_str(r, "error"));
		if (rc == 0)
			omni_reply_free(r);
		return -1;
	}
	t = bench_now() - t0;
	*worker = (pid_t)omni_reply_num(r, "worker_pid");
	omni_reply_free(r);
	return t;
}

/*
 * The hot loop again with the client, the daemon and the worker all on
 * CPU 0: no cross-core wake-up is left, so it shows what the work itself
 * costs and what placement is worth.  Each process's CPUs are restored.
 * 0 with the samples in v, or -1 (one CPU, or a process could not be
 * pinned: the row is left out, and why is said).
 */
static int hot_one_cpu(omni_client *c, const omni_exec_opts *o, pid_t worker, double *v, size_t n)
{
	pid_t pids[3] = { 0, bench_daemon_pid(), worker };
	cpu_set_t was[3], one;
	int k, rc = 0;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || pids[1] <= 0 || worker <= 0)
		return -1;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	for (k = 0; k < 3; k++)
		if (sched_getaffinity(pids[k], sizeof was[k], &was[k]) < 0 ||
		    sched_setaffinity(pids[k], sizeof one, &one) < 0)
			break;
	if (k < 3) {
		fprintf(stderr, "hot_exec: cannot pin pid %d to CPU 0; no one-CPU row\n", (int)pids[k]);
		rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < n + 200; i++) {
		pid_t by = 0;
		double t = hot_call(c, o, i, &by);

		if (t < 0 || by != worker)   /* another worker would not be pinned */
			rc = -1;
		else if (i >= 200)
			v[i - 200] = t;
	}
	while (k-- > 0)
		sched_setaffinity(pids[k], sizeof was[k], &was[k]);
	return rc;
}

int bench_hot_exec(void)
{
	size_t n = bench_iters(10000, 1000);
	double *v = calloc(n, sizeof *v);
	struct bench_stats rtt[NRTT], hot;
	omni_exec_opts o = { .spec = "base", .python = "3.11", .code = "pass" };
	omni_client *c = NULL;
	cJSON *rows = cJSON_CreateArray(), *row;
	double *rv[NRTT] = { NULL }, *v1 = NULL;
	const char *ref = rtts[0].name;
	pid_t worker = 0;
	int have[NRTT] = { 0 };
	size_t nr = bench_iters(20000, 2000);
	int rc, cross;

	if (!v || (rc = bench_daemon_start(NULL)) < 0 || (rc = omni_connect(&c, NULL, 0)) < 0) {
		fprintf(stderr, "hot_exec: cannot start or reach the daemon\n");
		cJSON_Delete(rows);
		free(v);
		bench_daemon_stop();
		return 1;
	}
	/* The unpinned ping-pong before the hot loop and the same-core one
	 * after it; the cross-core one, the reference, in batches between the
	 * hot loop's batches (A B A B ...), so that the machine's drift (on a
	 * VM, the host's) hits both sides of the ratio alike.  Each pinned
	 * batch moves this process, so the hot batches see whatever
	 * placement the scheduler makes next, as a user's calls do. */
	rv[1] = bench_unix_rtt_on(&rtt[1], rtts[1].place);
	cross = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
	if (cross && !(rv[0] = calloc(nr, sizeof *rv[0])))
		rc = -ENOMEM;
	for (size_t i = 0, got = 0, round = 0; rc >= 0 && got < n; i++) {
		double t = hot_call(c, &o, i, &worker);

		if (t < 0) {
			rc = -1;
			break;
		}
		if (i < 200)          /* warm-up */
			continue;
		v[got++] = t;
		if (cross && (got % (n / ROUNDS) == 0 || got == n) && round < ROUNDS) {
			struct bench_stats b;
			double *bv = bench_unix_rtt_n(&b, BENCH_CROSS_CORE, nr / ROUNDS);

			if (!bv) {
				rc = -1;
				break;
			}
			memcpy(rv[0] + round * (nr / ROUNDS), bv, nr / ROUNDS * sizeof *bv);
			free(bv);
			round++;
		}
	}
	if (rc >= 0 && cross) {
		rtt[0] = bench_stats(rv[0], nr / ROUNDS * ROUNDS);
	} else {
		free(rv[0]);
		rv[0] = NULL;
	}
	if (rc >= 0 && (v1 = calloc(n, sizeof *v1)) && hot_one_cpu(c, &o, worker, v1, n) < 0) {
		free(v1);
		v1 = NULL;
	}
	omni_close(c);
	bench_daemon_stop();
	for (size_t k = 0; k < NRTT; k++) {
		if (k == 2)
			rv[k] = bench_unix_rtt_on(&rtt[k], rtts[k].place);
		if (rv[k])
			bench_line(rtts[k].name, &rtt[k], 0, NULL);
	}
	if (!rv[0]) {           /* one CPU: the unpinned figure is the reference */
		rtt[0] = rtt[1];
		ref = rtts[1].name;
	}
	if (rc < 0 || !rv[1]) {
		if (!rv[1])
			fprintf(stderr, "hot_exec: the Unix-socket ping-pong failed\n");
		cJSON_Delete(rows);
		for (size_t k = 0; k < NRTT; k++)
			free(rv[k]);
		free(v1);
		free(v);
		return 1;
	}
	hot = bench_stats(v, n);
	bench_line("hot_exec_socket_c", &hot, rtt[0].p50, ref);
	for (size_t k = 0; k < NRTT; k++) {
		if (!rv[k])
			continue;
		row = bench_row(rtts[k].name, &rtt[k], 0, NULL);
		bench_row_hist(row, rv[k], rtt[k].n);
		cJSON_AddStringToObject(row, "placement", k == 0 ? "cross-core (CPUs 0 and 1)" :
					k == 1 ? "unpinned" : "same core (CPU 0)");
		cJSON_AddItemToArray(rows, row);
		free(rv[k]);
		rv[k] = NULL;
		have[k] = 1;
	}
	row = bench_row("hot_exec_socket_c", &hot, rtt[0].p50, ref);
	bench_row_hist(row, v, n);
	cJSON_AddItemToArray(rows, row);
	if (v1 && have[2]) {   /* its floor: the same-core ping-pong */
		struct bench_stats one = bench_stats(v1, n);

		bench_line("hot_exec_socket_c_one_cpu", &one, rtt[2].p50, rtts[2].name);
		row = bench_row("hot_exec_socket_c_one_cpu", &one, rtt[2].p50, rtts[2].name);
		bench_row_hist(row, v1, n);
		cJSON_AddStringToObject(row, "placement", "client, daemon and worker on CPU 0");
		cJSON_AddItemToArray(rows, row);
	}
	free(v1);
	free(v);
	return bench_write("hot_exec", rows) < 0;
}
