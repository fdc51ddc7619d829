/*
 * tree.c - names, attributes and listings of the control filesystem (see
 * tree.h).
 *
 *   $ ls /omnipkg/specs/numpy==1.26.4         # interpreters with that bubble
 *   3.11  3.9
 *   $ stat -c %s /omnipkg/specs/base/3.11/result
 *   457                                       # 0 while the job runs
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bubble.h"
#include "spec.h"
#include "tree.h"

static const char *const fixed_name[K_NFIXED] = {
	[K_SPECS] = "specs", [K_JOBS] = "jobs", [K_SHMDIR] = "shm", [K_PYDIR] = "pythons",
	[K_WORKERS] = "workers", [K_STATS] = "stats", [K_CTL] = "ctl",
};
static const char *const file_name[JF_N] = {
	[JF_EXEC] = "exec", [JF_CODE] = "code", [JF_STDOUT] = "stdout", [JF_STDERR] = "stderr",
	[JF_RESULT] = "result", [JF_STATUS] = "status", [JF_ERROR] = "error",
};

static int file_index(const char *name, int with_exec, int with_code)
{
	for (int f = 0; f < JF_N; f++)
		if (strcmp(name, file_name[f]) == 0 && (f != JF_EXEC || with_exec) &&
		    (f != JF_CODE || with_code))
			return f;
	return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s < '0' || *s > '9' || (s[0] == '0' && s[1]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* Does the canonical spec have bubbles for this interpreter ("base" always). */
static int has_bubble(struct tree *t, const char *spec, const struct interp *py)
{
	static char paths[SPEC_MAX_ITEMS][4096];
	struct spec s;

	if (spec_parse(spec, strlen(spec), &s, NULL, 0) < 0)
		return 0;
	return s.n == 0 || bubble_resolve(core_home(t->core), py, &s, paths, NULL, 0) >= 0;
}

static int worker_is(const struct pool_worker_info *w, void *ud)
{
	return w->pid > 0 && (uint64_t)w->pid == *(const uint64_t *)ud;
}

/* ---- generated content ---- */

static int ctl_segment(const struct shm_info *g, void *ud)
{
	fprintf(ud, "segment %s %lld %s %s %d %s\n", g->name, (long long)g->size,
		*g->dtype ? g->dtype : "-", *g->shape ? g->shape : "-", g->leases,
		g->owner ? "client" : "persist");
	return 0;
}

char *tree_ctl_text(struct tree *t)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	if (!f)
		return NULL;
	fprintf(f, "# write one command per line:\n"
		"#   shm create NAME SIZE    make or resize a segment (SIZE: bytes, or with K, M, G)\n"
		"#   shm rm NAME             remove a segment\n"
		"shm_dir %s\n"
		"# segment NAME SIZE DTYPE SHAPE LEASES OWNER\n", shm_dir(t->shm));
	shm_list(t->shm, ctl_segment, f);
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

char *tree_worker_text(struct tree *t, uint64_t pid)
{
	cJSON *w = pid <= INT32_MAX ? core_worker_json(t->core, (pid_t)pid) : NULL, *it;
	char *s = NULL;
	size_t n = 0;
	FILE *f;

	if (!w || !(f = open_memstream(&s, &n))) {
		cJSON_Delete(w);
		return NULL;
	}
	cJSON_ArrayForEach(it, w) {
		if (cJSON_IsString(it))
			fprintf(f, "%s: %s\n", it->string, it->valuestring);
		else if (cJSON_IsNumber(it))
			fprintf(f, "%s: %.15g\n", it->string, it->valuedouble);
		else if (cJSON_IsBool(it))
			fprintf(f, "%s: %s\n", it->string, cJSON_IsTrue(it) ? "true" : "false");
	}
	fclose(f);
	cJSON_Delete(w);
	return s;
}

/* The job a context or job file shows; borrowed; NULL: none. */
struct fsjob *tree_job(struct tree *t, const struct node *n)
{
	if (n->kind == K_CTXFILE)
		return fsjobs_latest(t->jobs, n->spec, n->py);
	return fsjobs_get(t->jobs, n->num);
}

/* ---- attributes ---- */

int tree_kind(struct tree *t, fuse_ino_t ino, struct node **np)
{
	*np = NULL;
	if (ino < K_NFIXED)
		return (int)ino;
	*np = node_get(t->nodes, ino);
	return *np ? (*np)->kind : 0;
}

int tree_attr(struct tree *t, fuse_ino_t ino, struct stat *st)
{
	struct node *n = ino < K_NFIXED ? NULL : node_get(t->nodes, ino);
	int kind = ino < K_NFIXED ? (int)ino : n ? n->kind : 0;
	char path[PATH_MAX], *text = NULL;
	struct fsjob *j;
	size_t len;

	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_nlink = 1;
	st->st_blksize = 4096;
	st->st_atime = st->st_mtime = st->st_ctime = t->t_wall;
	switch (kind) {
	case K_ROOT: case K_SPECS: case K_JOBS: case K_PYDIR: case K_WORKERS:
	case K_SPEC: case K_CTX: case K_WORKER:
		st->st_mode = S_IFDIR | 0500;
		st->st_nlink = 2;
		break;
	case K_JOB:
		if (!fsjobs_get(t->jobs, n->num))
			return -ENOENT;
		st->st_mode = S_IFDIR | 0500;
		st->st_nlink = 2;
		break;
	case K_SHMDIR:
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		break;
	case K_STATS:
		text = t->stats(t->ud);
		st->st_mode = S_IFREG | 0400;
		break;
	case K_CTL:
		text = tree_ctl_text(t);
		st->st_mode = S_IFREG | 0600;
		break;
	case K_WSTATUS:
		if (!(text = tree_worker_text(t, n->num)))
			return -ENOENT;
		st->st_mode = S_IFREG | 0400;
		break;
	case K_CTXFILE:
	case K_JOBFILE:
		st->st_mode = S_IFREG | (n->file == JF_EXEC ? 0600 : 0400);
		j = tree_job(t, n);
		if (!j && kind == K_JOBFILE)
			return -ENOENT;
		if (n->file == JF_EXEC)
			break;
		/* Unfinished output is size 0 (and read with direct I/O). */
		if (!j || fsjob_finished(j) || n->file == JF_STATUS || n->file == JF_CODE) {
			fsjob_text(j, n->file, &len);
			st->st_size = (off_t)len;
		}
		break;
	case K_SHMLINK:
	case K_SHMFILE:
		if (shm_path(t->shm, n->name, path, sizeof path) < 0)
			return -ENOENT;
		if (kind == K_SHMFILE) {
			struct stat b;

			if (stat(path, &b) < 0)
				return -ENOENT;
			st->st_mode = S_IFREG | 0600;
			st->st_size = b.st_size;
			st->st_blocks = b.st_blocks;
			st->st_mtim = b.st_mtim;
			break;
		}
		if (access(path, F_OK) < 0)
			return -ENOENT;
		st->st_mode = S_IFLNK | 0777;
		st->st_size = (off_t)strlen(path);
		break;
	case K_PYLINK:
		st->st_mode = S_IFLNK | 0777;
		st->st_size = (off_t)strlen(n->py);
		break;
	default:
		return -ENOENT;
	}
	if (text) {
		st->st_size = (off_t)strlen(text);
		free(text);
	}
	st->st_blocks = st->st_blocks ? st->st_blocks : (st->st_size + 511) / 512;
	return 0;
}

/* ---- lookup ---- */

/* Makes (or finds) the node and hands out its number. */
static int tree_ref(struct tree *t, fuse_ino_t parent, const char *name, int kind,
		    const char *spec, const char *py, int file, uint64_t num, double tmo,
		    fuse_ino_t *ino, double *timeout)
{
	struct node *n = node_ref(t->nodes, parent, name, kind, spec, py);

	if (!n)
		return -ENOMEM;
	n->file = file;
	n->num = num;
	*ino = n->ino;
	*timeout = tmo;
	return 0;
}

int tree_lookup(struct tree *t, fuse_ino_t parent, const char *name, fuse_ino_t *ino,
		double *timeout)
{
	struct node *p;
	int kind = tree_kind(t, parent, &p), f;
	struct interp py;
	struct spec s;
	uint64_t num;
	char path[PATH_MAX];

	switch (kind) {
	case K_ROOT:
		for (int k = K_SPECS; k < K_NFIXED; k++)
			if (strcmp(name, fixed_name[k]) == 0) {
				*ino = (fuse_ino_t)k;
				*timeout = TREE_ENTRY_STABLE;
				return 0;
			}
		break;
	case K_SPECS:
		if (spec_parse(name, strlen(name), &s, NULL, 0) < 0)
			break;
		return tree_ref(t, parent, name, K_SPEC,
				s.canon, NULL, 0, 0, TREE_ENTRY_STABLE, ino, timeout);
	case K_SPEC:
		if (interp_lookup(core_pythons(t->core), name, &py, NULL, 0) < 0 || !has_bubble(t, p->spec, &py))
			break;
		return tree_ref(t, parent, name, K_CTX,
				p->spec, py.path, 0, 0, TREE_ENTRY_STABLE, ino, timeout);
	case K_CTX:
		if ((f = file_index(name, 1, 0)) < 0)
			break;
		return tree_ref(t, parent, name, K_CTXFILE,
				p->spec, p->py, f, 0, TREE_ENTRY_STABLE, ino, timeout);
	case K_JOBS:
		if (parse_u64(name, &num) < 0 || !fsjobs_get(t->jobs, num))
			break;
		return tree_ref(t, parent, name, K_JOB, NULL, NULL, 0, num, 0, ino, timeout);
	case K_JOB:
		if ((f = file_index(name, 0, 1)) < 0)
			break;
		return tree_ref(t, parent, name, K_JOBFILE, NULL, NULL, f, p->num, 0, ino, timeout);
	case K_SHMDIR:
		if (shm_path(t->shm, name, path, sizeof path) < 0 || access(path, F_OK) < 0)
			break;
		return tree_ref(t, parent, name, K_SHMLINK, NULL, NULL, 0, 0, 0, ino, timeout);
	case K_PYDIR:
		if (name[0] == '/' || interp_lookup(core_pythons(t->core), name, &py, NULL, 0) < 0)
			break;
		return tree_ref(t, parent, name, K_PYLINK, NULL, py.path, 0, 0, 0, ino, timeout);
	case K_WORKERS:
		if (parse_u64(name, &num) < 0)
			break;
		if (!core_each_worker(t->core, worker_is, &num))
			break;
		return tree_ref(t, parent, name, K_WORKER, NULL, NULL, 0, num, 0, ino, timeout);
	case K_WORKER:
		if (strcmp(name, "status") != 0)
			break;
		return tree_ref(t, parent, name, K_WSTATUS, NULL, NULL, 0, p->num, 0, ino, timeout);
	case 0:
		return -ESTALE;
	default:
		return -ENOTDIR;
	}
	return -ENOENT;
}

/* ---- listings ---- */

static int dents_add(struct tree_dir *h, const char *name, mode_t type)
{
	struct tree_dent *d;

	for (size_t i = 0; i < h->n; i++)
		if (strcmp(h->ents[i].name, name) == 0)
			return 0;
	if (h->n >= TREE_MAX_DIRENTS)
		return 1;
	if (!(d = realloc(h->ents, (h->n + 1) * sizeof *d)))
		return -ENOMEM;
	h->ents = d;
	if (!(d[h->n].name = strdup(name)))
		return -ENOMEM;
	d[h->n++].type = type;
	return 0;
}

static int list_bubble(const char *tag, const char *name, const char *version, const char *path,
		       void *ud)
{
	char in[SPEC_MAX_LEN];
	struct spec s;

	snprintf(in, sizeof in, "%s==%s", name, version);
	if (spec_parse(in, strlen(in), &s, NULL, 0) == 0)
		return dents_add(ud, s.canon, S_IFDIR) != 0;
	return 0;
}

static int list_job(struct fsjob *j, void *ud)
{
	char id[32];

	snprintf(id, sizeof id, "%llu", (unsigned long long)j->id);
	return dents_add(ud, id, S_IFDIR) != 0;
}

static int list_worker(const struct pool_worker_info *w, void *ud)
{
	char pid[32];

	if (w->pid <= 0)
		return 0;   /* not started yet: no directory */
	snprintf(pid, sizeof pid, "%d", (int)w->pid);
	return dents_add(ud, pid, S_IFDIR) != 0;
}

static int list_shm(const struct shm_info *seg, void *ud)
{
	return dents_add(ud, seg->name, S_IFLNK) != 0;
}

static void list_pythons(struct tree *t, struct tree_dir *h, const char *spec)
{
	const struct interp_set *set = core_pythons(t->core);

	for (size_t i = 0; i < set->n; i++) {
		char name[32];

		if (!interp_is_short_target(set, i))
			continue;
		snprintf(name, sizeof name, "%d.%d", set->v[i].major, set->v[i].minor);
		if (!spec) {
			dents_add(h, name, S_IFLNK);
			dents_add(h, set->v[i].version, S_IFLNK);
		} else if (has_bubble(t, spec, &set->v[i])) {
			dents_add(h, name, S_IFDIR);
		}
	}
}

int tree_list(struct tree *t, fuse_ino_t ino, struct tree_dir *h)
{
	struct node *n;
	int kind = tree_kind(t, ino, &n);

	memset(h, 0, sizeof *h);
	dents_add(h, ".", S_IFDIR);
	dents_add(h, "..", S_IFDIR);
	switch (kind) {
	case K_ROOT:
		for (int k = K_SPECS; k < K_NFIXED; k++)
			dents_add(h, fixed_name[k], k == K_STATS || k == K_CTL ? S_IFREG : S_IFDIR);
		break;
	case K_SPECS:
		dents_add(h, "base", S_IFDIR);
		bubble_list(core_home(t->core), list_bubble, h);
		break;
	case K_SPEC:
		list_pythons(t, h, n->spec);
		break;
	case K_CTX:
		for (int f = 0; f < JF_N; f++)
			if (f != JF_CODE)
				dents_add(h, file_name[f], S_IFREG);
		break;
	case K_JOBS:
		fsjobs_each(t->jobs, list_job, h);
		break;
	case K_JOB:
		for (int f = 0; f < JF_N; f++)
			if (f != JF_EXEC)
				dents_add(h, file_name[f], S_IFREG);
		break;
	case K_SHMDIR:
		shm_list(t->shm, list_shm, h);
		break;
	case K_PYDIR:
		list_pythons(t, h, NULL);
		break;
	case K_WORKERS:
		core_each_worker(t->core, list_worker, h);
		break;
	case K_WORKER:
		dents_add(h, "status", S_IFREG);
		break;
	default:
		return kind ? -ENOTDIR : -ESTALE;
	}
	return 0;
}

void tree_dir_free(struct tree_dir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->ents[i].name);
	free(d->ents);
	d->ents = NULL;
	d->n = 0;
}
