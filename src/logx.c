/* logx.c - timestamped log lines on stderr; one write() per line so lines
 * from the daemon never interleave mid-line with worker output. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "logx.h"

static int logx_max = LOGX_INFO;

void logx_level(int level) { logx_max = level; }

void logx(int level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	if (level > logx_max)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n = (int)strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
	n += snprintf(line + n, sizeof line - n, ".%03ld omnipkgd[%d] %s: ",
		      ts.tv_nsec / 1000000, (int)getpid(), names[level < 0 ? 0 : level > 3 ? 3 : level]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	n = m < 0 ? n : (n + m > (int)sizeof line - 2 ? (int)sizeof line - 2 : n + m);
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}
