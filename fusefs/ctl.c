/*
 * ctl.c - parsing of <mount>/ctl lines (see ctl.h).  Pure: acting on a
 * command is the caller's business, so the parser can be tested and
 * fuzzed without a registry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "ctl.h"
#include "shm.h"

/* "<digits>[KMG]" in bytes; -EINVAL when malformed or over INT64_MAX. */
static int ctl_size(const char *s, int64_t *out)
{
	unsigned long long v;
	char *end;
	int sh = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'K' || *end == 'k')
		sh = 10;
	else if (*end == 'M' || *end == 'm')
		sh = 20;
	else if (*end == 'G' || *end == 'g')
		sh = 30;
	/* strtoull takes a sign and leading blanks: only digits are a size. */
	if (errno || end == s || s[0] < '0' || s[0] > '9' || (sh && end[1]) || (!sh && *end) ||
	    v > ((unsigned long long)INT64_MAX >> sh))
		return -EINVAL;
	*out = (int64_t)(v << sh);
	return 0;
}

int ctl_parse(char *line, struct ctl_cmd *out)
{
	char *save = NULL, *w[5];
	int n = 0;

	memset(out, 0, sizeof(*out));
	for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (n == 0 && t[0] == '#')
			return 0;
		if (n == 5)
			return -EINVAL;
		w[n++] = t;
	}
	if (n == 0)
		return 0;
	if (n == 4 && strcmp(w[0], "shm") == 0 && strcmp(w[1], "create") == 0) {
		if (ctl_size(w[3], &out->size) < 0 || !shm_name_ok(w[2]))
			return -EINVAL;
		out->op = CTL_SHM_CREATE;
		out->name = w[2];
		return 0;
	}
	if (n == 3 && strcmp(w[0], "shm") == 0 && strcmp(w[1], "rm") == 0) {
		if (!shm_name_ok(w[2]))
			return -ENOENT;
		out->op = CTL_SHM_RM;
		out->name = w[2];
		return 0;
	}
	return -EINVAL;
}
