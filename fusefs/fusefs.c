/*
 * fusefs.c - the control filesystem over the worker pool (see fusefs.h).
 *
 *   $ ls /omnipkg/specs
 *   base  numpy==1.26.4  numpy==2.1.3
 *   $ exec 3<>/omnipkg/specs/numpy==1.26.4/3.11/exec
 *   $ echo 'import numpy; print(numpy.__version__)' >&3
 *   $ cat <&3                        # this descriptor's own job, as JSON
 *   { "ok": true, "stdout": "1.26.4\n", ... }
 *
 * libfuse's low-level API on the daemon's loop: the session fd is
 * non-blocking and every readable event processes the requests queued on
 * it.  What a name means lives in tree.c, inode numbers in node.c, jobs
 * and waiting reads in job.c, shared segments in shm.c; this file maps the
 * file operations onto them.
 */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bubble.h"
#include "ctl.h"
#include "fusefs.h"
#include "fsjob.h"
#include "logx.h"
#include "node.h"
#include "paths.h"
#include "shm.h"
#include "tree.h"
#include "spec.h"

#define FUSEFS_MAX_NODES 200000
#define FUSEFS_KEEP_BYTES (64u << 20)   /* job output kept by the ring */
#define FUSEFS_CTL_LINE 4096
#define FUSEFS_BATCH 64                 /* requests per readable event */

extern char **environ;

struct fusefs {
	struct tree t;             /* core, nodes, jobs, shm */
	struct loop *loop;         /* the core's: kept, since the core may go first */
	char mnt[PATH_MAX];
	struct fuse_session *se;
	int fd;
	struct fuse_buf buf;
	uint64_t requests;
	struct fh *fhs;            /* open files and directories */
	int gone;                  /* the kernel side went away */
};

struct fbuf {
	char *p;
	size_t len, cap;
};

/* One open file or directory. */
struct fh {
	int kind, file, accmode;
	struct fsjob *job;           /* referenced; NULL: no job (yet) */
	struct fbuf data;          /* exec: code; snapshots: content */
	struct fbuf in;            /* ctl: a partial command line */
	int submitted;             /* exec: buf has run as job */
	int oversize;              /* exec: a write was refused (EFBIG): run nothing */
	int have_wbase, have_rbase;
	off_t wbase, rbase;        /* exec: offsets of a transaction's first write and read */
	char *spec, *py;           /* exec: its context */
	int fd;                    /* shm: the backing file */
	struct tree_dir dir;       /* directories */
	struct fusefs *fs;
	struct fh *next, *prev;    /* open ones, freed at unmount if still open */
};

static struct fusefs *FS(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- small helpers ---- */

static int buf_put(struct fbuf *h, size_t pos, const char *data, size_t n)
{
	if (pos + n > h->cap) {
		size_t cap = h->cap ? h->cap : 4096;
		char *b;

		while (cap < pos + n)
			cap *= 2;
		if (!(b = realloc(h->p, cap)))
			return -ENOMEM;
		h->p = b;
		h->cap = cap;
	}
	if (pos > h->len)
		memset(h->p + h->len, 0, pos - h->len);
	memcpy(h->p + pos, data, n);
	if (pos + n > h->len)
		h->len = pos + n;
	return 0;
}

static void fh_free(struct fh *h)
{
	if (!h)
		return;
	if (h->prev)
		h->prev->next = h->next;
	else
		h->fs->fhs = h->next;
	if (h->next)
		h->next->prev = h->prev;
	fsjob_unref(h->job);
	free(h->data.p);
	free(h->in.p);
	free(h->spec);
	free(h->py);
	if (h->fd >= 0)
		close(h->fd);
	tree_dir_free(&h->dir);
	free(h);
}

static struct fh *fh_new(struct fusefs *fs, int kind, int file)
{
	struct fh *h = calloc(1, sizeof *h);

	if (h) {
		h->fs = fs;
		h->kind = kind;
		h->file = file;
		h->fd = -1;
		h->next = fs->fhs;
		if (fs->fhs)
			fs->fhs->prev = h;
		fs->fhs = h;
	}
	return h;
}

/* ---- generated content ---- */

static char *stats_text(void *ud)
{
	struct fusefs *fs = ud;
	cJSON *o = core_status_json(fs->t.core);
	char *s, *t;

	if (!o)
		return NULL;
	fusefs_stats_json(fs, o);
	s = cJSON_Print(o);
	cJSON_Delete(o);
	if (!s)
		return NULL;
	t = realloc(s, strlen(s) + 2);
	if (!t) {
		free(s);
		return NULL;
	}
	strcat(t, "\n");
	return t;
}

/* ---- lookup ---- */

static void reply_node(fuse_req_t req, struct fusefs *fs, struct node *n, double timeout)
{
	struct fuse_entry_param e = { .ino = n->ino, .entry_timeout = timeout };
	int r = tree_attr(&fs->t, n->ino, &e.attr);

	if (r < 0) {
		node_forget(fs->t.nodes, n->ino, 1);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_entry(req, &e) == -ENOENT)
		node_forget(fs->t.nodes, n->ino, 1);     /* the lookup was interrupted */
}

/* Makes (or finds) the node and replies with it. */
static void reply_new(fuse_req_t req, struct fusefs *fs, fuse_ino_t parent, const char *name,
		      int kind, const char *spec, const char *py, int file, uint64_t num, double tmo)
{
	struct node *n = node_ref(fs->t.nodes, parent, name, kind, spec, py);

	if (!n) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n->file = file;
	n->num = num;
	reply_node(req, fs, n, tmo);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusefs *fs = FS(req);
	struct fuse_entry_param e = { 0 };
	int r = tree_lookup(&fs->t, parent, name, &e.ino, &e.entry_timeout);

	if (r == 0 && (r = tree_attr(&fs->t, e.ino, &e.attr)) < 0)
		node_forget(fs->t.nodes, e.ino, 1);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_reply_entry(req, &e) == -ENOENT)
		node_forget(fs->t.nodes, e.ino, 1);   /* the lookup was interrupted */
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(FS(req)->t.nodes, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *v)
{
	for (size_t i = 0; i < count; i++)
		node_forget(FS(req)->t.nodes, v[i].ino, v[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r = tree_attr(&FS(req)->t, ino, &st);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, 0);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fusefs *fs = FS(req);
	struct node *n;
	char path[PATH_MAX];

	switch (tree_kind(&fs->t, ino, &n)) {
	case K_SHMLINK:
		if (shm_path(fs->t.shm, n->name, path, sizeof path) < 0)
			break;
		fuse_reply_readlink(req, path);
		return;
	case K_PYLINK:
		fuse_reply_readlink(req, n->py);
		return;
	}
	fuse_reply_err(req, EINVAL);
}

/* ---- directories ---- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fh *h = fh_new(fs, 0, 0);
	int r = h ? tree_list(&fs->t, ino, &h->dir) : -ENOMEM;

	if (r < 0) {
		fh_free(h);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT)
		fh_free(h);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	char *buf = malloc(size ? size : 1);
	size_t used = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = off > 0 ? (size_t)off : 0; i < h->dir.n; i++) {
		struct stat st = { .st_mode = h->dir.ents[i].type, .st_ino = 0xffffffffu - i };
		size_t need = fuse_add_direntry(req, buf + used, size - used, h->dir.ents[i].name, &st,
						(off_t)(i + 1));

		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fh_free((struct fh *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* Directories nobody may change. */
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EACCES);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EACCES);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EACCES);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EACCES);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EACCES);
}

/* ---- shared segments ---- */

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct fusefs *fs = FS(req);
	int fd;

	if (parent != K_SHMDIR) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fd = shm_open_file(fs->t.shm, name, O_RDWR | O_CREAT | O_EXCL);
	if (fd < 0) {
		fuse_reply_err(req, fd == -EINVAL ? ENOENT : -fd);
		return;
	}
	close(fd);
	/* A regular file node: the kernel checks the type; lookups later say symlink. */
	reply_new(req, fs, parent, name, K_SHMFILE, NULL, NULL, 0, 0, 0);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fuse_entry_param e = { 0 };
	struct node *n;
	struct fh *h;
	int fd, r;

	if (parent != K_SHMDIR) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fd = shm_open_file(fs->t.shm, name, (fi->flags & ~O_ACCMODE) | O_RDWR | O_CREAT);
	if (fd < 0) {
		fuse_reply_err(req, fd == -EINVAL ? ENOENT : -fd);
		return;
	}
	h = fh_new(fs, K_SHMFILE, 0);
	n = h ? node_ref(fs->t.nodes, parent, name, K_SHMFILE, NULL, NULL) : NULL;
	if (!n) {
		close(fd);
		fh_free(h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->fd = fd;
	h->accmode = fi->flags & O_ACCMODE;
	e.ino = n->ino;
	if ((r = tree_attr(&fs->t, n->ino, &e.attr)) < 0) {
		node_forget(fs->t.nodes, n->ino, 1);
		fh_free(h);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		node_forget(fs->t.nodes, n->ino, 1);
		fh_free(h);
	}
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int r;

	if (parent != K_SHMDIR) {
		fuse_reply_err(req, EACCES);
		return;
	}
	r = shm_remove(FS(req)->t.shm, name);
	fuse_reply_err(req, r == -EINVAL ? ENOENT : -r);
}

/* ---- open, read, write ---- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct node *n;
	int kind = tree_kind(&fs->t, ino, &n), acc = fi->flags & O_ACCMODE, r = 0;
	struct fh *h = fh_new(fs, kind, n ? n->file : 0);
	char path[PATH_MAX];
	struct fsjob *j;

	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->accmode = acc;
	fi->direct_io = 1;                /* sizes change under the kernel's feet */
	switch (kind) {
	case K_CTXFILE:
	case K_JOBFILE:
		if (h->file == JF_EXEC) {
			if (acc == O_RDONLY) {
				r = -EACCES;
				break;
			}
			h->spec = strdup(n->spec);
			h->py = strdup(n->py);
			if (!h->spec || !h->py)
				r = -ENOMEM;
			break;
		}
		if (acc != O_RDONLY) {
			r = -EACCES;
			break;
		}
		/* A file shows the job that was latest when it was opened. */
		j = tree_job(&fs->t, n);
		if (!j && kind == K_JOBFILE) {
			r = -ENOENT;
			break;
		}
		if ((h->job = j))
			fsjob_ref(j);
		break;
	case K_STATS:
	case K_WSTATUS:
	case K_CTL:
		if (acc != O_RDONLY && kind != K_CTL) {
			r = -EACCES;
			break;
		}
		if (acc != O_WRONLY) {
			h->data.p = kind == K_STATS ? stats_text(fs) : kind == K_CTL ? tree_ctl_text(&fs->t) :
				 tree_worker_text(&fs->t, n->num);
			if (!h->data.p)
				r = kind == K_WSTATUS ? -ENOENT : -ENOMEM;
			h->data.len = h->data.cap = h->data.p ? strlen(h->data.p) : 0;
		}
		break;
	case K_SHMFILE:
		if (shm_path(fs->t.shm, n->name, path, sizeof path) < 0) {
			r = -ENOENT;
			break;
		}
		h->fd = open(path, (fi->flags & (O_ACCMODE | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC);
		if (h->fd < 0)
			r = -errno;
		break;
	default:
		r = kind ? -EISDIR : -ESTALE;
		break;
	}
	if (r < 0) {
		fh_free(h);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT)
		fh_free(h);
}

/* Runs the code written so far as a job of the descriptor's context. */
static int exec_submit(struct fusefs *fs, struct fh *h)
{
	struct fsjob *j;

	if (h->oversize) {
		h->data.len = 0;          /* a cut-off program must never run */
		return -EFBIG;
	}
	if (h->data.len == 0)
		return -EINVAL;
	if (memchr(h->data.p, 0, h->data.len))
		return -EINVAL;           /* code is text */
	j = fsjobs_submit(fs->t.jobs, h->spec, h->py, h->data.p, h->data.len);
	if (!j)
		return -ENOMEM;
	fsjob_unref(h->job);
	h->job = j;
	h->submitted = 1;
	h->have_rbase = 0;
	return 0;
}

/* A transaction file reads from 0 wherever the descriptor's offset stands. */
static size_t exec_pos(struct fh *h, off_t off)
{
	if (!h->have_rbase) {
		h->have_rbase = 1;
		h->rbase = off;
	}
	return (size_t)(off >= h->rbase ? off - h->rbase : off);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	switch (h->kind) {
	case K_STATS:
	case K_WSTATUS:
	case K_CTL:
		if ((size_t)off >= h->data.len)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, h->data.p + off, h->data.len - (size_t)off < size ?
				       h->data.len - (size_t)off : size);
		return;
	case K_SHMFILE: {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = h->fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	case K_CTXFILE:
	case K_JOBFILE:
		break;
	default:
		fuse_reply_err(req, EIO);
		return;
	}
	if (h->file == JF_EXEC) {
		if (!h->submitted && (r = exec_submit(fs, h)) < 0 && (!h->job || r == -EFBIG)) {
			fuse_reply_err(req, -r);
			return;
		}
		if (!h->job) {
			fuse_reply_err(req, EIO);
			return;
		}
		r = fsjobs_defer_read(fs->t.jobs, h->job, req, JF_RESULT, exec_pos(h, off), size);
	} else if (!h->job || h->file == JF_STATUS || h->file == JF_CODE) {
		size_t len;
		const char *t = fsjob_text(h->job, h->file, &len);

		fuse_reply_buf(req, (size_t)off < len ? t + off : NULL,
			       (size_t)off < len ? (len - (size_t)off < size ? len - (size_t)off : size) : 0);
		return;
	} else {
		r = fsjobs_defer_read(fs->t.jobs, h->job, req, h->file, (size_t)off, size);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
}

static int ctl_line(struct fusefs *fs, char *line)
{
	struct ctl_cmd c;
	int r = ctl_parse(line, &c);

	if (r < 0 || c.op == CTL_NONE)
		return r;
	if (c.op == CTL_SHM_CREATE)
		return shm_create(fs->t.shm, c.name, (off_t)c.size);
	return shm_remove(fs->t.shm, c.name);
}

/* Runs the complete lines in h->in.p, and the rest too when flushing. */
static int ctl_run(struct fusefs *fs, struct fh *h, int all)
{
	int r = 0, e;

	for (;;) {
		char *nl = memchr(h->in.p, '\n', h->in.len);
		size_t n;

		if (!nl)
			break;
		n = (size_t)(nl - h->in.p);
		*nl = 0;
		if ((e = ctl_line(fs, h->in.p)) < 0 && r == 0)
			r = e;
		memmove(h->in.p, nl + 1, h->in.len - n - 1);
		h->in.len -= n + 1;
	}
	if (all && h->in.len) {
		if (buf_put(&h->in, h->in.len, "", 1) < 0)
			return -ENOMEM;
		e = ctl_line(fs, h->in.p);
		h->in.len = 0;
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	ssize_t w;
	size_t pos;
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	switch (h->kind) {
	case K_SHMFILE:
		if ((r = shm_grow(fs->t.shm, h->fd, off + (off_t)size)) < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		w = pwrite(h->fd, data, size, off);
		if (w < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_write(req, (size_t)w);
		return;
	case K_CTL:
		if (size > FUSEFS_CTL_LINE * 16) {
			fuse_reply_err(req, EFBIG);
			return;
		}
		if (buf_put(&h->in, h->in.len, data, size) < 0) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = ctl_run(fs, h, 0);
		if (h->in.len > FUSEFS_CTL_LINE) {    /* a line that never ends */
			h->in.len = 0;
			r = r ? r : -EINVAL;
		}
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_write(req, size);
		return;
	case K_CTXFILE:
		if (h->file == JF_EXEC)
			break;
		/* fall through */
	default:
		fuse_reply_err(req, EACCES);
		return;
	}
	/* A write after the job ran starts the next transaction. */
	if (h->submitted) {
		h->submitted = 0;
		h->oversize = 0;
		h->data.len = 0;
		h->have_wbase = 0;
	}
	if (!h->have_wbase) {
		h->have_wbase = 1;
		h->wbase = off;
	}
	pos = (size_t)(off >= h->wbase ? off - h->wbase : off);
	if (pos > FUSEFS_CODE_MAX || size > FUSEFS_CODE_MAX - pos) {
		h->oversize = 1;
		fuse_reply_err(req, EFBIG);
		return;
	}
	if (buf_put(&h->data, pos, data, size) < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_write(req, size);
}

/* close(): code written to exec runs now, so a `cat` right after sees it. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	int r = 0;

	if (h->kind == K_CTL && h->in.len)
		r = ctl_run(fs, h, 1);
	else if (h->kind == K_CTXFILE && h->file == JF_EXEC && !h->submitted) {
		if (h->data.len || h->oversize)
			r = exec_submit(fs, h);
		else if (h->accmode == O_WRONLY && !h->job)
			r = -EINVAL;      /* `echo -n > exec`: nothing to run */
	}
	fuse_reply_err(req, -r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;

	if (h->kind == K_CTXFILE && h->file == JF_EXEC && !h->submitted && h->data.len)
		exec_submit(fs, h);
	fh_free(h);
	fuse_reply_err(req, 0);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	unsigned ready = POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;

	if ((h->kind == K_CTXFILE || h->kind == K_JOBFILE) && h->job && !fsjob_finished(h->job) &&
	    h->file != JF_STATUS && h->file != JF_CODE) {
		ready = h->file == JF_EXEC ? POLLOUT | POLLWRNORM : 0;
		if (ph) {
			fsjobs_add_poll(h->job, ph);
			ph = NULL;
		}
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, ready);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fusefs *fs = FS(req);
	struct node *n;
	int kind = tree_kind(&fs->t, ino, &n), r = 0;
	struct fh *h = fi ? (struct fh *)(uintptr_t)fi->fh : NULL;
	struct stat st;

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (kind == K_SHMFILE) {
			char path[PATH_MAX];
			int fd = h ? h->fd : -1;

			if (fd < 0 && shm_path(fs->t.shm, n->name, path, sizeof path) == 0)
				fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
			r = fd < 0 ? -ENOENT : shm_resize(fs->t.shm, fd, attr->st_size);
			if (fd >= 0 && !h)
				close(fd);
		} else if (kind == K_CTXFILE && n->file == JF_EXEC) {
			if (h && !h->submitted && (size_t)attr->st_size < h->data.len)
				h->data.len = (size_t)attr->st_size;
		} else {
			r = -EACCES;
		}
	}
	if (r == 0)
		r = tree_attr(&fs->t, ino, &st);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255 };

	fuse_reply_statfs(req, &sv);
}

static void op_init(void *ud, struct fuse_conn_info *conn)
{
	/* O_TRUNC of exec arrives with the open, not as a separate setattr. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
}

static const struct fuse_lowlevel_ops fusefs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.create = op_create,
	.poll = op_poll,
};

/* ---- the session on the loop ---- */

static void fusefs_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct fusefs *fs = ud;

	for (int i = 0; i < FUSEFS_BATCH && !fs->gone; i++) {
		int r = fuse_session_receive_buf(fs->se, &fs->buf);

		if (r == -EINTR)
			continue;
		if (r == -EAGAIN)
			break;
		if (r <= 0 || fuse_session_exited(fs->se)) {
			logx(LOGX_WARN, "%s was unmounted%s%s", fs->mnt, r < 0 ? ": " : "",
			     r < 0 ? strerror(-r) : "");
			loop_del(l, fd);
			fs->gone = 1;
			break;
		}
		fuse_session_process_buf(fs->se, &fs->buf);
		fs->requests++;
	}
	fsjobs_sweep(fs->t.jobs);
}

/* Is mnt a mount point?  Its device differs from its parent's. */
static int is_mount_point(const char *mnt, const struct stat *st)
{
	char parent[PATH_MAX + 4];
	struct stat pst;

	snprintf(parent, sizeof parent, "%s/..", mnt);
	return stat(parent, &pst) == 0 && (pst.st_dev != st->st_dev || pst.st_ino == st->st_ino);
}

/* A dead daemon's mount answers ENOTCONN: detach it so we can mount again.
 * A live mount there (another daemon's, or anything else) is refused. */
static int clean_stale(const char *mnt, char *err, size_t errlen)
{
	struct stat st;

	if (stat(mnt, &st) == 0) {
		if (!is_mount_point(mnt, &st))
			return 0;
		snprintf(err, errlen, "%s is in use: something is mounted there already", mnt);
		return -EBUSY;
	}
	if (errno != ENOTCONN && errno != ECONNABORTED)
		return 0;
	logx(LOGX_INFO, "detaching the stale mount at %s", mnt);
	if (umount2(mnt, MNT_DETACH) < 0) {
		char *argv[] = { "fusermount3", "-u", "-z", (char *)mnt, NULL };
		pid_t pid;
		int status = 0;

		if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0 ||
		    waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
			snprintf(err, errlen, "%s is a stale mount and could not be detached "
				 "(try: fusermount3 -u -z %s)", mnt, mnt);
			return -EBUSY;
		}
	}
	return 0;
}

struct fusefs *fusefs_mount(struct core *core, const char *mountpoint,
			    char *err, size_t errlen)
{
	char *argv[] = { "omnipkgd", "-o", "fsname=omnipkg,subtype=omnipkg,default_permissions", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct fusefs *fs;
	int r;

	if (strlen(mountpoint) >= PATH_MAX || !*mountpoint) {
		snprintf(err, errlen, "bad mount point");
		return NULL;
	}
	fs = calloc(1, sizeof *fs);
	if (!fs) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fs->t.core = core;
	fs->t.shm = core_shm(core);
	fs->loop = core_loop(core);
	fs->fd = -1;
	fs->t.t_wall = time(NULL);
	fs->t.stats = stats_text;
	fs->t.ud = fs;
	if (!realpath(mountpoint, fs->mnt))
		snprintf(fs->mnt, sizeof fs->mnt, "%s", mountpoint);
	if (clean_stale(fs->mnt, err, errlen) < 0)
		goto fail;
	if ((r = paths_mkdir_p(fs->mnt, 0700)) < 0) {
		snprintf(err, errlen, "cannot create %s: %s", fs->mnt, strerror(-r));
		goto fail;
	}
	fs->t.nodes = node_table_new(FUSEFS_MAX_NODES);
	fs->t.jobs = fsjobs_new(core, FUSEFS_KEEP_BYTES);
	if (!fs->t.nodes || !fs->t.jobs) {
		snprintf(err, errlen, "out of memory");
		goto fail_tables;
	}
	fs->se = fuse_session_new(&args, &fusefs_ops, sizeof fusefs_ops, fs);
	if (!fs->se) {
		snprintf(err, errlen, "cannot start a FUSE session (is fuse3 installed?)");
		goto fail_tables;
	}
	if (fuse_session_mount(fs->se, fs->mnt) != 0) {
		snprintf(err, errlen, "cannot mount on %s (is /dev/fuse usable? is it mounted already?)",
			 fs->mnt);
		goto fail_session;
	}
	fs->fd = fuse_session_fd(fs->se);
	if (fcntl(fs->fd, F_SETFL, fcntl(fs->fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(fs->fd, F_SETFD, FD_CLOEXEC) < 0 ||
	    loop_add(core_loop(core), fs->fd, EPOLLIN, fusefs_io, fs) < 0) {
		snprintf(err, errlen, "cannot watch the FUSE device: %s", strerror(errno));
		goto fail_mount;
	}
	fuse_opt_free_args(&args);
	return fs;

fail_mount:
	fuse_session_unmount(fs->se);
fail_session:
	fuse_session_destroy(fs->se);
fail_tables:
	fsjobs_free(fs->t.jobs);
	node_table_free(fs->t.nodes);
fail:
	fuse_opt_free_args(&args);
	free(fs);
	return NULL;
}

void fusefs_unmount(struct fusefs *fs)
{
	if (!fs)
		return;
	if (!fs->gone)
		loop_del(fs->loop, fs->fd);
	fsjobs_free(fs->t.jobs);            /* waiting readers get EINTR */
	fuse_session_unmount(fs->se);
	fuse_session_destroy(fs->se);
	while (fs->fhs)                   /* still open: never released now */
		fh_free(fs->fhs);
	free(fs->buf.mem);
	node_table_free(fs->t.nodes);
	free(fs);
}

void fusefs_stats_json(struct fusefs *fs, cJSON *into)
{
	cJSON *o = cJSON_AddObjectToObject(into, "fusefs");

	if (!o)
		return;
	cJSON_AddStringToObject(o, "mount", fs->mnt);
	cJSON_AddNumberToObject(o, "requests", (double)fs->requests);
	cJSON_AddNumberToObject(o, "nodes", (double)node_count(fs->t.nodes));
	fsjobs_stats_json(fs->t.jobs, o);
}
