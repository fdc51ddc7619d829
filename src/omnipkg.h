/*
 * omnipkg.h - libomnipkg, the client library of omnipkgd.
 *
 *   omni_client *c;
 *   omni_reply *r;
 *   omni_exec_opts o = { .spec = "numpy==1.26.4", .python = "3.11",
 *                        .code = "import numpy; print(numpy.__version__)" };
 *   if (omni_connect(&c, NULL, OMNI_CONNECT_AUTOSTART) == 0 &&
 *       omni_exec(c, &o, &r) == 0) {
 *       fputs(omni_reply_str(r, "stdout"), stdout);   // "1.26.4\n"
 *       omni_reply_free(r);
 *   }
 *   omni_close(c);
 *
 * Errors: every function that can fail returns 0 (or a documented count)
 * or a negative errno value; omni_strerror() turns it into text.  A failed
 * job is not a failed call: omni_exec returns 0 and omni_reply_ok() is 0.
 * The library never exits and never writes to stdout/stderr.
 *
 * Threads: a client handle is used by one thread at a time.
 */
#ifndef OMNIPKG_H
#define OMNIPKG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility: only what carries OMNI_API
 * is exported from libomnipkg.so. */
#ifndef OMNI_API   /* a module that compiles our sources into itself may say otherwise */
#if defined(__GNUC__)
#define OMNI_API __attribute__((visibility("default")))
#else
#define OMNI_API
#endif
#endif

typedef struct omni_client omni_client;
typedef struct omni_reply omni_reply;

/* How a job may use an array (the worker maps "in" read-only). */
enum { OMNI_ACCESS_INOUT = 0, OMNI_ACCESS_IN = 1, OMNI_ACCESS_OUT = 2 };

#define OMNI_ARRAY_MAX_DIM 32

/* A view of a shared segment, bound as a global before the code runs (a
 * numpy ndarray in a worker that has numpy).  Every pointer is borrowed
 * for the call that sends it; the daemon checks the view against the
 * segment (see proto.h, op exec). */
typedef struct omni_array {
	const char *name;       /* the global's name: a Python identifier */
	const char *segment;    /* a segment's name (omni_shm_create) */
	const char *dtype;      /* "float32", "<f4", "int64", "bool", ... */
	const int64_t *shape;   /* ndim sizes; may be NULL when ndim is 0 */
	int ndim;               /* 0..OMNI_ARRAY_MAX_DIM */
	uint64_t offset;        /* bytes from the segment's start */
	const int64_t *strides; /* ndim byte strides; NULL: C order (not sent) */
	int access;             /* OMNI_ACCESS_* */
} omni_array;

typedef struct omni_exec_opts {
	const char *spec;    /* required: "numpy==1.26.4", "a==1,b==2" or "base" */
	const char *python;  /* "3.11", "3.11.7", an absolute path; NULL: daemon default */
	const char *code;    /* required: Python source */
	double timeout;      /* seconds; <= 0: the daemon's default */
	const char *tag;     /* NULL or a worker tag: same spec, separate worker */
	int once;            /* nonzero: ephemeral worker, gone after the job */
	const omni_array *arrays;  /* narrays views, leased by the job while it runs */
	size_t narrays;
	const char *bind_json;     /* NULL or a JSON object text: {name: value}
	                              bound as globals as they are */
	int pin;             /* nonzero: its worker is never stopped for idleness
	                        or evicted for max_workers (evict still stops it) */
	double max_memory_mb;      /* > 0: limit its worker's memory to this many
	                              MiB from now on (reason "memory" beyond) */
	const int *fds;            /* nfds descriptors sent with the request
	                              (SCM_RIGHTS), borrowed: the caller closes
	                              them once the call returns */
	size_t nfds;               /* 0..OMNI_EXEC_MAX_FDS */
	const char *const *fd_for; /* nfds names: the bind global each is for
	                              (omni_cuda_bind fills all three) */
} omni_exec_opts;

#define OMNI_EXEC_MAX_FDS 8

#define OMNI_CONNECT_AUTOSTART 0x1  /* start omnipkgd if none answers (never
                                       inside a worker: OMNIPKG_DAEMON_CHILD) */

/* The default socket path into buf; 0 or -errno. */
OMNI_API int omni_default_socket(char *buf, size_t n);

/* Connects to socket_path (NULL: default) and checks the protocol version.
 * *out is owned by the caller until omni_close().  -ECONNREFUSED when no
 * daemon answers (also for a missing socket file or directory),
 * -EPROTONOSUPPORT for a daemon of another protocol version.
 *
 * Trust: before a byte is sent, the directory holding the socket must be a
 * real directory (not a symlink) owned by the caller's uid with no group or
 * other permission bits, the socket a socket owned by that uid, and the
 * peer (SO_PEERCRED) that uid; otherwise -EPERM and nothing is sent or
 * started.  This holds for explicit paths as well as the default. */
OMNI_API int omni_connect(omni_client **out, const char *socket_path, int flags);
/* omni_connect that also writes why it failed, naming the path, into err
 * (may be NULL; "" on success). */
OMNI_API int omni_connect_err(omni_client **out, const char *socket_path, int flags,
			      char *err, size_t errlen);
OMNI_API void omni_close(omni_client *c);   /* c may be NULL; fails nothing in flight */
OMNI_API int omni_fd(const omni_client *c); /* for poll(); borrowed.  Replies already
                                      read (see omni_call) are not signalled
                                      by it: try omni_recv(c, &r, 0) first */

/* Runs code and waits for its reply.  *out: caller frees with omni_reply_free. */
OMNI_API int omni_exec(omni_client *c, const omni_exec_opts *o, omni_reply **out);

/* Pipelining: send now, collect later with omni_recv in any order. */
OMNI_API int omni_exec_send(omni_client *c, const omni_exec_opts *o, uint64_t *id_out);
/* Sends any op with arguments given as a JSON object text (NULL: none). */
OMNI_API int omni_send(omni_client *c, const char *op, const char *args_json, uint64_t *id_out);
/* Receives the next reply, whichever request it answers.  timeout_ms < 0:
 * wait; -ETIMEDOUT when none came in time (the handle stays usable).
 * After a stream error (-EMSGSIZE, -EBADMSG, -ECONNRESET...) every later
 * call returns that error: close the handle. */
OMNI_API int omni_recv(omni_client *c, omni_reply **out, int timeout_ms);

/* Sends op and waits for its own reply (others received meanwhile are kept
 * and returned by later omni_recv calls). */
OMNI_API int omni_call(omni_client *c, const char *op, const char *args_json, omni_reply **out);
OMNI_API int omni_status(omni_client *c, omni_reply **out);

/* Reply accessors; strings are borrowed, valid until omni_reply_free. */
OMNI_API uint64_t omni_reply_id(const omni_reply *r);
OMNI_API int omni_reply_ok(const omni_reply *r);
OMNI_API const char *omni_reply_str(const omni_reply *r, const char *key);  /* "" if absent */
OMNI_API double omni_reply_num(const omni_reply *r, const char *key);       /* 0 if absent;
                                                                      true: 1, false: 0 */
OMNI_API const char *omni_reply_json(const omni_reply *r);                  /* whole reply */
OMNI_API void omni_reply_free(omni_reply *r);

/* Creates the bubbles of spec for python (see bubble.h); blocks while pip
 * runs, showing its output unless quiet.  err receives a reason. */
OMNI_API int omni_install(const char *spec, const char *python, int quiet, char *err, size_t errlen);

/* Starts the daemon: runs `omnipkgd --daemon` and waits until its socket
 * accepts (the daemon's own errors go to stderr).  The binary is $OMNIPKGD,
 * else omnipkgd beside the running executable, in the build directory, in
 * the install bindir, else on PATH.  The daemon listens on the default
 * socket only, so socket_path must be NULL or that path (-EINVAL).  Does
 * not check for a live daemon first.  0 or -errno with a reason in err
 * (may be NULL); -EPERM inside a worker, or when the runtime directory is
 * not the caller's own (see omni_connect).  OMNI_CONNECT_AUTOSTART uses it. */
OMNI_API int omni_daemon_start(const char *socket_path, char *err, size_t errlen);

/*
 * Shared segments: files on a tmpfs the daemon owns; mapping one maps the
 * same pages in every process, workers included.  A segment belongs to
 * the connection that created it and goes when that closes (once no job
 * leases it), unless created with OMNI_SHM_PERSIST.  Failed requests give
 * -EDQUOT (over the quota), -EBUSY (a job leases it), -ENOENT (no such
 * segment), -EEXIST (name in use) or -EINVAL (bad name or size).
 */
#define OMNI_SHM_PERSIST 0x1       /* outlives the connection; omni_shm_remove */
#define OMNI_SHM_NAME_MAX 128      /* [A-Za-z0-9._-], not "." or ".." */
#define OMNI_SHM_PATH_MAX 4096

typedef struct omni_segment {
	char name[OMNI_SHM_NAME_MAX + 1];
	uint64_t id;       /* never reused by a daemon */
	uint64_t gen;      /* bumped on every resize */
	uint64_t size;     /* bytes */
	char path[OMNI_SHM_PATH_MAX];   /* the backing file */
} omni_segment;

/* Creates a segment of size bytes, its pages reserved; name NULL: the
 * daemon picks one.  *out describes it (may be NULL). */
OMNI_API int omni_shm_create(omni_client *c, const char *name, uint64_t size, int flags,
			     omni_segment *out);
/* Describes the segment called name (looked up with shm_list). */
OMNI_API int omni_shm_open(omni_client *c, const char *name, omni_segment *out);
OMNI_API int omni_shm_remove(omni_client *c, const char *name);
/* The daemon's segments: the reply's "segments" array ({name, id, gen,
 * size, leases, persist, path, dtype, shape}); caller frees *out. */
OMNI_API int omni_shm_list(omni_client *c, omni_reply **out);
/* Maps s's file as it is now (opened without following a symlink; it
 * must be a regular file of the caller's uid), shared, read-only unless
 * writable.  *len: the file's size, which may differ from s->size after a
 * resize; an empty file gives *addr NULL and *len 0.  Needs no daemon. */
OMNI_API int omni_shm_map(const omni_segment *s, int writable, void **addr, size_t *len);
OMNI_API int omni_shm_unmap(void *addr, size_t len);   /* addr NULL: nothing */

/*
 * Device buffers (CUDA IPC).  libomnipkg never links CUDA: the first call
 * dlopen()s libomnipkg-cuda ($OMNIPKG_CUDA_LIB, else libomnipkg-cuda.so.0),
 * which dlopen()s the driver.  A buffer crosses as a handle: hex text of
 * OMNI_CUDA_HANDLE_HEX characters naming its allocation, its offset and
 * length, and the event the importer waits for.  The allocation is named
 * by the legacy IPC handle of its base (cudaMalloc-style memory), or, for
 * a VMM allocation made to allow one (cuMemCreate with a POSIX descriptor
 * among its requestedHandleTypes, as PyTorch's expandable segments are),
 * by a POSIX descriptor that travels beside the handle (SCM_RIGHTS: the
 * request's omni_exec_opts.fds).  Errors: -ENOENT with "no CUDA driver
 * (libcuda.so.1 not found)" or no libomnipkg-cuda, -ENODEV "no CUDA
 * device", -EINVAL a bad handle, pointer or descriptor, -EIO a driver error.
 *
 *   char h[OMNI_CUDA_HANDLE_HEX + 1];
 *   omni_cuda_export(ptr, nbytes, stream, h, sizeof h, err, sizeof err);
 *   // another process: omni_cuda_import(h, &ptr2, ...) ... omni_cuda_release(h);
 *
 * Ordering: the producer records an interprocess event on stream after
 * what it queued there, and the importer waits for it before the buffer
 * is used; where the driver has no such events (or OMNI_CUDA_SYNC asks)
 * the stream is synchronised before the handle is written instead.
 */
#define OMNI_CUDA_HANDLE_HEX 352

/* How a buffer is exported (flags; AUTO: a descriptor where the allocation
 * allows one, else the IPC handle). */
#define OMNI_CUDA_AUTO 0x0
#define OMNI_CUDA_IPC  0x1   /* the legacy IPC handle only */
#define OMNI_CUDA_FD   0x2   /* a POSIX descriptor only (-EINVAL where none) */
#define OMNI_CUDA_SYNC 0x4   /* synchronise the stream instead of an event */

/* A device buffer bound as a tensor of the worker's framework (cupy, torch,
 * jax, tensorflow; "raw": an object with __cuda_array_interface__).
 * Borrowed pointers. */
typedef struct omni_device_array {
	const char *name;       /* the global's name: a Python identifier */
	uint64_t devptr;        /* the buffer's first element */
	const char *dtype;      /* array-interface typestr: "<f4", "|u1", "<i8", ... */
	const int64_t *shape;   /* ndim sizes */
	int ndim;               /* 0..OMNI_ARRAY_MAX_DIM */
	const int64_t *strides; /* ndim byte strides (>= 0); NULL: C order */
	int access;             /* OMNI_ACCESS_* (IN: bound read-only) */
	void *stream;           /* CUstream the buffer was written on; NULL: default */
	const char *framework;  /* NULL or "auto", "cupy", "torch", "jax",
	                           "tensorflow", "raw" */
} omni_device_array;

/* Orders after stream, then writes the IPC handle of nbytes at devptr. */
OMNI_API int omni_cuda_export(uint64_t devptr, uint64_t nbytes, void *stream, char *hex,
                              size_t hexlen, char *err, size_t errlen);
/* The same as flags (OMNI_CUDA_*) ask; *fd: the descriptor of a handle
 * that needs one (the caller's: send it, then close it), else -1. */
OMNI_API int omni_cuda_export_fd(uint64_t devptr, uint64_t nbytes, void *stream, int flags,
                                 char *hex, size_t hexlen, int *fd, char *err, size_t errlen);
/* Maps a handle (once per process, cached) and holds it until release. */
OMNI_API int omni_cuda_import(const char *hex, uint64_t *devptr, char *err, size_t errlen);
/* The same with the descriptor that came with a handle that needs one
 * (borrowed; -1: none, enough once its allocation is mapped here). */
OMNI_API int omni_cuda_import_fd(const char *hex, int fd, uint64_t *devptr, char *err,
                                 size_t errlen);
OMNI_API int omni_cuda_release(const char *hex);
/* Exports n device arrays as omni_exec_opts.bind_json text, IPC handles
 * only: *json_out is the caller's to free().  The worker syncs its device
 * before it replies, so OUT/INOUT buffers hold the job's writes once
 * omni_exec returns. */
OMNI_API int omni_cuda_bind_json(const omni_device_array *a, size_t n, char **json_out,
                                 char *err, size_t errlen);

/* What omni_cuda_bind makes: the three exec options a call needs. */
typedef struct omni_cuda_binding {
	char *bind_json;                        /* omni_exec_opts.bind_json */
	int fds[OMNI_EXEC_MAX_FDS];             /* omni_exec_opts.fds */
	const char *fd_for[OMNI_EXEC_MAX_FDS];  /* omni_exec_opts.fd_for (the
	                                           arrays' names, borrowed) */
	size_t nfds;
} omni_cuda_binding;

/* Exports n device arrays as flags (OMNI_CUDA_*) ask, descriptors where
 * they apply: pass out's fields to omni_exec_opts, then free it with
 * omni_cuda_binding_free (which closes the descriptors). */
OMNI_API int omni_cuda_bind(const omni_device_array *a, size_t n, int flags,
                            omni_cuda_binding *out, char *err, size_t errlen);
OMNI_API void omni_cuda_binding_free(omni_cuda_binding *b);

/*
 * Control blocks: shared state that any number of processes (clients,
 * workers, C or Python, any interpreter) read and write without the daemon
 * in the loop and without a lock.  A control block is an ordinary segment
 * whose first OMNI_CTL_HEADER_SIZE bytes are the header below; the rest is
 * the record.  Every word is in the host's byte order.
 *
 *   omni_segment s; void *p; size_t n; omni_ctl_ticket t; omni_ctl_snapshot snap;
 *   omni_shm_create(c, "state", OMNI_CTL_HEADER_SIZE + 4096, OMNI_SHM_PERSIST, &s);
 *   omni_shm_map(&s, 1, &p, &n);
 *   omni_ctl_format(p, n, 0);                            // once; any process may
 *   omni_ctl_begin(p, n, OMNI_CTL_ANY, 1000, &t);        // claim: one CAS
 *   memcpy(omni_ctl_record(p), "hello", 5);
 *   omni_ctl_end(p, &t, 0);                              // publish
 *   omni_ctl_read(p, n, 0, buf, 5, -1, &snap);           // never blocks a writer
 *
 * A seqlock.  seq is even while the record is stable and odd while a
 * writer holds it.  A writer claims with one compare-and-swap of an even
 * seq to the next odd value, which also carries its pid in bits
 * OMNI_CTL_PID_SHIFT and up (so the claim and its owner are one atomic
 * word, as in a robust futex); it then writes owner_pid and owner_start
 * (the owner's start time, field 22 of /proc/<pid>/stat, so that a reused
 * pid is not taken for the owner), writes the record, and publishes the
 * next even seq.  A reader copies the record between two reads of seq and
 * tries again when they differ or are odd: it never writes and never
 * holds anything a writer waits for.
 *
 * A writer that dies while it holds the block (pid gone, a zombie, or the
 * pid alive with another start time) is recovered by whoever waits on the
 * block next, within about a millisecond of their noticing: one CAS takes
 * the claim over, torn is set, torn_count counts it, and the next even
 * seq is published.  The daemon does the same for every block a worker of
 * its own held when that worker dies.  torn says the last write did not
 * complete (its writer died, or gave up with OMNI_CTL_TORN): the record
 * holds whatever it got to; the next whole write clears it.
 *
 * seq counts in its low OMNI_CTL_PID_SHIFT bits and wraps at 2^40.
 * Mappings must be writable for writers, and for readers that may wait
 * (a waiting reader recovers a dead writer's claim too).
 *
 * Errors: -EINVAL (a bad argument, a block smaller than its header or
 * not 8-byte aligned), -EPROTO (the bytes are not a control block of this
 * layout), -EAGAIN (being formatted, or a writer holds it and the call
 * could not wait), -ETIMEDOUT (a live writer held it past the timeout),
 * -ESTALE (seq is no longer the one expected), -ERANGE (past the record),
 * -EOPNOTSUPP (a block in file-lock mode), -EOWNERDEAD (the claim was
 * taken over: its holder was taken for dead).
 */
#define OMNI_CTL_MAGIC       0x314C5443494E4D4FULL  /* "OMNICTL1" in a little-endian dump */
#define OMNI_CTL_MAGIC_INIT  0x304C5443494E4D4FULL  /* "OMNICTL0": being formatted */
#define OMNI_CTL_VERSION     1
#define OMNI_CTL_HEADER_SIZE 128
#define OMNI_CTL_PID_SHIFT   40
#define OMNI_CTL_SEQ_MASK    ((UINT64_C(1) << OMNI_CTL_PID_SHIFT) - 1)
#define OMNI_CTL_ANY         UINT64_MAX   /* omni_ctl_begin: whatever seq is now */

/* flags of the header, fixed when formatted */
#define OMNI_CTL_FILELOCK 0x1   /* "standard mode": writers and readers take a
                                   file lock on the segment's file (Python's
                                   omnipkg.ctlblock); the calls below refuse it */

typedef struct omni_ctl_header {
	uint64_t magic;          /*   0: OMNI_CTL_MAGIC once formatted */
	uint32_t version;        /*   8: OMNI_CTL_VERSION */
	uint32_t flags;          /*  12: OMNI_CTL_FILELOCK or 0 */
	uint64_t record_size;    /*  16: bytes of the record, from OMNI_CTL_HEADER_SIZE on */
	uint64_t seq;            /*  24: even: stable; odd: held, holder's pid in the top bits */
	uint64_t owner_pid;      /*  32: the holder's pid, once it has written it; 0: none */
	uint64_t owner_start;    /*  40: the holder's start time (clock ticks after boot) */
	uint64_t generation;     /*  48: whole writes published */
	uint64_t torn;           /*  56: 1: the last write was torn */
	uint64_t torn_count;     /*  64: writes torn so far */
	uint64_t reserved[7];    /*  72: zero */
} omni_ctl_header;

#if defined(__cplusplus)
#define OMNI_CTL_ASSERT_(c, m) static_assert(c, m)
#else
#define OMNI_CTL_ASSERT_(c, m) _Static_assert(c, m)
#endif
OMNI_CTL_ASSERT_(sizeof(omni_ctl_header) == OMNI_CTL_HEADER_SIZE, "control block header size");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, seq) == 24, "seq offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, owner_pid) == 32, "owner_pid offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, owner_start) == 40, "owner_start offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, generation) == 48, "generation offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, torn) == 56, "torn offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, torn_count) == 64, "torn_count offset");
OMNI_CTL_ASSERT_(offsetof(omni_ctl_header, reserved) == 72, "reserved offset");

typedef struct omni_ctl_snapshot {
	uint64_t seq;            /* the (even) seq the record was read at */
	uint64_t generation;
	uint64_t torn_count;
	int torn;                /* 1: the record is what a torn write left */
} omni_ctl_snapshot;

typedef struct omni_ctl_ticket {
	uint64_t word;           /* the odd seq word claimed */
	int prev_torn;           /* 1: the write before this one was torn */
} omni_ctl_ticket;

/* Formats len bytes at base (a segment's mapping, all zero, or a block
 * already formatted) as an empty control block whose record is the rest.
 * Safe to race: one caller formats, the others find it done.  0: formatted
 * now; 1: it already was (with the flags it was given then); -EAGAIN:
 * another process is formatting it; -EPROTO: something else is there. */
OMNI_API int omni_ctl_format(void *base, size_t len, uint32_t flags);
/* 0 when base holds a control block of this layout that fits in len
 * bytes; -EAGAIN when not yet formatted (all zero, or being formatted). */
OMNI_API int omni_ctl_check(const void *base, size_t len);
/* The record: base + OMNI_CTL_HEADER_SIZE; header->record_size bytes. */
OMNI_API void *omni_ctl_record(void *base);
/* Copies n bytes of the record from off into buf as of one stable seq, and
 * its state into *snap (may be NULL).  While a writer holds the block it
 * waits up to timeout_ms (< 0: as long as it takes; 0: -EAGAIN at once, a
 * pure try), recovering the claim of a writer found dead: a claim that
 * stays the same for a millisecond has its holder looked at (in /proc),
 * and again every millisecond. */
OMNI_API int omni_ctl_read(void *base, size_t len, uint64_t off, void *buf, size_t n,
			   int timeout_ms, omni_ctl_snapshot *snap);
/* Claims the block for this process: *t is its ticket, held until
 * omni_ctl_end.  expected OMNI_CTL_ANY waits up to timeout_ms for a live
 * writer to finish, recovering a dead one's claim as omni_ctl_read does
 * (< 0: as long as it takes; 0: -EAGAIN at once, a pure try); any other
 * value claims only if seq is still exactly expected, else -ESTALE at once
 * (optimistic concurrency: read, compute, claim what you read), after
 * recovering the claim it found if its holder is dead. */
OMNI_API int omni_ctl_begin(void *base, size_t len, uint64_t expected, int timeout_ms,
			    omni_ctl_ticket *t);
#define OMNI_CTL_TORN 0x1   /* omni_ctl_end: the write did not complete */
/* Publishes the write of ticket t (the next even seq; generation + 1 and
 * torn cleared, or with OMNI_CTL_TORN torn set and counted).  Always
 * releases; -EOWNERDEAD when t no longer holds the block. */
OMNI_API int omni_ctl_end(void *base, const omni_ctl_ticket *t, int flags);
/* Recovers the block if a dead writer holds it: only one of pid (0: any)
 * whose start time is start (0: any).  1 recovered, 0 nothing to do.
 * Needs only the header mapped (len >= OMNI_CTL_HEADER_SIZE). */
OMNI_API int omni_ctl_recover(void *base, size_t len, int pid, uint64_t start);
/* The start time of process pid (field 22 of /proc/<pid>/stat, in clock
 * ticks after boot) into *start; -ESRCH when it is gone or a zombie. */
OMNI_API int omni_ctl_proc_start(int pid, uint64_t *start);

/*
 * Why a request failed: the "reason" of a failed reply.  One table for the
 * daemon, the CLI and the clients (the Python client mirrors it and a test
 * checks that the two agree).  Numbers are never reused.
 *
 *   class    meaning                                   omnipkg exit code
 *   JOB      the code ran (or was cut short) and failed         1
 *   REFUSED  the request was turned down before any code ran    2
 *   SYSTEM   the daemon or a worker could not do its part     111
 */
#define OMNI_REASONS(X) \
	X(EXCEPTION, 1, "exception", JOB)    /* the code raised */                   \
	X(TIMEOUT,   2, "timeout",   JOB)    /* ran past its timeout; worker killed */ \
	X(SIGNAL,    3, "signal",    JOB)    /* the worker died of a signal */        \
	X(EXIT,      4, "exit",      JOB)    /* the worker exited mid-job */          \
	X(CANCELLED, 5, "cancelled", JOB)    /* cancelled before it finished */       \
	X(BADSPEC,   6, "badspec",   REFUSED) /* spec or tag not valid */             \
	X(NOPYTHON,  7, "nopython",  REFUSED) /* no such interpreter */               \
	X(NOBUBBLE,  8, "nobubble",  REFUSED) /* a package of the spec not installed */ \
	X(BUSY,      9, "busy",      REFUSED) /* every worker busy (max_workers) */    \
	X(BADARG,   10, "badarg",    REFUSED) /* unknown key, wrong type, bad value */ \
	X(TOOLARGE, 11, "toolarge",  REFUSED) /* over a size limit */                 \
	X(BADCODE,  12, "badcode",   REFUSED) /* code is not valid UTF-8 text */       \
	X(PROTO,    13, "proto",     REFUSED) /* bad frame, version or op */           \
	X(NOSEGMENT,14, "nosegment", REFUSED) /* no such shared segment */             \
	X(QUOTA,    15, "quota",     REFUSED) /* over the shared-memory quota */       \
	X(SPAWN,    16, "spawn",     SYSTEM) /* the worker could not start */          \
	X(SHUTDOWN, 17, "shutdown",  SYSTEM) /* the daemon is stopping */              \
	X(NOMEM,    18, "nomem",     SYSTEM) /* out of memory or descriptors */ \
	X(LEASED,   19, "leased",    REFUSED) /* a job uses that segment */          \
	X(MEMORY,   20, "memory",    JOB)    /* the worker went over max_memory_mb */

enum omni_reason {
	OMNI_REASON_NONE = 0,
#define OMNI_REASON_ENUM_(name, num, text, cls) OMNI_REASON_##name = num,
	OMNI_REASONS(OMNI_REASON_ENUM_)
#undef OMNI_REASON_ENUM_
	OMNI_REASON_MAX
};

enum omni_reason_class { OMNI_REASON_JOB = 1, OMNI_REASON_REFUSED = 2, OMNI_REASON_SYSTEM = 3 };

/* "timeout" for OMNI_REASON_TIMEOUT; "" for NONE; NULL when unknown. */
OMNI_API const char *omni_reason_name(int reason);
/* The number of a reason's name; 0 (NONE) for "" or NULL; -1 unknown. */
OMNI_API int omni_reason_code(const char *name);
/* enum omni_reason_class of a reason; 0 when unknown or NONE. */
OMNI_API int omni_reason_class(int reason);

OMNI_API const char *omni_strerror(int err);
OMNI_API const char *omni_version(void);

#ifdef __cplusplus
}
#endif
#endif
