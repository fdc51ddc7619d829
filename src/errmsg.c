/* errmsg.c - readable reasons next to -errno (see errmsg.h). */
#include <stdarg.h>
#include <stdio.h>
#include "errmsg.h"

int errmsg_set(int rc, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}
