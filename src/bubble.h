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
 * Which bubble serves each item of spec s for interpreter py:
 *
 *   name==version  <home>/bubbles/<tag>/<name>-<version>, which must exist
 *   unpinned       the newest bubble <name>-<version> under <tag> whose
 *                  version the item allows (spec_item_allows: every
 *                  constraint holds, PEP 440 order, pre-releases only when
 *                  a constraint names one, a directory whose version is
 *                  not PEP 440 never); of two equal versions ("2.0",
 *                  "2.0.0"), the first by strcmp.  When none is allowed,
 *                  the item is served by py's own environment: no
 *                  directory for it.
 *
 * Fills paths[i] (each 4096 bytes) with the bubble dirs, in spec order,
 * items served by the environment left out, and returns their count.
 * resolved (may be NULL) gets the resolved spec: an item with a bubble as
 * "name==version", one served by the environment as the bare "name"; its
 * canon is the worker key, so "numpy>=1.26" and "numpy==2.2.6" share a
 * worker when they resolve to the same bubble, and "rich" served by the
 * environment is still not "base".  A bubble created later changes what
 * the same spec resolves to.  Errors: -ENOENT when a pin's bubble is
 * missing, naming the `omnipkg install` that creates it; -ENAMETOOLONG;
 * another -errno when the tag dir cannot be read; each with err set.
 */
int bubble_resolve_spec(const char *home, const struct interp *py, const struct spec *s,
			struct spec *resolved, char paths[][4096], char *err, size_t errlen);

/* bubble_resolve_spec without the resolved spec. */
int bubble_resolve(const char *home, const struct interp *py, const struct spec *s,
		   char paths[][4096], char *err, size_t errlen);

/*
 * Installs every item of s for py (each must be pinned, else -EINVAL
 * before anything runs): runs `py -m pip install --target TMP`
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
