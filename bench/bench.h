/*
 * bench.h - the benchmark harness: timing, percentiles, a private daemon,
 * and results written as JSON into results/ with the machine they ran on.
 *
 * One file per benchmark (bench_*.c), each a `int bench_NAME(void)` listed
 * in runner.c; each prints one line per measured row:
 *
 *   hot_exec_socket        p50   41.2 us  p99   80.1 us  n 10000  2.1 x rtt
 *
 * QUICK=1 in the environment shortens every run (smoke check).
 */
#ifndef OMNI_BENCH_H
#define OMNI_BENCH_H

#include <stddef.h>
#include <sys/types.h>
#include <cjson/cJSON.h>

struct bench_stats {
	size_t n;
	double p50, p99, mean, min, max;   /* seconds */
};

double bench_now(void);                          /* monotonic seconds */
int bench_quick(void);                           /* QUICK=1 set */
size_t bench_iters(size_t full, size_t quick);
struct bench_stats bench_stats(double *v, size_t n);   /* sorts v */

/* Prints one result line; ref_p50 > 0 adds "N x <ref_name>". */
void bench_line(const char *row, const struct bench_stats *s, double ref_p50, const char *ref_name);

/* A JSON object for one row: name, unit "s", n, p50, p99, mean, min, max
 * and, when ref_p50 > 0, reference and ratio_p50. */
cJSON *bench_row(const char *row, const struct bench_stats *s, double ref_p50, const char *ref_name);

/* Adds "hist": 40 log-spaced bins over the sorted samples v (as
 * bench_stats leaves them), {"edges": [...], "counts": [...]}, for plots. */
void bench_row_hist(cJSON *row, const double *v, size_t n);

/* Writes {"benchmark", "machine", "rows": rows} to results/<name>.json
 * (rows taken).  The machine block: cpu, cores, kernel, date, commit,
 * omnipkgd version.  0 or -errno. */
int bench_write(const char *name, cJSON *rows);

/* The Unix-socket ping-pong round trip of this machine, measured now, the
 * way the hot path runs: BENCH_RTT_BYTES each way (a small exec request),
 * the echo side waiting in a blocking epoll like the daemon.  place: both
 * ends free (as the hot path runs), both on CPU 0, or on CPUs 0 and 1 (on
 * a VM a cross-core wake-up costs tens of microseconds, a same-core one a
 * few).  Returns the samples, sorted (caller frees), or NULL when any
 * round trip failed (never statistics over missing samples); *out gets
 * their statistics.  bench_unix_rtt is the unpinned one. */
#define BENCH_RTT_BYTES 96
enum bench_place { BENCH_UNPINNED, BENCH_SAME_CORE, BENCH_CROSS_CORE };
double *bench_unix_rtt_on(struct bench_stats *out, enum bench_place place);
/* The same with n samples (the others take the run's usual number). */
double *bench_unix_rtt_n(struct bench_stats *out, enum bench_place place, size_t n);
double *bench_unix_rtt(struct bench_stats *out);

/*
 * Starts omnipkgd (built beside the runner) on a private runtime dir with
 * the given extra config keys (JSON object text, may be NULL), using the
 * default home so the prepared bubbles are found.  Sets
 * OMNIPKG_RUNTIME_DIR for the client library.  0 or -errno.
 */
int bench_daemon_start(const char *config_json);
void bench_daemon_stop(void);
/* The pid of the daemon bench_daemon_start started; 0 when none. */
pid_t bench_daemon_pid(void);

/* The bubble directory of spec (one item) for interpreter "3.11"; 0 or -errno. */
int bench_bubble_dir(const char *spec, const char *python, char *buf, size_t n);
/* Resolves "3.11" to an interpreter path; 0 or -errno. */
int bench_python_path(const char *python, char *buf, size_t n);

#endif
