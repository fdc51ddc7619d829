/* bench_hot.c - hot exec round trip of `pass` through the socket with the
 * C client, next to the machine's Unix-socket ping-pong in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "omnipkg.h"

int bench_hot_exec(void)
{
	size_t n = bench_iters(10000, 1000);
	double *v = calloc(n, sizeof *v);
	struct bench_stats rtt, hot;
	omni_exec_opts o = { .spec = "base", .python = "3.11", .code = "pass" };
	omni_client *c = NULL;
	omni_reply *r;
	cJSON *rows = cJSON_CreateArray(), *row;
	double *rv = NULL;
	int rc;

	if (!v || (rc = bench_daemon_start(NULL)) < 0 || (rc = omni_connect(&c, NULL, 0)) < 0) {
		fprintf(stderr, "hot_exec: cannot start or reach the daemon\n");
		cJSON_Delete(rows);
		free(v);
		bench_daemon_stop();
		return 1;
	}
	rv = bench_unix_rtt(&rtt);
	bench_line("unix_socket_rtt", &rtt, 0, NULL);
	for (size_t i = 0; i < n + 200; i++) {
		double t0 = bench_now();

		rc = omni_exec(c, &o, &r);
		if (rc < 0 || !omni_reply_ok(r)) {
			fprintf(stderr, "hot_exec: call %zu failed: %s %s\n", i, omni_strerror(rc),
				rc < 0 ? "" : omni_reply_str(r, "error"));
			if (rc == 0)
				omni_reply_free(r);
			rc = -1;
			break;
		}
		omni_reply_free(r);
		if (i >= 200)
			v[i - 200] = bench_now() - t0;
	}
	omni_close(c);
	bench_daemon_stop();
	if (rc < 0) {
		cJSON_Delete(rows);
		free(rv);
		free(v);
		return 1;
	}
	hot = bench_stats(v, n);
	bench_line("hot_exec_socket_c", &hot, rtt.p50, "unix_socket_rtt");
	row = bench_row("unix_socket_rtt", &rtt, 0, NULL);
	bench_row_hist(row, rv, rtt.n);
	cJSON_AddItemToArray(rows, row);
	row = bench_row("hot_exec_socket_c", &hot, rtt.p50, "unix_socket_rtt");
	bench_row_hist(row, v, n);
	cJSON_AddItemToArray(rows, row);
	free(rv);
	free(v);
	return bench_write("hot_exec", rows) < 0;
}
