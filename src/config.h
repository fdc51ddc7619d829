/*
 * config.h - the daemon's settings.
 *
 * Read from a JSON file: --config PATH, else $OMNIPKG_CONFIG, else
 * <home>/config.json (absent: defaults).  Unknown keys are an error, so a
 * typo is reported instead of ignored.
 *
 *   {
 *     "pythons": ["/opt/python3.12/bin/python3"],   extra interpreters, first in precedence
 *     "default_python": "3.11",
 *     "job_timeout": 300,        seconds a job may run (per request: "timeout")
 *     "idle_timeout": 600,       seconds before an idle worker is stopped (0: never)
 *     "max_workers": 32,         live workers; only idle ones are evicted (LRU)
 *     "output_cap": 1048576,     bytes of stdout and of stderr kept per job
 *     "zygote": true,            fork workers from a warm template per interpreter
 *     "cgroups": true,           one cgroup v2 group per worker where possible;
 *                                false: the /proc fallback (and RLIMIT_AS)
 *     "prewarm": [{"spec": "numpy==1.26.4", "python": "3.11"}],
 *     "mount": "/omnipkg",       FUSE mount point ("" : none)
 *     "shm_quota": 4294967296    bytes of shared segments in all
 *   }
 */
#ifndef OMNI_CONFIG_H
#define OMNI_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include "interp.h"
#include "spec.h"

#define CONFIG_MAX_PYTHONS 32
#define CONFIG_MAX_PREWARM 32

struct config_prewarm {
	char spec[SPEC_MAX_LEN];
	char python[PATH_MAX];
};

struct config {
	char pythons[CONFIG_MAX_PYTHONS][PATH_MAX];
	size_t npythons;
	char default_python[PATH_MAX];
	double job_timeout;
	double idle_timeout;
	int max_workers;
	size_t output_cap;
	int zygote;
	int cgroups;
	struct config_prewarm prewarm[CONFIG_MAX_PREWARM];
	size_t nprewarm;
	char mount[PATH_MAX];
	size_t shm_quota;
};

/* Fills c with defaults. */
void config_defaults(struct config *c);

/* Loads path (NULL: $OMNIPKG_CONFIG, else <home>/config.json, where a
 * missing file means defaults).  0 or -errno with a reason in err. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* interp_discover with the config's interpreters and default, $PYENV_ROOT
 * (else ~/.pyenv) and $PATH.  Returns the count or -errno. */
int config_discover_pythons(const struct config *c, struct interp_set *set);

#endif
