/*
 * proto.h - the omnipkgd wire protocol, version 1.
 *
 * One format serves both channels: client <-> daemon (Unix socket) and
 * daemon <-> worker (private socketpair).  A frame is a 4-byte big-endian
 * payload length N (1 <= N <= PROTO_MAX_FRAME) followed by N bytes of UTF-8
 * JSON holding one object.  Anything else is a protocol error and the peer
 * is disconnected.
 *
 * Client requests:  {"v":1, "id":<1..2^53>, "op":"<op>", ...arguments}
 * Daemon replies:   {"v":1, "id":<same id>, "ok":true|false, ...}
 *   a failed request also carries "error" (readable text), "errno" and
 *   "reason" (the names of OMNI_REASONS in omnipkg.h).  The id of a reply
 *   is written as the integer's exact digits.
 *
 * Requests are strict: a key the op does not take, a key given twice, a
 * value of the wrong JSON type or a number out of its range is refused
 * (reason "badarg", naming the key); a string that
 * is not valid UTF-8 is refused ("badcode"), and so is a request larger
 * than PROTO_MAX_FRAME - PROTO_ENVELOPE once re-encoded ("toolarge").
 * Replies may arrive in any order; the id matches them to requests.
 *
 * Ops (numbered in the table below; a number is never reused):
 *   1 hello     -> daemon, version, proto, pid, features (op names, "op.arg"
 *                  for each optional argument, capability words)
 *   2 exec      spec (string), code (string), [python (string), timeout
 *               (number, s, over 0, at most PROTO_MAX_TIMEOUT), tag (string), once (bool), arrays (array),
 *               bind (object), pin (bool), max_memory_mb (number), fds (array)];
 *               optional ones may be null
 *               pin: true pins the worker that serves the job for the rest
 *               of its life: it is never stopped for idleness nor evicted
 *               to stay within max_workers (a later exec without pin does
 *               not unpin; evict still stops it).
 *               max_memory_mb: over 0, at most PROTO_MAX_MEMORY_MB; the
 *               worker's memory is limited to that many MiB before the
 *               job runs, for the rest of its life (a later exec with
 *               another value changes it).  In the worker's own cgroup
 *               when the memory controller is there (memory.max, and
 *               memory.swap.max 0): a job going over it gets the worker
 *               killed and fails with reason "memory"; the next job gets
 *               a new worker.  Else RLIMIT_AS (address space, soft limit:
 *               a job may raise it again) on the worker: a job failing
 *               with MemoryError on a limited worker fails with reason
 *               "memory" and the worker is kept.  status says which
 *               ("memory_limit": "cgroup"|"rlimit").
 *               arrays: up to 64 views of shared segments, bound as globals
 *               before the code runs (numpy ndarrays; a typed memoryview
 *               where the worker has no numpy):
 *                 {"name": identifier, "segment": segment name,
 *                  "dtype": numpy type string ("<f4", ">i8", "|u1", "<c16")
 *                           or name ("float32", "int64", "bool"),
 *                  "shape": [n, ...] (0..32 dims, each >= 0),
 *                  "offset": bytes (default 0),
 *                  "strides": [bytes, ...] (default C order; may be
 *                             negative or Fortran order),
 *                  "access": "in"|"out"|"inout" (default "inout")}
 *               each checked against the registry before any code runs: the
 *               segment exists and is this client's or persistent, every
 *               byte the view can reach lies inside it, the dtype is a plain
 *               fixed-size type, offset and strides are multiples of its
 *               alignment; a bad one is refused (badarg, or nosegment)
 *               naming the array and the field.  The job leases each
 *               segment until it ends.
 *               bind: {identifier: any JSON value} bound as globals as is
 *               (never pasted into source); a value of the form
 *               {"__ndarray__": {"dtype": s, "shape": [...], "data": [flat
 *               list, C order]}} becomes a numpy array of that dtype in a
 *               worker that has numpy (else the plain list), so small
 *               arrays sent as JSON keep their dtype.
 *               fds: the descriptors sent with the request's frame
 *               (SCM_RIGHTS on its first byte; at most CHAN_MAX_FDS, 8),
 *               one entry each, in order:
 *                 {"for": a global of bind, "kind": "cuda",
 *                  "dev": st_dev, "ino": st_ino (the file as the client
 *                         fstat()s it; integers up to 2^53)}
 *               the count must match what came, each descriptor must be
 *               that file and a device, memory file or anonymous inode,
 *               and one global gets one at most; else badarg, and the
 *               descriptors are closed.  A request of another op that
 *               carries any is refused (badarg).  The job keeps them
 *               until it ends and the worker gets them with the job.
 *               A bind value {"__cuda_ipc__": {...}} of kind fd (a CUDA
 *               VMM allocation's POSIX descriptor) needs one.
 *               A `result` that is a numpy array comes back as
 *               result_array {segment, dtype, shape, strides, offset, path,
 *               size}: a
 *               view of a segment it already lived in, or a new segment
 *               owned by this client (never JSON).
 *               -> ok, stdout, stderr, stdout_bytes, stderr_bytes,
 *                  stdout_truncated, stderr_truncated, result (when the code
 *                  set `result`), error, traceback, reason (a name of
 *                  OMNI_REASONS), duration and wall (s), worker_pid, spec
 *                  (canonical), python (path), python_version, tag, and for
 *                  the job that started its worker worker_start_ms and
 *                  started_by ("zygote"|"exec"); signal or exit_code when
 *                  the worker died; result_array {segment, dtype, shape,
 *                  strides, offset, path, size} when `result` was a numpy
 *                  array
 *   3 status    -> pid, version, proto, uptime, home, runtime_dir, socket,
 *                  clients, workers, jobs, jobs_failed, workers_started,
 *                  crashes, timeouts, cancelled, leftovers_killed,
 *                  containment ("cgroup"|"proc"), pythons_probed,
 *                  pythons_probe_failed, zygotes: [...], shm: {dir,
 *                  segments, bytes, quota, quota_enforced_by_kernel},
 *                  memory_limit ("cgroup"|"rlimit": how max_memory_mb is
 *                  enforced), idle_pool: {python path: {count,
 *                  zygote_pid (0: none now), ready}}
 *   4 workers   -> workers: [{spec, python, version, tag, pid, state, jobs,
 *                  queued, rss_kb, idle_s, start_ms, started_by, once,
 *                  pinned, max_memory_mb (0: none), last_used (UNIX
 *                  time, s: when its last job ended, or it started)}]
 *   5 pythons   -> pythons: [{name, version, path, tag, source, default,
 *                  short_name_target}]
 *   6 list      -> bubbles: [{tag, name, version, path}]
 *   7 shutdown  -> {} (the daemon then stops)
 *   8 cancel    target (number: the id of an exec sent on this connection)
 *               -> {} once that job has been failed with reason
 *                  "cancelled" (a running one's worker is killed); errno
 *                  ENOENT when it is not queued or running
 *   9 shm_create  size (number, bytes), [name (string), persist (bool),
 *               dtype (string), shape (array)]: dtype and shape only
 *               describe the contents (shown by shm_list and the mount)
 *               -> segment {name, id, gen, size, path}: a new segment,
 *                  pages reserved (quota: reason "quota"; a name in use:
 *                  EEXIST).  Without a name the daemon picks one.  It
 *                  belongs to this connection and goes when it closes
 *                  (once no job leases it), unless persist is true.
 *  10 shm_list  -> segments: [{name, id, gen, size, leases, persist, path,
 *                  dtype, shape (when known)}]
 *  11 shm_remove  name (string) -> {}; a segment a job leases is refused
 *                  (reason "leased"), an unknown one "nosegment"
 *  12 evict     spec (string), [python (string), tag (string)]: the key of
 *               a worker, resolved as exec resolves it (a bad spec or tag
 *               is refused, "badspec"; a python no worker could have
 *               matches nothing)
 *               -> evicted: [pid...] ([] when nothing matched): the
 *                  workers of that key stop, pinned ones too: an idle one
 *                  now, a busy one as soon as its job ends (that job is
 *                  not failed), one still starting once it is ready (its
 *                  pid listed when known).  Jobs queued on them stay
 *                  queued and get a new worker, as do later execs.
 *  13 idle_config  [python (string), count (integer 0..PROTO_MAX_IDLE_COUNT)]
 *               -> config: {python path: count}.  Without count it only
 *                  reads; count needs python (badarg), which is resolved
 *                  as exec resolves it ("nopython").  count >= 1 keeps
 *                  that interpreter's zygote started at all times (started
 *                  now, started again when it dies); 0, the default,
 *                  leaves it to start on demand (and drops the entry).
 *                  One zygote serves any number of forks: the count is
 *                  recorded as given, not a number of processes.
 *
 * Worker channel (the worker runtime: src/worker/omniworker):
 *   worker -> daemon  {"op":"ready", "pid":n, "python":"3.11.7", "executable":s}
 *                     (a zygote adds "zygote":true)
 *   daemon -> worker  {"op":"exec", "id":n, "code":s, "cap":bytes,
 *                      "arrays":[{name, path, segment, id, gen, size, dtype,
 *                                 shape, strides, offset, access}],
 *                      "bind":{...}, "shm_dir":s, "fds":[{for, kind}]}
 *                     cap optional (1 MiB); arrays, bind, shm_dir, fds only
 *                     when used (fds: the job's descriptors, sent with the
 *                     frame's first byte, one entry each, in order; the
 *                     worker closes them when the job ends, and a job whose
 *                     count differs fails); dtype as the client gave it, strides always
 *                     given (bytes); a segment is mapped once per (id, gen)
 *                     and kept; other keys are ignored
 *   daemon -> worker  {"op":"unmap", "ids":[segment id...]}: drop those
 *                     mappings (the segments are gone); no answer
 *   worker -> daemon  {"op":"done", "id":n, "ok":b, "stdout":s, "stderr":s,
 *                      "stdout_bytes":n, "stderr_bytes":n,
 *                      "stdout_truncated":b, "stderr_truncated":b,
 *                      "duration":s, "result":any (ok, and the job set it),
 *                      "result_array":{segment, dtype, shape, strides,
 *                      offset} (instead of result, for a numpy array: a
 *                      new segment file the worker made in shm_dir, named
 *                      "r<job id>-<anything>", which the daemon adopts, or
 *                      a segment the job was given),
 *                      "error":"Type: message", "traceback":s (not ok)}
 *   worker -> daemon  {"op":"error", "id":n|null, "error":s} to a message
 *                     that is not an exec with a string "code" (the worker
 *                     goes on)
 *   daemon -> either  {"op":"exit"} or EOF: it exits 0
 *   daemon -> zygote  {"op":"fork", "id":n, "paths":[dir...], "tag":s}
 *                     with the worker's socket end passed by SCM_RIGHTS;
 *                     the forked worker then says "ready" on that socket;
 *                     the zygote answers only a failure:
 *   zygote -> daemon  {"op":"error", "id":n, "error":s}
 *   A frame of length 0 or over PROTO_MAX_FRAME, or EOF inside a frame, is
 *   fatal to the worker (exit 2): the stream can no longer be trusted.
 *
 * Errors: functions return 0 (or a positive count) on success and -errno.
 */
#ifndef OMNI_PROTO_H
#define OMNI_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#define PROTO_VERSION 1
#define PROTO_HDR 4
#define PROTO_MAX_FRAME (16u << 20)
#define PROTO_MAX_ID 9007199254740992.0 /* 2^53: exact in a JSON number */
/* Room kept for what the daemon adds when it forwards a request's text. */
#define PROTO_ENVELOPE 4096

enum proto_op {
	PROTO_OP_HELLO = 1,
	PROTO_OP_EXEC = 2,
	PROTO_OP_STATUS = 3,
	PROTO_OP_WORKERS = 4,
	PROTO_OP_PYTHONS = 5,
	PROTO_OP_LIST = 6,
	PROTO_OP_SHUTDOWN = 7,
	PROTO_OP_CANCEL = 8,
	PROTO_OP_SHM_CREATE = 9,
	PROTO_OP_SHM_LIST = 10,
	PROTO_OP_SHM_REMOVE = 11,
	PROTO_OP_EVICT = 12,
	PROTO_OP_IDLE_CONFIG = 13,
};

#define PROTO_MAX_TIMEOUT 604800      /* exec "timeout": a week, in seconds */
#define PROTO_MAX_MEMORY_MB 1048576   /* exec "max_memory_mb": 1 TiB */
#define PROTO_MAX_IDLE_COUNT 64       /* idle_config "count" */

/*
 * Looks for one whole frame at the start of buf.  Returns the number of
 * bytes the frame occupies (header included) and points *payload (borrowed,
 * inside buf) and *plen at its body; 0 when more bytes are needed;
 * -EMSGSIZE for a length over PROTO_MAX_FRAME; -EBADMSG for length 0.
 */
long proto_frame_parse(const char *buf, size_t len, const char **payload, size_t *plen);
/* The same with a lower bound than PROTO_MAX_FRAME on the payload. */
long proto_frame_parse_max(const char *buf, size_t len, size_t max, const char **payload,
			   size_t *plen);

/* Writes the 4-byte header for a payload of plen bytes; -EMSGSIZE if too big. */
int proto_frame_hdr(unsigned char hdr[PROTO_HDR], size_t plen);

/*
 * Serialises msg into a malloc'd frame (header + JSON).  Caller frees.
 * Returns NULL when out of memory or over PROTO_MAX_FRAME.
 */
char *proto_encode(const cJSON *msg, size_t *len_out);

/*
 * Strictly decodes a client request payload: a JSON object with "v" equal
 * to PROTO_VERSION, an integral "id" in 1..2^53, a known "op" and only the
 * arguments that op takes, of their types (the table in proto.c).
 * On success returns the op number, *out owns the parsed object (caller
 * deletes) and *id is set.  On failure returns -EBADMSG (not JSON, not an
 * object, bad id), -EPROTONOSUPPORT (other version), -EOPNOTSUPP (unknown
 * op), -EILSEQ (a string or key not valid UTF-8), -EINVAL (an argument
 * unknown, repeated, missing, of the wrong type, out of range or without
 * the one it needs) or -EMSGSIZE (too large once re-encoded), writes a
 * readable reason into err, and sets *id when one could be read (0
 * otherwise) so that the error can still be answered.
 */
int proto_decode(const char *payload, size_t plen, cJSON **out, uint64_t *id,
		 char *err, size_t errlen);

/* The enum omni_reason for a negative return of proto_decode. */
int proto_reason(int rc);

/* Sets msg's "id" to id written as exact integer digits (cJSON would round
 * a double near 2^53).  0 or -ENOMEM. */
int proto_set_id(cJSON *msg, uint64_t id);

/* What "hello" lists: op names, "<op>.<arg>" for each optional argument,
 * capability words.  Caller owns the array; NULL when out of memory. */
cJSON *proto_features(void);

/* Whether n bytes at s are strict UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF). */
int proto_utf8_valid(const char *s, size_t n);

/* An upper bound of the bytes cJSON_PrintUnformatted writes for item,
 * exact for strings, objects and arrays of them. */
size_t proto_json_size(const cJSON *item);

/* A successful reply: {"ok": true}, for the caller to add to.  Caller
 * owns it; NULL when out of memory. */
cJSON *proto_reply_ok(void);

/*
 * A failed reply, the one builder of them all: {"ok": false, "error":
 * <text>, "errno": err (when not 0), "reason": <the name of reason, an
 * enum omni_reason> (when not 0)}.  Caller owns it.
 */
cJSON *proto_reply_error(int err, int reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Op name for a number and back; NULL / -1 when unknown. */
const char *proto_op_name(int op);
int proto_op_code(const char *name);

#endif
