/*
 * logx.h - the daemon's log: one line per event, to stderr (foreground)
 * or to the log file that --daemon redirects stderr into.
 */
#ifndef OMNI_LOGX_H
#define OMNI_LOGX_H

enum { LOGX_ERR = 0, LOGX_WARN = 1, LOGX_INFO = 2, LOGX_DEBUG = 3 };

void logx_level(int level);   /* messages above it are dropped; default INFO */
void logx(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
