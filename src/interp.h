/*
 * interp.h - Python interpreters: discovery and resolution.
 *
 * Sources, in precedence order: the config file's list of interpreter
 * paths, then $PYENV_ROOT/versions/<v>/bin/python, then python3 and
 * python3.N on PATH (real ELF binaries only: pyenv shims are skipped).
 * Entries are de-duplicated by real path, first source wins (a venv's
 * python, below, by its path).  Python 2 is skipped (the worker runtime is
 * Python 3), and so is a configured path that does not run as an
 * interpreter.
 *
 * A virtual environment's python (a path whose directory or that
 * directory's parent holds pyvenv.cfg, as <venv>/bin/python) is an
 * interpreter of its own, never collapsed into the one it links to: it
 * keeps its path as given (CPython finds the venv, and so its
 * site-packages, from that path), so it gets its own zygote and workers.
 * It matches only an entry with the very same path; two names of one venv
 * are two interpreters.
 *
 * A request names an interpreter as
 *   "3.11", "py311", "python3.11"  the highest-precedence entry of that
 *                                  minor version; within a source, the
 *                                  highest micro ("pyXY": a one-digit
 *                                  major, then a minor of one or two digits)
 *   "3.11.7"                       exactly that version
 *   "python3"                      the newest 3.x minor discovered, then
 *                                  chosen as "3.X" is
 *   an absolute path               that interpreter (probed if not
 *                                  discovered; a venv's python as above,
 *                                  with the version and tag of the
 *                                  interpreter it runs)
 * Anything else is refused, naming these forms and what is available.
 * NULL or "" means the default: the config's "default_python", else the
 * first python3 on PATH, else the newest discovered.
 */
#ifndef OMNI_INTERP_H
#define OMNI_INTERP_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

enum interp_source { INTERP_CONFIG = 0, INTERP_PYENV = 1, INTERP_PATH = 2, INTERP_EXPLICIT = 3 };

struct interp {
	char version[32];        /* "3.11.7" */
	int major, minor, micro;
	char path[PATH_MAX];     /* absolute, as found or given (not realpath'd) */
	char tag[16];            /* ABI tag of bubbles: "cp311" */
	int source;              /* enum interp_source */
};

struct interp_set {
	struct interp *v;
	size_t n, cap;
	int default_idx;         /* -1 when none */
};

/*
 * Fills set (zero it first) from the sources above.  config_paths may be
 * NULL; default_name may be NULL.  pyenv_root or path_env NULL skip that
 * source.  Returns the number found or -errno.  When default_name names
 * no interpreter, default_idx stays -1 (so a request for the default fails
 * with a reason instead of silently using another interpreter) while
 * explicit requests still resolve.  Probing runs interpreters
 * synchronously: call it at start-up, not from an event handler.
 */
int interp_discover(struct interp_set *set, const char *const *config_paths, size_t nconfig,
		    const char *pyenv_root, const char *path_env, const char *default_name);

/* Adds one entry (no probe) unless the same interpreter (by real path; a
 * venv's python by its path) is already present. 0 or -errno. */
int interp_add(struct interp_set *set, const struct interp *it);

/* Runs `path -E -s -c ...` to read its version and fill out; 0 or -errno.
 * Blocks (up to 10 s): not for an event handler. */
int interp_probe(const char *path, struct interp *out);
/* The same in steps, for an event loop: starts the probe (its version is
 * printed on *fd, caller closes; caller reaps *pid), then parses what it
 * printed (NUL-terminated, modified) with its exit status.  0 or -errno. */
int interp_probe_start(const char *path, pid_t *pid, int *fd);
int interp_probe_parse(const char *path, char *out_text, int status, struct interp *out);
/* 0, or -EINVAL with a reason when a probed interpreter cannot serve. */
int interp_check_probed(const struct interp *it, char *err, size_t errlen);

/* Parses "3.11" or "3.11.7" into parts; returns the number of parts (2 or 3) or -EINVAL.
 * *micro is -1 for two parts.  Any of the out pointers may be NULL. */
int interp_parse_version(const char *s, int *major, int *minor, int *micro);

/* Parses a name that is not a path ("3.11", "3.11.7", "py311",
 * "python3.11", "python3"; see above) into parts: returns 1 for "python3"
 * (*minor is -1), else as interp_parse_version; -EINVAL for any other. */
int interp_parse_name(const char *s, int *major, int *minor, int *micro);

/* Is path (absolute) a virtual environment's python (see above)? */
int interp_is_venv(const char *path);

/*
 * Resolves want (see above) into out (copied).  Returns 0, or -ENOENT /
 * -EINVAL with a readable reason in err listing what is available.
 */
int interp_resolve(const struct interp_set *set, const char *want, struct interp *out,
		   char *err, size_t errlen);

/* interp_resolve without probing: -EAGAIN (no reason) for an absolute
 * path that is not among the discovered ones. */
int interp_lookup(const struct interp_set *set, const char *want, struct interp *out,
		  char *err, size_t errlen);

/* Is set->v[i] the entry its short name ("3.11") resolves to?  The one
 * answer every listing of interpreters uses. */
int interp_is_short_target(const struct interp_set *set, size_t i);

void interp_set_free(struct interp_set *set);

#endif
