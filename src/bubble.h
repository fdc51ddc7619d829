/*
 * bubble.h - bubbles: one `pip install --target` tree per package version
 * and interpreter ABI, at <home>/bubbles/<interp tag>/<name>-<version>/.
 */
#ifndef OMNI_BUBBLE_H
#define OMNI_BUBBLE_H

#include <stddef.h>
#include "interp.h"
#include "spec.h"

/* <home>/bubbles/<tag>/<name>-<version>; 0 or -ENAMETOOLONG. */
int bubble_path(const char *home, const char *tag, const struct spec_item *it, char *buf, size_t n);

/*
 * Fills paths[i] (each PATH_MAX bytes) with the bubble dir of every item of
 * s for interpreter py, in spec order.  Returns the count, or -ENOENT with
 * err naming the missing bubble and the `omnipkg install` that creates it.
 */
int bubble_resolve(const char *home, const struct interp *py, const struct spec *s,
		   char paths[][4096], char *err, size_t errlen);

/*
 * Installs every item of s for py: runs `py -m pip install --target TMP`
 * (output shown unless quiet), then renames TMP to the bubble dir, so a
 * bubble is either whole or absent.  An existing bubble is kept (0).
 * Blocks; for the CLI.  Returns 0 or -errno with a reason in err.
 */
int bubble_install(const char *home, const struct interp *py, const struct spec *s,
		   int quiet, char *err, size_t errlen);

/* Calls cb for every bubble under home; stops early when cb returns nonzero. */
typedef int (*bubble_cb)(const char *tag, const char *name, const char *version,
			 const char *path, void *ud);
int bubble_list(const char *home, bubble_cb cb, void *ud);

#endif
