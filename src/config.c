/*
 * config.c - the daemon's settings file (config.h).
 *
 * Every key is checked for type and range as it is read, and the result
 * only replaces the caller's settings when the whole file is good, so a
 * bad edit can never leave the daemon half-configured.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "paths.h"
#include "proto.h"

#define CONFIG_MAX_FILE (1u << 20)

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->job_timeout = 300;
	c->idle_timeout = 600;
	c->max_workers = 32;
	c->output_cap = 1u << 20;
	c->zygote = 1;
	c->cgroups = 1;
	c->shm_quota = (size_t)4 << 30;
}

static int config_fail(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	int o;

	if (err && errlen) {
		o = snprintf(err, errlen, "config %s: ", file);
		if (o >= 0 && (size_t)o < errlen) {
			va_start(ap, fmt);
			vsnprintf(err + o, errlen - (size_t)o, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

/* A number in [lo, hi]; integral when whole is set. */
static int config_num(const cJSON *j, double lo, double hi, int whole, double *out)
{
	double d = j->valuedouble;

	/* Callers keep hi within int64_t, so the cast is defined once in range. */
	if (!cJSON_IsNumber(j) || !(d >= lo && d <= hi) || (whole && (double)(int64_t)d != d))
		return -1;
	*out = d;
	return 0;
}

static int config_str(const cJSON *j, char *out, size_t n)
{
	if (!cJSON_IsString(j) || !j->valuestring || strlen(j->valuestring) >= n)
		return -1;
	strcpy(out, j->valuestring);
	return 0;
}

/* An interpreter name as interp_resolve takes it: "3.11", "3.11.7" or absolute. */
static int config_python_name(const cJSON *j, char *out, size_t n)
{
	if (config_str(j, out, n) < 0)
		return -1;
	if (out[0] == '\0' || out[0] == '/')
		return 0;
	return interp_parse_name(out, NULL, NULL, NULL) < 0 ? -1 : 0;
}

static int config_pythons(struct config *c, const cJSON *j, const char *file, char *err, size_t errlen)
{
	const cJSON *e;

	if (!cJSON_IsArray(j))
		return config_fail(err, errlen, file, "\"pythons\" must be an array of absolute paths");
	cJSON_ArrayForEach(e, j) {
		if (c->npythons == CONFIG_MAX_PYTHONS)
			return config_fail(err, errlen, file, "\"pythons\" holds more than %d entries",
					   CONFIG_MAX_PYTHONS);
		if (config_str(e, c->pythons[c->npythons], PATH_MAX) < 0 ||
		    c->pythons[c->npythons][0] != '/')
			return config_fail(err, errlen, file,
					   "\"pythons\"[%zu] must be an absolute path string", c->npythons);
		c->npythons++;
	}
	return 0;
}

static int config_prewarm(struct config *c, const cJSON *j, const char *file, char *err, size_t errlen)
{
	const cJSON *e, *k;
	char why[256];
	struct spec s;

	if (!cJSON_IsArray(j))
		return config_fail(err, errlen, file, "\"prewarm\" must be an array of objects");
	cJSON_ArrayForEach(e, j) {
		struct config_prewarm *p = &c->prewarm[c->nprewarm];
		size_t i = c->nprewarm;
		int have_spec = 0;

		if (i == CONFIG_MAX_PREWARM)
			return config_fail(err, errlen, file, "\"prewarm\" holds more than %d entries",
					   CONFIG_MAX_PREWARM);
		if (!cJSON_IsObject(e))
			return config_fail(err, errlen, file, "\"prewarm\"[%zu] must be an object", i);
		cJSON_ArrayForEach(k, e) {
			if (strcmp(k->string, "spec") == 0) {
				if (!cJSON_IsString(k) ||
				    spec_parse(k->valuestring, strlen(k->valuestring), &s, why, sizeof(why)) < 0)
					return config_fail(err, errlen, file, "\"prewarm\"[%zu].\"spec\": %s", i,
							   cJSON_IsString(k) ? why : "must be a string");
				strcpy(p->spec, s.canon);
				have_spec = 1;
			} else if (strcmp(k->string, "python") == 0) {
				if (config_python_name(k, p->python, sizeof(p->python)) < 0)
					return config_fail(err, errlen, file,
							   "\"prewarm\"[%zu].\"python\" must be a python name (\"3.11\", \"3.11.7\", \"py311\", \"python3.11\", \"python3\") or an absolute path",
							   i);
			} else {
				return config_fail(err, errlen, file, "unknown key \"prewarm\"[%zu].\"%.64s\"",
						   i, k->string);
			}
		}
		if (!have_spec)
			return config_fail(err, errlen, file, "\"prewarm\"[%zu] has no \"spec\"", i);
		c->nprewarm++;
	}
	return 0;
}

static int config_key(struct config *c, const cJSON *j, const char *file, char *err, size_t errlen)
{
	const char *k = j->string;
	double d;

	if (strcmp(k, "pythons") == 0)
		return config_pythons(c, j, file, err, errlen);
	if (strcmp(k, "prewarm") == 0)
		return config_prewarm(c, j, file, err, errlen);
	if (strcmp(k, "default_python") == 0) {
		if (config_python_name(j, c->default_python, sizeof(c->default_python)) < 0)
			return config_fail(err, errlen, file,
					   "\"default_python\" must be a python name (\"3.11\", \"3.11.7\", \"py311\", \"python3.11\", \"python3\") or an absolute path");
	} else if (strcmp(k, "job_timeout") == 0) {
		if (config_num(j, 0.001, 1e9, 0, &d) < 0)
			return config_fail(err, errlen, file, "\"job_timeout\" must be a number of seconds > 0");
		c->job_timeout = d;
	} else if (strcmp(k, "idle_timeout") == 0) {
		if (config_num(j, 0, 1e9, 0, &d) < 0)
			return config_fail(err, errlen, file, "\"idle_timeout\" must be a number of seconds >= 0");
		c->idle_timeout = d;
	} else if (strcmp(k, "max_workers") == 0) {
		if (config_num(j, 1, 4096, 1, &d) < 0)
			return config_fail(err, errlen, file, "\"max_workers\" must be an integer from 1 to 4096");
		c->max_workers = (int)d;
	} else if (strcmp(k, "output_cap") == 0) {
		/* Both streams travel back in one reply frame. */
		if (config_num(j, 1, PROTO_MAX_FRAME / 2, 1, &d) < 0)
			return config_fail(err, errlen, file, "\"output_cap\" must be an integer from 1 to %u",
					   PROTO_MAX_FRAME / 2);
		c->output_cap = (size_t)d;
	} else if (strcmp(k, "zygote") == 0) {
		if (!cJSON_IsBool(j))
			return config_fail(err, errlen, file, "\"zygote\" must be true or false");
		c->zygote = cJSON_IsTrue(j);
	} else if (strcmp(k, "cgroups") == 0) {
		if (!cJSON_IsBool(j))
			return config_fail(err, errlen, file, "\"cgroups\" must be true or false");
		c->cgroups = cJSON_IsTrue(j);
	} else if (strcmp(k, "mount") == 0) {
		if (config_str(j, c->mount, sizeof(c->mount)) < 0 || (c->mount[0] && c->mount[0] != '/'))
			return config_fail(err, errlen, file, "\"mount\" must be \"\" or an absolute path");
	} else if (strcmp(k, "shm_quota") == 0) {
		if (config_num(j, 0, PROTO_MAX_ID, 1, &d) < 0)
			return config_fail(err, errlen, file, "\"shm_quota\" must be an integer number of bytes >= 0");
		c->shm_quota = (size_t)d;
	} else {
		return config_fail(err, errlen, file, "unknown key \"%.64s\"", k);
	}
	return 0;
}

static int config_parse(struct config *c, const char *text, size_t len, const char *file,
			char *err, size_t errlen)
{
	const char *end = NULL;
	const cJSON *j, *k;
	cJSON *root;
	int rc = 0;

	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root)
		return config_fail(err, errlen, file, "invalid JSON near byte %ld",
				   end ? (long)(end - text) : 0L);
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return config_fail(err, errlen, file, "must hold one JSON object");
	}
	cJSON_ArrayForEach(j, root) {
		/* cJSON keeps repeated keys; the second would silently win. */
		for (k = root->child; k != j; k = k->next)
			if (strcmp(k->string, j->string) == 0)
				break;
		if (k != j)
			rc = config_fail(err, errlen, file, "key \"%.64s\" appears twice", j->string);
		else
			rc = config_key(c, j, file, err, errlen);
		if (rc < 0)
			break;
	}
	cJSON_Delete(root);
	return rc;
}

static int config_read(const char *file, char **text, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(file, "rb");
	char *buf;
	size_t n;
	int e;

	if (!f) {
		e = errno;
		config_fail(err, errlen, file, "%s", strerror(e));
		return -e;
	}
	buf = malloc(CONFIG_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
	e = ferror(f);
	fclose(f);
	if (e || n > CONFIG_MAX_FILE) {
		free(buf);
		if (e) {
			config_fail(err, errlen, file, "read error");
			return -EIO;
		}
		config_fail(err, errlen, file, "larger than %u bytes", CONFIG_MAX_FILE);
		return -EFBIG;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	char home[PATH_MAX], file[PATH_MAX], *text = NULL;
	struct config *tmp;
	int optional = 0, rc;
	size_t len = 0;

	if (!path || !path[0])
		path = getenv("OMNIPKG_CONFIG");
	if (!path || !path[0]) {
		if ((rc = paths_home(home, sizeof(home))) < 0 ||
		    snprintf(file, sizeof(file), "%s/config.json", home) >= (int)sizeof(file)) {
			config_defaults(c);
			return 0;
		}
		path = file;
		optional = 1;
	}
	rc = config_read(path, &text, &len, err, errlen);
	if (rc == -ENOENT && optional) {
		config_defaults(c);
		if (err && errlen)
			err[0] = '\0';
		return 0;
	}
	if (rc < 0)
		return rc;
	if (!(tmp = malloc(sizeof(*tmp)))) {
		free(text);
		return -ENOMEM;
	}
	config_defaults(tmp);
	rc = config_parse(tmp, text, len, path, err, errlen);
	if (rc == 0)
		memcpy(c, tmp, sizeof(*c));
	free(tmp);
	free(text);
	return rc;
}

int config_discover_pythons(const struct config *c, struct interp_set *set)
{
	const char *paths[CONFIG_MAX_PYTHONS];
	const char *root = getenv("PYENV_ROOT"), *home;
	char buf[PATH_MAX];

	for (size_t i = 0; i < c->npythons; i++)
		paths[i] = c->pythons[i];
	if (!root || !root[0]) {
		home = getenv("HOME");
		root = NULL;
		if (home && home[0] == '/' && snprintf(buf, sizeof(buf), "%s/.pyenv", home) < (int)sizeof(buf))
			root = buf;
	}
	return interp_discover(set, paths, c->npythons, root, getenv("PATH"),
			       c->default_python[0] ? c->default_python : NULL);
}
