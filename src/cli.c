/*
 * cli.c - the `omnipkg` command, a thin front over libomnipkg (omnipkg.h).
 *
 *   $ omnipkg exec --spec numpy==1.26.4 --python 3.11 -c 'import numpy; print(numpy.__version__)'
 *   1.26.4
 *
 * Each command is one small function and one entry of cmd_table.  The
 * protocol is libomnipkg's business: this file only sends ops through
 * omni_call and reads replies, parsing a reply's JSON (cJSON) where it
 * holds a list to print as a table.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "omnipkg.h"

/* Exit codes; the usage text repeats them. */
enum {
	CMD_OK = 0,        /* success */
	CMD_JOBFAIL = 1,   /* the job ran and failed */
	CMD_REFUSED = 2,   /* the request was refused */
	CMD_USAGE = 100,   /* bad command line */
	CMD_SYSFAIL = 111, /* cannot reach or start the daemon, or another failure */
};

#define CMD_CODE_MAX (16u << 20)   /* the protocol's frame limit */
#define CMD_STOP_WAIT_MS 10000

static const char *cmd_socket;     /* borrowed from argv or the environment; NULL: default */

struct cmd_entry {
	const char *name;
	int (*run)(int argc, char **argv);   /* argv[0] is the command's name */
};

static const char cmd_usage_text[] =
	"usage: omnipkg [--socket PATH] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  install SPEC [--python PY] [--quiet]\n"
	"        create the bubbles of SPEC (\"numpy==1.26.4\", \"a==1,b==2\") for PY\n"
	"  exec --spec SPEC [--python PY] [--timeout S] [--tag T] [--once] [--pin]\n"
	"       [--max-memory-mb N] [--json]\n"
	"       [--array NAME=SEGMENT:DTYPE:D1,D2,...[:OFFSET]]... [--bind NAME=JSON]...\n"
	"       (-c CODE | FILE | -)\n"
	"        run Python code in the worker of SPEC (\"base\": no bubble) and print\n"
	"        its stdout and stderr; --json prints the whole reply.  --array binds\n"
	"        a view of a shared segment as the global NAME (a numpy array where\n"
	"        the worker has numpy; written in place), e.g.\n"
	"        --array arr_in=frame:float32:1024,1024; --bind binds a JSON value.\n"
	"        --pin keeps the worker from being stopped when idle or to make room\n"
	"        (evict still stops it); --max-memory-mb limits the worker's memory to\n"
	"        N MiB from now on (a job going over it fails: reason \"memory\")\n"
	"  evict --spec SPEC [--python PY] [--tag T]\n"
	"        stop the worker(s) of that key, an idle one now, a busy one once its\n"
	"        job ends, and print their pids, one a line (none: nothing matched)\n"
	"  idle-config [--python PY --count N]\n"
	"        print the interpreters kept warm as JSON ({path: count}); with\n"
	"        --python and --count, set PY's count first: N >= 1 keeps its zygote\n"
	"        (which forks new workers in milliseconds) started at all times, 0\n"
	"        leaves it to start on demand (N: 0 to 64)\n"
	"  shm create NAME SIZE   create a shared segment of SIZE bytes (suffix K, M,\n"
	"                         G: KiB, MiB, GiB) and print its file; it persists\n"
	"                         (this command's connection ends when it exits)\n"
	"                         until `shm rm`\n"
	"  shm ls [--json]        shared segments\n"
	"  shm rm NAME            remove a segment (refused while a job uses it)\n"
	"  pythons [--json]       interpreters the daemon knows and the short names\n"
	"  list [--json]          installed bubbles\n"
	"  workers [--json]       live workers\n"
	"  status [--json]        the daemon's state (starts it when needed)\n"
	"  daemon start|stop|status [--json]\n"
	"        start or stop omnipkgd, or tell whether it answers\n"
	"  help                   this text (also -h, --help)\n"
	"  --version              the version of omnipkg\n"
	"\n"
	"options:\n"
	"  --socket PATH          the daemon's socket (else $OMNIPKG_SOCKET, else the\n"
	"                         default under the runtime directory)\n"
	"\n"
	"PY is 3.11, 3.11.7, py311, python3.11, python3 or an interpreter's path (a\n"
	"venv's python runs with that venv's packages); without --python, the\n"
	"daemon's default.  SPEC items are name==version, or (exec, evict) a bare\n"
	"name or PEP 440 comparisons (\"numpy>=1.26,<2\"): the newest installed\n"
	"bubble that satisfies them, else the interpreter's own package.\n"
	"\n"
	"exec, idle-config, pythons, list, workers, status, shm create and shm ls\n"
	"start omnipkgd if it is not running.\n"
	"\n"
	"exit codes:\n"
	"  0    success\n"
	"  1    the job ran and failed (exception, timeout, crash, over its memory\n"
	"       limit)\n"
	"  2    the request was refused (bad spec, unknown interpreter, missing bubble,\n"
	"       no such segment, segment in use, over the shared-memory quota)\n"
	"  100  usage error\n"
	"  111  system failure (cannot reach or start the daemon, other errors)\n";

static int cmd_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "omnipkg%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(see `omnipkg help`)\n", stderr);
	return CMD_USAGE;
}

static int cmd_fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("omnipkg: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* getopt_long over argv[0..argc) from the start; reports problems itself. */
static int cmd_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
	int ch;

	opterr = 0;
	ch = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (ch == '?' || ch == ':') {
		const char *bad = argv[optind - 1 < argc ? optind - 1 : argc - 1];

		cmd_usage_error(argv[0], ch == ':' ? "option %s needs a value" : "unknown option %s",
				bad);
		return -2;
	}
	return ch;
}

static int cmd_connect(omni_client **c, int flags)
{
	char err[1024];
	int rc = omni_connect_err(c, cmd_socket, flags, err, sizeof err);

	if (rc < 0)
		return cmd_fail(CMD_SYSFAIL, "%s", *err ? err : omni_strerror(rc));
	return CMD_OK;
}

/* Maps a failed reply to an exit code by the class of its reason
 * (omnipkg.h); a reason missing or unknown is a system failure. */
static int cmd_exit_for(const omni_reply *r)
{
	if (omni_reply_ok(r))
		return CMD_OK;
	switch (omni_reason_class(omni_reason_code(omni_reply_str(r, "reason")))) {
	case OMNI_REASON_JOB:
		return CMD_JOBFAIL;
	case OMNI_REASON_REFUSED:
		return CMD_REFUSED;
	default:
		return CMD_SYSFAIL;
	}
}

/* Prints a daemon-level failure; returns its exit code. */
static int cmd_reply_failed(const omni_reply *r)
{
	const char *e = omni_reply_str(r, "error");

	return cmd_fail(cmd_exit_for(r), "%s", *e ? e : "the daemon refused the request");
}

/* The exit code of a -errno from a library call that reports a failed
 * reply that way (omni_shm_*): the errnos of refusing reasons (nosegment,
 * leased, quota, badarg, a name in use) are refusals. */
static int cmd_exit_errno(int rc)
{
	switch (rc) {
	case -ENOENT: case -EBUSY: case -EDQUOT: case -EEXIST: case -EINVAL:
	case -ENAMETOOLONG:
		return CMD_REFUSED;
	default:
		return CMD_SYSFAIL;
	}
}

/* A byte count: digits with an optional K, M, G or T (powers of 1024). */
static int cmd_parse_size(const char *text, uint64_t *out)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	const char *u;
	char *end;

	if (!isdigit((unsigned char)text[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end) {
		if (end[1] || !(u = strchr(units, toupper((unsigned char)*end))))
			return -EINVAL;
		for (long k = u - units; k >= 0; k--) {
			if (v > UINT64_MAX / 1024)
				return -EINVAL;
			v *= 1024;
		}
	}
	*out = v;
	return 0;
}

/* A finite number over 0; 0 or -EINVAL. */
static int cmd_parse_positive(const char *text, double *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(text, &end);
	if (errno || end == text || *end || !isfinite(d) || d <= 0)
		return -EINVAL;
	*out = d;
	return 0;
}

/* Sends op with args (taken; NULL: none), prints a successful reply as
 * JSON or hands its parsed body to show; flags as omni_connect's. */
static int cmd_call(int flags, const char *op, cJSON *args, int json,
		    int (*show)(const cJSON *body))
{
	char *text = args ? cJSON_PrintUnformatted(args) : NULL;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	cJSON *body;
	int rc, code;

	cJSON_Delete(args);
	if (args && !text)
		return cmd_fail(CMD_SYSFAIL, "out of memory");
	if ((code = cmd_connect(&c, flags)) != CMD_OK) {
		cJSON_free(text);
		return code;
	}
	rc = omni_call(c, op, text, &r);
	cJSON_free(text);
	if (rc < 0) {
		omni_close(c);
		return cmd_fail(CMD_SYSFAIL, "%s: %s", op, omni_strerror(rc));
	}
	if (!omni_reply_ok(r)) {
		code = cmd_reply_failed(r);
	} else if (json) {
		puts(omni_reply_json(r));
	} else if (!(body = cJSON_Parse(omni_reply_json(r)))) {
		code = cmd_fail(CMD_SYSFAIL, "%s: cannot read the reply", op);
	} else {
		code = show(body);
		cJSON_Delete(body);
	}
	omni_reply_free(r);
	omni_close(c);
	return code;
}

/* ---- small formatting helpers ----------------------------------------- */

/* A text table: cells are copied, columns padded to their widest cell. */
struct cmd_tab {
	size_t ncol, nrow;
	char **cell;        /* owned: nrow * ncol strings */
};

static void cmd_tab_row(struct cmd_tab *t, const char *const *cells)
{
	char **nc = realloc(t->cell, (t->nrow + 1) * t->ncol * sizeof *nc);

	if (!nc)
		return;
	t->cell = nc;
	for (size_t i = 0; i < t->ncol; i++)
		nc[t->nrow * t->ncol + i] = strdup(cells[i] ? cells[i] : "");
	t->nrow++;
}

static void cmd_tab_print(struct cmd_tab *t)
{
	size_t w[16] = { 0 };

	for (size_t r = 0; r < t->nrow; r++)
		for (size_t i = 0; i < t->ncol && i < 16; i++) {
			const char *s = t->cell[r * t->ncol + i];
			size_t n = s ? strlen(s) : 0;

			if (n > w[i])
				w[i] = n;
		}
	for (size_t r = 0; r < t->nrow; r++) {
		for (size_t i = 0; i < t->ncol; i++) {
			const char *s = t->cell[r * t->ncol + i];

			if (i + 1 == t->ncol)
				printf("%s\n", s ? s : "");
			else
				printf("%-*s  ", (int)w[i < 16 ? i : 15], s ? s : "");
		}
	}
	for (size_t k = 0; k < t->nrow * t->ncol; k++)
		free(t->cell[k]);
	free(t->cell);
	t->cell = NULL;
	t->nrow = 0;
}

static const char *cmd_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

static double cmd_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void cmd_duration(char *buf, size_t n, double s)
{
	long t = s > 0 ? (long)s : 0;

	if (t >= 86400)
		snprintf(buf, n, "%ldd%02ldh%02ldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
	else if (t >= 3600)
		snprintf(buf, n, "%ldh%02ldm%02lds", t / 3600, t % 3600 / 60, t % 60);
	else if (t >= 60)
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
	else
		snprintf(buf, n, "%lds", t);
}

/* ---- install ---------------------------------------------------------- */

static int cmd_install(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "python", required_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *python = NULL, *spec;
	char err[1024];
	int ch, quiet = 0, rc;

	while ((ch = cmd_getopt(argc, argv, ":qh", lo)) != -1) {
		switch (ch) {
		case 'p': python = optarg; break;
		case 'q': quiet = 1; break;
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); return CMD_OK;
		default: return CMD_USAGE;
		}
	}
	if (argc - optind != 1)
		return cmd_usage_error("install", "needs exactly one SPEC");
	spec = argv[optind];
	rc = omni_install(spec, python, quiet, err, sizeof err);
	if (rc < 0) {
		int code = (rc == -EINVAL || rc == -ENOENT || rc == -E2BIG || rc == -ENAMETOOLONG)
				   ? CMD_REFUSED : CMD_SYSFAIL;

		return cmd_fail(code, "install %s: %s", spec, *err ? err : omni_strerror(rc));
	}
	if (!quiet)
		printf("installed %s\n", spec);
	return CMD_OK;
}

/* ---- exec ------------------------------------------------------------- */

/* Reads all of f into a NUL-terminated malloc'd string (caller frees). */
static char *cmd_slurp(FILE *f, const char *what)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap), *nb;
	size_t k;

	if (!buf)
		return NULL;
	while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += k;
		if (len > CMD_CODE_MAX) {
			cmd_fail(CMD_USAGE, "%s: more code than a request can carry (16 MiB)", what);
			free(buf);
			return NULL;
		}
		if (cap - len - 1 == 0) {
			if (!(nb = realloc(buf, cap * 2))) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (ferror(f)) {
		cmd_fail(CMD_USAGE, "cannot read %s: %s", what, strerror(errno));
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		cmd_fail(CMD_USAGE, "%s contains a NUL byte", what);
		free(buf);
		return NULL;
	}
	return buf;
}

static char *cmd_read_code(const char *file)
{
	FILE *f;
	char *code;

	if (strcmp(file, "-") == 0)
		return cmd_slurp(stdin, "standard input");
	if (!(f = fopen(file, "r"))) {
		cmd_fail(CMD_USAGE, "cannot open %s: %s", file, strerror(errno));
		return NULL;
	}
	code = cmd_slurp(f, file);
	fclose(f);
	return code;
}

/* Why a job failed or was refused, on stderr after its own output. */
static void cmd_print_failure(const omni_reply *r)
{
	const char *tb = omni_reply_str(r, "traceback");
	const char *err = omni_reply_str(r, "error");
	const char *reason = omni_reply_str(r, "reason");
	size_t n = strlen(tb);

	if (cmd_exit_for(r) != CMD_JOBFAIL) {
		fprintf(stderr, "omnipkg: %s\n", *err ? err : "the daemon refused the request");
		return;
	}
	if (n) {
		fputs(tb, stderr);
		if (tb[n - 1] != '\n')
			fputc('\n', stderr);
	}
	/* a traceback normally ends with the error already */
	if (*err && !strstr(tb, err))
		fprintf(stderr, "omnipkg: job failed (%s): %s\n", *reason ? reason : "?", err);
	else if (!n && !*err)
		fprintf(stderr, "omnipkg: job failed (%s)\n", *reason ? reason : "no reason given");
}

/* The --array views of one exec: a[i] points into text[i] and shape[i]. */
struct cmd_views {
	omni_array *a;                               /* owned, n used */
	int64_t (*shape)[OMNI_ARRAY_MAX_DIM];        /* owned */
	char **text;                                 /* owned: each a copy, cut up */
	size_t n, cap;
};

static void cmd_views_free(struct cmd_views *v)
{
	for (size_t i = 0; i < v->n; i++)
		free(v->text[i]);
	free(v->a);
	free(v->shape);
	free(v->text);
}

/* Cuts s at the first sep: returns what follows it, NULL when absent. */
static char *cmd_cut(char *s, int sep)
{
	char *p = strchr(s, sep);

	if (p)
		*p++ = '\0';
	return p;
}

/* Adds the view NAME=SEGMENT:DTYPE:D1,D2,...[:OFFSET] (an empty dims list:
 * zero dimensions).  CMD_OK, or a usage error already reported. */
static int cmd_views_add(struct cmd_views *v, const char *arg)
{
	char *t, *seg, *dtype, *dims, *off;
	omni_array *a;
	uint64_t n;

	if (!(t = strdup(arg)))
		return cmd_fail(CMD_SYSFAIL, "out of memory");
	v->text[v->n] = t;
	a = &v->a[v->n];
	a->shape = v->shape[v->n];
	v->n++;
	if (!(seg = cmd_cut(t, '=')) || !*t || !(dtype = cmd_cut(seg, ':')) || !*seg ||
	    !(dims = cmd_cut(dtype, ':')) || !*dtype)
		goto bad;
	off = cmd_cut(dims, ':');
	a->name = t;
	a->segment = seg;
	a->dtype = dtype;
	for (char *d = *dims ? dims : NULL, *next; d; d = next) {
		next = cmd_cut(d, ',');
		if (a->ndim == OMNI_ARRAY_MAX_DIM || d[strspn(d, "0123456789")] ||
		    cmd_parse_size(d, &n) < 0 || n > INT64_MAX)
			goto bad;
		v->shape[v->n - 1][a->ndim++] = (int64_t)n;
	}
	if (off && cmd_parse_size(off, &a->offset) < 0)
		goto bad;
	return CMD_OK;
bad:
	return cmd_usage_error("exec", "--array wants NAME=SEGMENT:DTYPE:D1,D2,...[:OFFSET] "
			       "(e.g. arr_in=frame:float32:1024,1024), not '%s'", arg);
}

/* Adds NAME=JSON to the object bind. */
static int cmd_bind_add(cJSON *bind, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char name[256];
	cJSON *val;

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof name)
		return cmd_usage_error("exec", "--bind wants NAME=JSON, not '%s'", arg);
	memcpy(name, arg, (size_t)(eq - arg));
	name[eq - arg] = '\0';
	if (cJSON_GetObjectItemCaseSensitive(bind, name))
		return cmd_usage_error("exec", "--bind %s given twice", name);
	if (!(val = cJSON_Parse(eq + 1)))
		return cmd_usage_error("exec", "--bind %s: '%s' is not JSON", name, eq + 1);
	if (!cJSON_AddItemToObject(bind, name, val)) {
		cJSON_Delete(val);
		return cmd_fail(CMD_SYSFAIL, "out of memory");
	}
	return CMD_OK;
}

static int cmd_exec(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "spec", required_argument, NULL, 's' },
		{ "python", required_argument, NULL, 'p' },
		{ "timeout", required_argument, NULL, 't' },
		{ "tag", required_argument, NULL, 'T' },
		{ "once", no_argument, NULL, 'o' },
		{ "pin", no_argument, NULL, 'P' },
		{ "max-memory-mb", required_argument, NULL, 'm' },
		{ "json", no_argument, NULL, 'j' },
		{ "array", required_argument, NULL, 'a' },
		{ "bind", required_argument, NULL, 'b' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	omni_exec_opts o = { 0 };
	const char *inline_code = NULL;
	char *code = NULL, *bind_text = NULL;
	struct cmd_views views = { 0 };
	omni_client *c = NULL;
	omni_reply *r = NULL;
	cJSON *bind = NULL;
	int ch, json = 0, rc, ret;

	/* each --array takes two argv entries at least: argc bounds them */
	views.a = calloc((size_t)argc, sizeof *views.a);
	views.shape = calloc((size_t)argc, sizeof *views.shape);
	views.text = calloc((size_t)argc, sizeof *views.text);
	if (!views.a || !views.shape || !views.text || !(bind = cJSON_CreateObject())) {
		ret = cmd_fail(CMD_SYSFAIL, "out of memory");
		goto out;
	}
	while ((ch = cmd_getopt(argc, argv, ":c:h", lo)) != -1) {
		switch (ch) {
		case 's': o.spec = optarg; break;
		case 'p': o.python = optarg; break;
		case 'T': o.tag = optarg; break;
		case 'o': o.once = 1; break;
		case 'P': o.pin = 1; break;
		case 'j': json = 1; break;
		case 'c': inline_code = optarg; break;
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); ret = CMD_OK; goto out;
		case 'a':
			if ((ret = cmd_views_add(&views, optarg)) != CMD_OK)
				goto out;
			break;
		case 'b':
			if ((ret = cmd_bind_add(bind, optarg)) != CMD_OK)
				goto out;
			break;
		case 't':
			if (cmd_parse_positive(optarg, &o.timeout) < 0) {
				ret = cmd_usage_error("exec", "--timeout wants seconds > 0, not '%s'",
						      optarg);
				goto out;
			}
			break;
		case 'm':
			if (cmd_parse_positive(optarg, &o.max_memory_mb) < 0) {
				ret = cmd_usage_error("exec", "--max-memory-mb wants MiB > 0, not '%s'",
						      optarg);
				goto out;
			}
			break;
		default: ret = CMD_USAGE; goto out;
		}
	}
	ret = CMD_USAGE;
	if (!o.spec) {
		cmd_usage_error("exec", "--spec SPEC is required (\"base\": no bubble)");
		goto out;
	}
	if (argc - optind > 1 || (inline_code && argc - optind == 1)) {
		cmd_usage_error("exec", "give the code once: -c CODE, FILE or - for stdin");
		goto out;
	}
	if (!inline_code && argc - optind == 0) {
		cmd_usage_error("exec", "no code: give -c CODE, FILE or - for stdin");
		goto out;
	}
	if (inline_code)
		o.code = inline_code;
	else if (!(o.code = code = cmd_read_code(argv[optind])))
		goto out;
	o.arrays = views.a;
	o.narrays = views.n;
	if (cJSON_GetArraySize(bind) > 0 && !(o.bind_json = bind_text = cJSON_PrintUnformatted(bind))) {
		ret = cmd_fail(CMD_SYSFAIL, "out of memory");
		goto out;
	}

	if ((ret = cmd_connect(&c, OMNI_CONNECT_AUTOSTART)) != CMD_OK)
		goto out;
	if ((rc = omni_exec(c, &o, &r)) < 0) {
		ret = cmd_fail(CMD_SYSFAIL, "exec: %s", omni_strerror(rc));
		goto out;
	}
	ret = cmd_exit_for(r);
	if (json) {
		puts(omni_reply_json(r));
		goto out;
	}
	fputs(omni_reply_str(r, "stdout"), stdout);
	fflush(stdout);
	fputs(omni_reply_str(r, "stderr"), stderr);
	if (omni_reply_num(r, "stdout_truncated"))
		fputs("omnipkg: the job's stdout was cut at the daemon's output cap\n", stderr);
	if (omni_reply_num(r, "stderr_truncated"))
		fputs("omnipkg: the job's stderr was cut at the daemon's output cap\n", stderr);
	if (!omni_reply_ok(r))
		cmd_print_failure(r);
out:
	omni_reply_free(r);
	omni_close(c);
	free(code);
	cmd_views_free(&views);
	cJSON_free(bind_text);
	cJSON_Delete(bind);
	return ret;
}

/* ---- pythons, list, workers, status ------------------------------------ */

/* Options of the commands that take only --json (and the globals). */
static int cmd_json_only(int argc, char **argv, int *json)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	*json = 0;
	while ((ch = cmd_getopt(argc, argv, ":h", lo)) != -1) {
		switch (ch) {
		case 'j': *json = 1; break;
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); return -1;
		default: return CMD_USAGE;
		}
	}
	if (optind < argc)
		return cmd_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
	return CMD_OK;
}

static int cmd_show_pythons(const cJSON *body)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "pythons"), *p;
	struct cmd_tab t = { .ncol = 6 };
	static const char *const head[] = { "", "NAME (VERSION)", "SHORT", "TAG", "SOURCE", "PATH" };
	int any = 0, anydef = 0;

	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
		puts("no Python interpreters found (add some under \"pythons\" in config.json)");
		return CMD_OK;
	}
	cmd_tab_row(&t, head);
	cJSON_ArrayForEach(p, list) {
		char name[256];
		const char *cells[6];
		int def = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "default"));
		/* the daemon's resolver says which entry its short name means */
		int target = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "short_name_target"));

		snprintf(name, sizeof name, "%s (%s)", *cmd_str(p, "name") ? cmd_str(p, "name") : "python",
			 cmd_str(p, "version"));
		cells[0] = def ? "*" : "";
		cells[1] = name;
		cells[2] = target ? cmd_str(p, "name") : "";
		cells[3] = cmd_str(p, "tag");
		cells[4] = cmd_str(p, "source");
		cells[5] = cmd_str(p, "path");
		cmd_tab_row(&t, cells);
		any = 1;
		anydef |= def;
	}
	cmd_tab_print(&t);
	if (any)
		printf("\n%sSHORT: the interpreter that --python X.Y selects\n",
		       anydef ? "*: the default (no --python); " : "");
	return CMD_OK;
}

static int cmd_pythons(int argc, char **argv)
{
	int json, rc = cmd_json_only(argc, argv, &json);

	return rc ? (rc < 0 ? CMD_OK : rc)
		  : cmd_call(OMNI_CONNECT_AUTOSTART, "pythons", NULL, json, cmd_show_pythons);
}

static int cmd_show_list(const cJSON *body)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "bubbles"), *b;
	static const char *const head[] = { "TAG", "NAME", "VERSION", "PATH" };
	struct cmd_tab t = { .ncol = 4 };

	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
		puts("no bubbles (create one with `omnipkg install SPEC`)");
		return CMD_OK;
	}
	cmd_tab_row(&t, head);
	cJSON_ArrayForEach(b, list) {
		const char *cells[4] = { cmd_str(b, "tag"), cmd_str(b, "name"), cmd_str(b, "version"),
					 cmd_str(b, "path") };

		cmd_tab_row(&t, cells);
	}
	cmd_tab_print(&t);
	return CMD_OK;
}

static int cmd_list(int argc, char **argv)
{
	int json, rc = cmd_json_only(argc, argv, &json);

	return rc ? (rc < 0 ? CMD_OK : rc)
		  : cmd_call(OMNI_CONNECT_AUTOSTART, "list", NULL, json, cmd_show_list);
}

static int cmd_show_workers(const cJSON *body)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "workers"), *w;
	static const char *const head[] = { "SPEC", "PYTHON", "PID", "STATE", "JOBS", "RSS", "LIMIT",
					    "IDLE" };
	struct cmd_tab t = { .ncol = 8 };

	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
		puts("no workers");
		return CMD_OK;
	}
	cmd_tab_row(&t, head);
	cJSON_ArrayForEach(w, list) {
		char spec[1100], pid[24], state[64], jobs[24], rss[32], limit[32] = "", idle[32];
		const char *cells[8];

		if (*cmd_str(w, "tag"))
			snprintf(spec, sizeof spec, "%s [%s]", cmd_str(w, "spec"), cmd_str(w, "tag"));
		else
			snprintf(spec, sizeof spec, "%s", cmd_str(w, "spec"));
		snprintf(pid, sizeof pid, "%.0f", cmd_num(w, "pid"));
		snprintf(jobs, sizeof jobs, "%.0f", cmd_num(w, "jobs"));
		snprintf(state, sizeof state, "%s%s", cmd_str(w, "state"),
			 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(w, "pinned")) ? ", pinned" : "");
		snprintf(rss, sizeof rss, "%.1f MiB", cmd_num(w, "rss_kb") / 1024.0);
		if (cmd_num(w, "max_memory_mb") > 0)
			snprintf(limit, sizeof limit, "%g MiB", cmd_num(w, "max_memory_mb"));
		cmd_duration(idle, sizeof idle, cmd_num(w, "idle_s"));
		cells[0] = spec;
		cells[1] = cmd_str(w, "python");
		cells[2] = pid;
		cells[3] = state;
		cells[4] = jobs;
		cells[5] = rss;
		cells[6] = limit;
		cells[7] = idle;
		cmd_tab_row(&t, cells);
	}
	cmd_tab_print(&t);
	return CMD_OK;
}

static int cmd_workers(int argc, char **argv)
{
	int json, rc = cmd_json_only(argc, argv, &json);

	return rc ? (rc < 0 ? CMD_OK : rc)
		  : cmd_call(OMNI_CONNECT_AUTOSTART, "workers", NULL, json, cmd_show_workers);
}

static int cmd_show_status(const cJSON *body)
{
	char up[32];

	cmd_duration(up, sizeof up, cmd_num(body, "uptime"));
	printf("omnipkgd %s running, pid %.0f, up %s\n", cmd_str(body, "version"),
	       cmd_num(body, "pid"), up);
	printf("socket   %s\n", cmd_str(body, "socket"));
	printf("workers  %.0f\n", cmd_num(body, "workers"));
	printf("jobs     %.0f (%.0f failed)\n", cmd_num(body, "jobs"), cmd_num(body, "jobs_failed"));
	return CMD_OK;
}

static int cmd_status(int argc, char **argv)
{
	int json, rc = cmd_json_only(argc, argv, &json);

	return rc ? (rc < 0 ? CMD_OK : rc)
		  : cmd_call(OMNI_CONNECT_AUTOSTART, "status", NULL, json, cmd_show_status);
}

/* ---- daemon start|stop|status ------------------------------------------ */

static const char *cmd_socket_path(char *buf, size_t n)
{
	if (cmd_socket)
		return cmd_socket;
	return omni_default_socket(buf, n) == 0 ? buf : NULL;
}

/* The pid a live daemon reports, or 0. */
static double cmd_daemon_pid(omni_client *c)
{
	omni_reply *r = NULL;
	double pid = 0;

	if (omni_status(c, &r) == 0)
		pid = omni_reply_num(r, "pid");
	omni_reply_free(r);
	return pid;
}

static int cmd_daemon_start(int argc, char **argv)
{
	omni_client *c = NULL;
	char err[1024];
	int rc, json;

	if ((rc = cmd_json_only(argc, argv, &json)) != 0)
		return rc < 0 ? CMD_OK : rc;
	rc = omni_connect_err(&c, cmd_socket, 0, err, sizeof err);
	if (rc == 0) {
		printf("omnipkgd is already running (pid %.0f)\n", cmd_daemon_pid(c));
		omni_close(c);
		return CMD_OK;
	}
	if (rc != -ECONNREFUSED)
		return cmd_fail(CMD_SYSFAIL, "%s", *err ? err : omni_strerror(rc));
	if ((rc = omni_daemon_start(cmd_socket, err, sizeof err)) < 0)
		return cmd_fail(CMD_SYSFAIL, "cannot start omnipkgd: %s",
				*err ? err : omni_strerror(rc));
	if ((rc = omni_connect_err(&c, cmd_socket, 0, err, sizeof err)) < 0)
		return cmd_fail(CMD_SYSFAIL, "omnipkgd started but: %s",
				*err ? err : omni_strerror(rc));
	printf("omnipkgd started (pid %.0f)\n", cmd_daemon_pid(c));
	omni_close(c);
	return CMD_OK;
}

static int cmd_daemon_stop(int argc, char **argv)
{
	omni_client *c = NULL;
	omni_reply *r = NULL;
	char err[1024];
	int rc, json;

	if ((rc = cmd_json_only(argc, argv, &json)) != 0)
		return rc < 0 ? CMD_OK : rc;
	rc = omni_connect_err(&c, cmd_socket, 0, err, sizeof err);
	if (rc == -ECONNREFUSED) {
		puts("omnipkgd is not running");
		return CMD_OK;
	}
	if (rc < 0)
		return cmd_fail(CMD_SYSFAIL, "%s", *err ? err : omni_strerror(rc));
	rc = omni_call(c, "shutdown", NULL, &r);
	/* a daemon may hang up before its reply gets out */
	if (rc < 0 && rc != -ECONNRESET) {
		omni_close(c);
		return cmd_fail(CMD_SYSFAIL, "shutdown: %s", omni_strerror(rc));
	}
	if (r && !omni_reply_ok(r)) {
		rc = cmd_reply_failed(r);
		omni_reply_free(r);
		omni_close(c);
		return rc;
	}
	/* A stopping daemon hangs up on its clients once its workers are gone:
	 * wait for that on this connection.  Not by connecting again: a socket
	 * handed to the daemon (socket activation) outlives it, and a connection
	 * to it would start the daemon again. */
	do {
		omni_reply_free(r);
		r = NULL;
	} while ((rc = omni_recv(c, &r, CMD_STOP_WAIT_MS)) == 0);
	omni_close(c);
	if (rc == -ETIMEDOUT)
		return cmd_fail(CMD_SYSFAIL, "omnipkgd did not stop within %d s",
				CMD_STOP_WAIT_MS / 1000);
	puts("omnipkgd stopped");
	return CMD_OK;
}

static int cmd_daemon_status(int argc, char **argv)
{
	char buf[4096];
	const char *path;
	int json, rc = cmd_json_only(argc, argv, &json);
	omni_client *c = NULL;
	char err[1024];

	if (rc)
		return rc < 0 ? CMD_OK : rc;
	rc = omni_connect_err(&c, cmd_socket, 0, err, sizeof err);
	if (rc < 0) {
		path = cmd_socket_path(buf, sizeof buf);
		if (rc == -ECONNREFUSED)
			printf("omnipkgd is not running (socket %s)\n", path ? path : "?");
		else
			printf("omnipkgd is not reachable at %s: %s\n", path ? path : "?",
			       *err ? err : omni_strerror(rc));
		return CMD_SYSFAIL;
	}
	omni_close(c);
	return cmd_call(0, "status", NULL, json, cmd_show_status);
}

/* Runs the subcommand argv[1] of cmd from its table; names lists them. */
static int cmd_sub(const char *cmd, const struct cmd_entry *sub, size_t n, const char *names,
		   int argc, char **argv)
{
	if (argc < 2)
		return cmd_usage_error(cmd, "needs %s", names);
	for (size_t i = 0; i < n; i++)
		if (strcmp(argv[1], sub[i].name) == 0)
			return sub[i].run(argc - 1, argv + 1);
	return cmd_usage_error(cmd, "unknown subcommand '%s' (%s)", argv[1], names);
}

static int cmd_daemon(int argc, char **argv)
{
	static const struct cmd_entry sub[] = {
		{ "start", cmd_daemon_start },
		{ "stop", cmd_daemon_stop },
		{ "status", cmd_daemon_status },
	};

	return cmd_sub("daemon", sub, sizeof sub / sizeof sub[0], "start, stop or status", argc, argv);
}

/* ---- shm create|ls|rm --------------------------------------------------- */

/* Options of shm create and rm (the globals only); CMD_OK, -1 after
 * --help, or a usage error. */
static int cmd_shm_opts(int argc, char **argv, int nargs, const char *what)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = cmd_getopt(argc, argv, ":h", lo)) != -1) {
		switch (ch) {
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); return -1;
		default: return CMD_USAGE;
		}
	}
	if (argc - optind != nargs)
		return cmd_usage_error("shm", "%s", what);
	return CMD_OK;
}

static int cmd_shm_create(int argc, char **argv)
{
	omni_client *c = NULL;
	omni_segment seg;
	uint64_t size;
	int rc;

	if ((rc = cmd_shm_opts(argc, argv, 2, "create needs NAME and SIZE")) != CMD_OK)
		return rc < 0 ? CMD_OK : rc;
	if (cmd_parse_size(argv[optind + 1], &size) < 0)
		return cmd_usage_error("shm", "SIZE wants bytes, or a number with K, M or G, "
				       "not '%s'", argv[optind + 1]);
	if ((rc = cmd_connect(&c, OMNI_CONNECT_AUTOSTART)) != CMD_OK)
		return rc;
	/* persistent: the segment must outlive this process's connection */
	rc = omni_shm_create(c, argv[optind], size, OMNI_SHM_PERSIST, &seg);
	omni_close(c);
	if (rc < 0)
		return cmd_fail(cmd_exit_errno(rc), "shm create %s: %s", argv[optind],
				rc == -EEXIST ? "a segment of that name exists"
				: rc == -EINVAL ? "not a segment name ([A-Za-z0-9._-], at most 128) "
						  "or size the daemon takes"
				: omni_strerror(rc));
	puts(seg.path);
	return CMD_OK;
}

static int cmd_show_shm(const cJSON *body)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "segments"), *g, *d;
	static const char *const head[] = { "NAME", "SIZE", "LEASES", "PERSIST", "DTYPE",
					    "SHAPE", "PATH" };
	struct cmd_tab t = { .ncol = 7 };

	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
		puts("no shared segments (create one with `omnipkg shm create NAME SIZE`)");
		return CMD_OK;
	}
	cmd_tab_row(&t, head);
	cJSON_ArrayForEach(g, list) {
		char size[32], leases[24], shape[256] = "";
		const char *cells[7];
		size_t k = 0;

		snprintf(size, sizeof size, "%.0f", cmd_num(g, "size"));
		snprintf(leases, sizeof leases, "%.0f", cmd_num(g, "leases"));
		cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(g, "shape"))
			if (k < sizeof shape)
				k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%.0f",
						      k ? "," : "", cJSON_IsNumber(d) ? d->valuedouble : 0);
		cells[0] = cmd_str(g, "name");
		cells[1] = size;
		cells[2] = leases;
		cells[3] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "persist")) ? "yes" : "no";
		cells[4] = cmd_str(g, "dtype");
		cells[5] = shape;
		cells[6] = cmd_str(g, "path");
		cmd_tab_row(&t, cells);
	}
	cmd_tab_print(&t);
	return CMD_OK;
}

static int cmd_shm_ls(int argc, char **argv)
{
	int json, rc = cmd_json_only(argc, argv, &json);

	return rc ? (rc < 0 ? CMD_OK : rc)
		  : cmd_call(OMNI_CONNECT_AUTOSTART, "shm_list", NULL, json, cmd_show_shm);
}

static int cmd_shm_rm(int argc, char **argv)
{
	omni_client *c = NULL;
	int rc;

	if ((rc = cmd_shm_opts(argc, argv, 1, "rm needs one NAME")) != CMD_OK)
		return rc < 0 ? CMD_OK : rc;
	if ((rc = cmd_connect(&c, 0)) != CMD_OK)
		return rc;
	rc = omni_shm_remove(c, argv[optind]);
	omni_close(c);
	if (rc < 0)
		return cmd_fail(cmd_exit_errno(rc), "shm rm %s: %s", argv[optind],
				rc == -ENOENT ? "no such segment" : omni_strerror(rc));
	return CMD_OK;
}

static int cmd_shm(int argc, char **argv)
{
	static const struct cmd_entry sub[] = {
		{ "create", cmd_shm_create },
		{ "ls", cmd_shm_ls },
		{ "rm", cmd_shm_rm },
	};

	return cmd_sub("shm", sub, sizeof sub / sizeof sub[0], "create, ls or rm", argc, argv);
}

/* ---- evict, idle-config ------------------------------------------------ */

static int cmd_show_evicted(const cJSON *body)
{
	const cJSON *p;

	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(body, "evicted"))
		if (cJSON_IsNumber(p))
			printf("%.0f\n", p->valuedouble);
	return CMD_OK;
}

static int cmd_evict(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "spec", required_argument, NULL, 's' },
		{ "python", required_argument, NULL, 'p' },
		{ "tag", required_argument, NULL, 'T' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *spec = NULL, *python = NULL, *tag = NULL;
	cJSON *args;
	int ch;

	while ((ch = cmd_getopt(argc, argv, ":h", lo)) != -1) {
		switch (ch) {
		case 's': spec = optarg; break;
		case 'p': python = optarg; break;
		case 'T': tag = optarg; break;
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); return CMD_OK;
		default: return CMD_USAGE;
		}
	}
	if (optind < argc)
		return cmd_usage_error("evict", "unexpected argument '%s'", argv[optind]);
	if (!spec)
		return cmd_usage_error("evict", "--spec SPEC is required");
	if (!(args = cJSON_CreateObject()) || !cJSON_AddStringToObject(args, "spec", spec) ||
	    (python && !cJSON_AddStringToObject(args, "python", python)) ||
	    (tag && !cJSON_AddStringToObject(args, "tag", tag))) {
		cJSON_Delete(args);
		return cmd_fail(CMD_SYSFAIL, "out of memory");
	}
	/* Never starts a daemon: a new one has no worker to stop. */
	return cmd_call(0, "evict", args, 0, cmd_show_evicted);
}

static int cmd_show_idle_config(const cJSON *body)
{
	char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(body, "config"));

	if (!text)
		return cmd_fail(CMD_SYSFAIL, "idle-config: no config in the reply");
	puts(text);
	cJSON_free(text);
	return CMD_OK;
}

static int cmd_idle_config(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "python", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *python = NULL, *count = NULL;
	cJSON *args = NULL;
	char *end;
	long n = 0;
	int ch;

	while ((ch = cmd_getopt(argc, argv, ":h", lo)) != -1) {
		switch (ch) {
		case 'p': python = optarg; break;
		case 'n': count = optarg; break;
		case 'S': cmd_socket = optarg; break;
		case 'h': fputs(cmd_usage_text, stdout); return CMD_OK;
		default: return CMD_USAGE;
		}
	}
	if (optind < argc)
		return cmd_usage_error("idle-config", "unexpected argument '%s'", argv[optind]);
	if (!python != !count)
		return cmd_usage_error("idle-config", "--python and --count go together");
	if (count) {
		errno = 0;
		n = strtol(count, &end, 10);
		/* Its range is the daemon's to judge (reason "badarg"). */
		if (errno || end == count || *end)
			return cmd_usage_error("idle-config", "--count wants an integer, not '%s'", count);
		if (!(args = cJSON_CreateObject()) || !cJSON_AddStringToObject(args, "python", python) ||
		    !cJSON_AddNumberToObject(args, "count", (double)n)) {
			cJSON_Delete(args);
			return cmd_fail(CMD_SYSFAIL, "out of memory");
		}
	}
	return cmd_call(OMNI_CONNECT_AUTOSTART, "idle_config", args, 0, cmd_show_idle_config);
}

/* ---- help, dispatch --------------------------------------------------- */

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fputs(cmd_usage_text, stdout);
	return CMD_OK;
}

static const struct cmd_entry cmd_table[] = {
	{ "install", cmd_install },
	{ "exec", cmd_exec },
	{ "pythons", cmd_pythons },
	{ "list", cmd_list },
	{ "workers", cmd_workers },
	{ "status", cmd_status },
	{ "daemon", cmd_daemon },
	{ "shm", cmd_shm },
	{ "evict", cmd_evict },
	{ "idle-config", cmd_idle_config },
	{ "help", cmd_help },
};

int main(int argc, char **argv)
{
	const char *env = getenv("OMNIPKG_SOCKET");
	int i;

	if (env && *env)
		cmd_socket = env;
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--socket") == 0) {
			if (++i == argc)
				return cmd_usage_error(NULL, "--socket needs a path");
			cmd_socket = argv[i];
		} else if (strncmp(argv[i], "--socket=", 9) == 0) {
			cmd_socket = argv[i] + 9;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("omnipkg %s\n", omni_version());
			return CMD_OK;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(cmd_usage_text, stdout);
			return CMD_OK;
		} else {
			return cmd_usage_error(NULL, "unknown option %s", argv[i]);
		}
	}
	if (i == argc) {
		fputs(cmd_usage_text, stderr);
		return CMD_USAGE;
	}
	if (cmd_socket && !*cmd_socket)
		return cmd_usage_error(NULL, "--socket needs a path");
	for (size_t k = 0; k < sizeof cmd_table / sizeof cmd_table[0]; k++) {
		if (strcmp(argv[i], cmd_table[k].name) == 0) {
			optind = 0;   /* getopt starts over on the command's own arguments */
			return cmd_table[k].run(argc - i, argv + i);
		}
	}
	return cmd_usage_error(NULL, "unknown command '%s'", argv[i]);
}
