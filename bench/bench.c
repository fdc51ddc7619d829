/* bench.c - the shared harness of the benchmarks (see bench.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"
#include "bubble.h"
#include "config.h"
#include "omnipkg.h"
#include "paths.h"
#include "spec.h"

static pid_t daemon_pid;
static char daemon_dir[PATH_MAX];

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int bench_quick(void)
{
	const char *q = getenv("QUICK");

	return q && *q && strcmp(q, "0") != 0;
}

size_t bench_iters(size_t full, size_t quick) { return bench_quick() ? quick : full; }

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	double idx = p * (n - 1);
	size_t lo = (size_t)idx;

	if (lo + 1 >= n)
		return v[n - 1];
	return v[lo] + (v[lo + 1] - v[lo]) * (idx - lo);
}

struct bench_stats bench_stats(double *v, size_t n)
{
	struct bench_stats s = { .n = n };
	double sum = 0;

	if (n == 0)
		return s;
	qsort(v, n, sizeof *v, cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	s.p50 = pct(v, n, 0.50);
	s.p99 = pct(v, n, 0.99);
	s.mean = sum / n;
	s.min = v[0];
	s.max = v[n - 1];
	return s;
}

static void human(double s, char *buf, size_t n)
{
	if (s < 1e-3)
		snprintf(buf, n, "%7.1f us", s * 1e6);
	else if (s < 1)
		snprintf(buf, n, "%7.2f ms", s * 1e3);
	else
		snprintf(buf, n, "%7.3f s ", s);
}

void bench_line(const char *row, const struct bench_stats *s, double ref_p50, const char *ref_name)
{
	char a[32], b[32];

	human(s->p50, a, sizeof a);
	human(s->p99, b, sizeof b);
	printf("%-34s p50 %s  p99 %s  n %6zu", row, a, b, s->n);
	if (ref_p50 > 0)
		printf("  %6.2f x %s", s->p50 / ref_p50, ref_name);
	printf("\n");
	fflush(stdout);
}

cJSON *bench_row(const char *row, const struct bench_stats *s, double ref_p50, const char *ref_name)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "name", row);
	cJSON_AddStringToObject(o, "unit", "s");
	cJSON_AddNumberToObject(o, "n", (double)s->n);
	cJSON_AddNumberToObject(o, "p50", s->p50);
	cJSON_AddNumberToObject(o, "p99", s->p99);
	cJSON_AddNumberToObject(o, "mean", s->mean);
	cJSON_AddNumberToObject(o, "min", s->min);
	cJSON_AddNumberToObject(o, "max", s->max);
	if (ref_p50 > 0) {
		cJSON_AddStringToObject(o, "reference", ref_name);
		cJSON_AddNumberToObject(o, "reference_p50", ref_p50);
		cJSON_AddNumberToObject(o, "ratio_p50", s->p50 / ref_p50);
	}
	return o;
}

void bench_row_hist(cJSON *row, const double *v, size_t n)
{
	enum { BINS = 40 };
	double edges[BINS + 1], counts[BINS] = { 0 }, lo, hi;
	cJSON *h;

	if (n == 0 || v[0] <= 0)
		return;
	lo = log(v[0]);
	hi = log(v[n - 1]);
	if (hi <= lo)
		hi = lo + 1e-6;
	for (int i = 0; i <= BINS; i++)
		edges[i] = exp(lo + (hi - lo) * i / BINS);
	for (size_t i = 0; i < n; i++) {
		int b = (int)((log(v[i]) - lo) / (hi - lo) * BINS);

		counts[b < 0 ? 0 : b >= BINS ? BINS - 1 : b]++;
	}
	h = cJSON_AddObjectToObject(row, "hist");
	cJSON_AddItemToObject(h, "edges", cJSON_CreateDoubleArray(edges, BINS + 1));
	cJSON_AddItemToObject(h, "counts", cJSON_CreateDoubleArray(counts, BINS));
}

static void read_cmd(const char *cmd, char *buf, size_t n)
{
	FILE *f = popen(cmd, "r");

	buf[0] = 0;
	if (!f)
		return;
	if (fgets(buf, (int)n, f))
		buf[strcspn(buf, "\n")] = 0;
	pclose(f);
}

static cJSON *machine_json(void)
{
	cJSON *m = cJSON_CreateObject();
	struct utsname u;
	char buf[600] = "", line[512];
	time_t now = time(NULL);
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, "model name", 10) == 0) {
			char *c = strchr(line, ':');

			snprintf(buf, sizeof buf, "%s", c ? c + 2 : line);
			buf[strcspn(buf, "\n")] = 0;
			break;
		}
	if (f)
		fclose(f);
	cJSON_AddStringToObject(m, "cpu", buf);
	cJSON_AddNumberToObject(m, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
	uname(&u);
	snprintf(line, sizeof line, "%s %s %s", u.sysname, u.release, u.machine);
	cJSON_AddStringToObject(m, "kernel", line);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	cJSON_AddStringToObject(m, "date", buf);
	read_cmd("git rev-parse --short HEAD 2>/dev/null", buf, sizeof buf);
	cJSON_AddStringToObject(m, "commit", buf);
	/* Changes to the code measured; the results a run writes do not count. */
	read_cmd("git status --porcelain --untracked-files=no -- . ':!results' ':!BENCHMARKS.md' "
		 "2>/dev/null | head -1", line, sizeof line);
	cJSON_AddBoolToObject(m, "dirty", line[0] != 0);
	cJSON_AddStringToObject(m, "omnipkgd", omni_version());
	{
		const char *run = getenv("OMNI_BENCH_RUN");

		cJSON_AddStringToObject(m, "run", run ? run : "");
	}
	return m;
}

int bench_write(const char *name, cJSON *rows)
{
	const char *dir = getenv("OMNI_RESULTS_DIR");
	char path[PATH_MAX];
	cJSON *doc = cJSON_CreateObject();
	char *txt;
	FILE *f;

	if (!dir)
		dir = "results";
	paths_mkdir_p(dir, 0755);
	snprintf(path, sizeof path, "%s/%s.json", dir, name);
	cJSON_AddStringToObject(doc, "benchmark", name);
	cJSON_AddBoolToObject(doc, "quick", bench_quick());
	cJSON_AddItemToObject(doc, "machine", machine_json());
	cJSON_AddItemToObject(doc, "rows", rows);
	txt = cJSON_Print(doc);
	cJSON_Delete(doc);
	f = fopen(path, "w");
	if (!f || !txt) {
		free(txt);
		if (f)
			fclose(f);
		return -errno;
	}
	fprintf(f, "%s\n", txt);
	fclose(f);
	free(txt);
	printf("  -> %s\n", path);
	return 0;
}

/* Pins the calling process to one CPU (cpu >= 0); -1 leaves it free. */
static int bench_pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) < 0 ? -errno : 0;
}

double *bench_unix_rtt_on(struct bench_stats *out, enum bench_place place)
{
	return bench_unix_rtt_n(out, place, bench_iters(20000, 2000));
}

double *bench_unix_rtt_n(struct bench_stats *out, enum bench_place place, size_t n)
{
	size_t got_n = 0;
	double *v = calloc(n, sizeof *v);
	char msg[BENCH_RTT_BYTES] = { 0 }, back[BENCH_RTT_BYTES];
	int sv[2], me = -1, peer = -1, ok = 1;
	cpu_set_t was;
	pid_t pid;

	memset(out, 0, sizeof *out);
	if (place != BENCH_UNPINNED && sysconf(_SC_NPROCESSORS_ONLN) < (place == BENCH_CROSS_CORE ? 2 : 1)) {
		free(v);
		return NULL;
	}
	if (place == BENCH_SAME_CORE)
		me = peer = 0;
	else if (place == BENCH_CROSS_CORE)
		me = 0, peer = 1;
	if (!v || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		free(v);
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		free(v);
		return NULL;
	}
	if (pid == 0) {
		/* The echo side waits the way the daemon does: a blocking epoll. */
		struct epoll_event ev = { .events = EPOLLIN }, got;
		int ep = epoll_create1(0);

		close(sv[0]);
		if (bench_pin(peer) < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev) < 0)
			_exit(1);
		for (;;) {
			ssize_t r;

			if (epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR)
				_exit(1);
			r = read(sv[1], back, sizeof back);
			if (r <= 0 || write(sv[1], back, r) != r)
				_exit(0);
		}
	}
	close(sv[1]);
	/* Only this measurement runs pinned: the affinity it found (a
	 * taskset, say) is given back afterwards. */
	if (sched_getaffinity(0, sizeof was, &was) < 0 || bench_pin(me) < 0)
		ok = 0;
	for (size_t i = 0; ok && i < n + 100; i++) {
		double t0 = bench_now();
		size_t got = 0;

		if (write(sv[0], msg, sizeof msg) != sizeof msg)
			ok = 0;
		while (ok && got < sizeof msg) {
			ssize_t r = read(sv[0], back, sizeof back - got);

			if (r <= 0)
				ok = 0;
			else
				got += r;
		}
		if (ok && i >= 100)   /* warm-up discarded */
			v[got_n++] = bench_now() - t0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	if (me >= 0)
		sched_setaffinity(0, sizeof was, &was);
	/* A row with a missing sample is an error, never a number. */
	if (got_n != n) {
		fprintf(stderr, "unix_socket_rtt: %zu of %zu round trips completed\n", got_n, n);
		free(v);
		return NULL;
	}
	*out = bench_stats(v, n);
	return v;
}

double *bench_unix_rtt(struct bench_stats *out)
{
	return bench_unix_rtt_on(out, BENCH_UNPINNED);
}


int bench_daemon_start(const char *config_json)
{
	char exe[PATH_MAX], bin[PATH_MAX + 16], cfg[PATH_MAX + 16], sock[PATH_MAX + 32];
	ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
	FILE *f;

	if (k <= 0)
		return -errno;
	exe[k] = 0;
	*strrchr(exe, '/') = 0;
	/* The runner lives in <build>/bench; the daemon in <build>. */
	snprintf(bin, sizeof bin, "%s/../omnipkgd", exe);
	snprintf(daemon_dir, sizeof daemon_dir, "/tmp/omnibench-XXXXXX");
	if (!mkdtemp(daemon_dir))
		return -errno;
	snprintf(cfg, sizeof cfg, "%s/config.json", daemon_dir);
	f = fopen(cfg, "w");
	if (!f)
		return -errno;
	fprintf(f, "%s\n", config_json ? config_json : "{}");
	fclose(f);
	setenv("OMNIPKG_RUNTIME_DIR", daemon_dir, 1);
	setenv("OMNIPKG_CONFIG", cfg, 1);
	daemon_pid = fork();
	if (daemon_pid < 0)
		return -errno;
	if (daemon_pid == 0) {
		char log[PATH_MAX + 16];
		int fd;

		snprintf(log, sizeof log, "%s/omnipkgd.log", daemon_dir);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		setpgid(0, 0);
		execl(bin, bin, "--foreground", (char *)NULL);
		_exit(127);
	}
	snprintf(sock, sizeof sock, "%s/omnipkgd.sock", daemon_dir);
	for (int i = 0; i < 500; i++) {
		omni_client *c;

		if (omni_connect(&c, sock, 0) == 0) {
			omni_close(c);
			return 0;
		}
		usleep(10000);
	}
	bench_daemon_stop();
	return -ETIMEDOUT;
}

pid_t bench_daemon_pid(void)
{
	return daemon_pid;
}

void bench_daemon_stop(void)
{
	char cmd[PATH_MAX + 16];

	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		for (int i = 0; i < 300 && waitpid(daemon_pid, NULL, WNOHANG) == 0; i++)
			usleep(10000);
		kill(-daemon_pid, SIGKILL);
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, NULL, WNOHANG);
		daemon_pid = 0;
	}
	if (daemon_dir[0]) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", daemon_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "bench: could not remove %s\n", daemon_dir);
		daemon_dir[0] = 0;
	}
}

/* Resolves "3.11" as the daemon would, with the default settings. */
static int bench_interp(const char *python, struct interp *out)
{
	struct config cfg;
	struct interp_set set = { 0 };
	int r;

	config_defaults(&cfg);
	if (config_discover_pythons(&cfg, &set) < 0)
		return -ENOENT;
	r = interp_resolve(&set, python, out, NULL, 0);
	interp_set_free(&set);
	return r;
}

int bench_python_path(const char *python, char *buf, size_t n)
{
	struct interp it;
	int r = bench_interp(python, &it);

	if (r == 0)
		snprintf(buf, n, "%s", it.path);
	return r;
}

int bench_bubble_dir(const char *spec, const char *python, char *buf, size_t n)
{
	static char paths[SPEC_MAX_ITEMS][4096];
	struct interp it;
	struct spec s;
	char home[PATH_MAX];
	int r;

	if (paths_home(home, sizeof home) < 0 || spec_parse(spec, strlen(spec), &s, NULL, 0) < 0)
		return -EINVAL;
	r = bench_interp(python, &it);
	if (r == 0)
		r = bubble_resolve(home, &it, &s, paths, NULL, 0);
	if (r < 1)
		return r < 0 ? r : -ENOENT;
	snprintf(buf, n, "%s", paths[0]);
	return 0;
}
