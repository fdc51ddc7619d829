/*
 * omnicuda.h - libomnipkg-cuda: device buffers shared between processes
 * through the CUDA driver API.
 *
 * The driver (libcuda.so.1, or the file named by $OMNIPKG_CUDA_DRIVER) is
 * dlopen()ed at first use and never linked, so the daemon and the zygote
 * never carry it; a process that calls none of these functions never maps
 * it.  Workers reach this library through ctypes.
 *
 * A buffer crosses as an ocu_handle: what names its allocation, the
 * offset of the buffer inside it and its length, so a tensor
 * sub-allocated by a caching allocator maps at the right address.  The
 * allocation is named one of two ways:
 *
 *   OCU_KIND_IPC  the legacy IPC handle of its base (cuMemGetAddressRange,
 *                 cuIpcGetMemHandle): cudaMalloc-style memory;
 *   OCU_KIND_FD   a POSIX descriptor (cuMemExportToShareableHandle) of a VMM
 *                 allocation made to allow one (cuMemCreate with
 *                 CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR in its
 *                 requestedHandleTypes, as PyTorch's expandable segments
 *                 are).  The descriptor travels beside the handle (SCM_RIGHTS)
 *                 and is numbered anew in every process, so the handle names
 *                 the allocation by the producer's pid, a random number the
 *                 producer drew once, and the driver's buffer id of the
 *                 allocation (never reused in a process).  An importer maps
 *                 it with cuMemImportFromShareableHandle, cuMemAddressReserve,
 *                 cuMemMap and cuMemSetAccess.
 *
 * An importing process opens each allocation once and keeps it in a cache
 * keyed by that name, counting its users; an entry nobody uses stays
 * mapped (so the next call with the same handle opens nothing) until
 * OCU_IDLE_MAX newer idle entries push it out or ocu_trim() / ocu_unload()
 * runs.
 *
 * Ordering: the producer records an interprocess event (CU_EVENT_INTERPROCESS
 * | CU_EVENT_DISABLE_TIMING, one per stream, kept for the process's life
 * because an importer's copy must not outlive it) on the buffer's stream
 * after what it queued there, and its IPC handle travels in the handle
 * (OCU_HAS_EVENT); the importer opens the event once (cached the same
 * way) and waits for it before the buffer is used.  Where the driver has
 * no IPC events, or OCU_EXPORT_SYNC asks, or OCU_EVENTS_MAX streams have
 * one already, the producer synchronises the stream instead.
 *
 * Errors: every function returns 0 or a negative errno value and, where it
 * takes err/errlen, writes a readable line there: -ENOENT "no CUDA driver
 * (libcuda.so.1 not found)", -ENODEV "no CUDA device", -EINVAL for a bad
 * handle or range, -EIO for any other driver error (with cuGetErrorString).
 * Not thread-safe: callers serialise (a worker runs one job at a time).
 */
#ifndef OMNICUDA_H
#define OMNICUDA_H

#include <stddef.h>
#include <stdint.h>

#define OCU_HANDLE_MAGIC 0x4f435548u /* "OCUH" */
#define OCU_HANDLE_VERSION 2u
#define OCU_IPC_BYTES 64
#define OCU_WIRE_SIZE 176 /* bytes of an encoded handle */
#define OCU_IDLE_MAX 16
#define OCU_EVENTS_MAX 32 /* streams with an event, and events opened, per process */

enum ocu_kind {
	OCU_KIND_IPC = 1, /* cuIpcGetMemHandle of the allocation's base */
	OCU_KIND_FD = 2,  /* a VMM allocation's POSIX descriptor, named in ipc */
};

#define OCU_HAS_EVENT 0x1u /* flags: event holds an IPC event to wait for */

/* ocu_export_with flags */
#define OCU_EXPORT_IPC 0x1u  /* the legacy IPC handle, even of a VMM allocation */
#define OCU_EXPORT_FD 0x2u   /* a POSIX descriptor, or -EINVAL if the allocation has none */
#define OCU_EXPORT_SYNC 0x4u /* synchronise the stream; no event */

struct ocu_handle {
	uint32_t kind;		  /* enum ocu_kind */
	int32_t device;		  /* ordinal of the producer's device */
	uint64_t alloc_size;	  /* bytes of the whole allocation */
	uint64_t offset;	  /* of the buffer from the allocation base */
	uint64_t nbytes;	  /* of the buffer */
	uint32_t flags;		  /* OCU_HAS_EVENT */
	int32_t fd;		  /* OCU_KIND_FD: the descriptor in this process,
				     -1 none; never on the wire */
	unsigned char ipc[OCU_IPC_BYTES];   /* IPC: the driver's handle; FD: "OCUF",
					       pid, random u64, buffer id u64 (LE) */
	unsigned char event[OCU_IPC_BYTES]; /* OCU_HAS_EVENT: cuIpcGetEventHandle */
};

/* Load the driver, cuInit it and check for a device (idempotent). */
int ocu_load(char *err, size_t errlen);
/* Close every cached mapping and event and unload the driver (tests,
 * shutdown). */
void ocu_unload(void);

/*
 * Describe nbytes at device pointer ptr for another process: as
 * ocu_export_with(ptr, nbytes, stream, 0, ...), which picks the kind (a
 * descriptor where the allocation allows one, else the IPC handle) and
 * orders the importer after what the producer queued on stream (a
 * CUstream, 0 for the legacy default) with an event.
 */
int ocu_export(uint64_t ptr, uint64_t nbytes, void *stream, struct ocu_handle *out,
	       char *err, size_t errlen);
/*
 * The same, as flags (OCU_EXPORT_*) ask.  For OCU_KIND_FD, out->fd is a
 * new descriptor (close-on-exec) the caller owns and closes once sent;
 * else -1.
 */
int ocu_export_with(uint64_t ptr, uint64_t nbytes, void *stream, unsigned flags,
		    struct ocu_handle *out, char *err, size_t errlen);

/*
 * Map h in this process (opened once per allocation, cached) and store the
 * buffer's device address in *ptr; the mapping is held until a matching
 * ocu_release(h).  A current context is made from the device's primary
 * context when the thread has none.  An OCU_KIND_FD handle needs h->fd
 * when its allocation is not mapped yet (borrowed: the caller closes it;
 * the driver keeps what it needs).  With OCU_HAS_EVENT it first waits on
 * the host for the producer's event.
 */
int ocu_import(const struct ocu_handle *h, uint64_t *ptr, char *err, size_t errlen);
/*
 * Wait for everything queued in this thread's context (a consumer calls it
 * before it replies, so its writes into an imported buffer are done).
 */
int ocu_sync(char *err, size_t errlen);
/* Drop one use of h; -ENOENT if h is not imported. */
int ocu_release(const struct ocu_handle *h);
/* Close every cached mapping with no user; returns how many it closed. */
int ocu_trim(void);
/* Allocations this process opened (cache misses); stats, tests. */
uint64_t ocu_opens(void);
/* Users of h's mapping (0 idle, -1 not cached); for tests and stats. */
int ocu_refs(const struct ocu_handle *h);

/* Fixed little-endian wire form: OCU_WIRE_SIZE bytes, strict decode (the
 * decoded handle's fd is -1). */
void ocu_handle_encode(const struct ocu_handle *h, unsigned char out[OCU_WIRE_SIZE]);
int ocu_handle_decode(const void *buf, size_t len, struct ocu_handle *h, char *err,
		      size_t errlen);
/* Hex of the wire form (2*OCU_WIRE_SIZE + 1 bytes with the NUL) and back. */
void ocu_handle_hex(const struct ocu_handle *h, char out[2 * OCU_WIRE_SIZE + 1]);
int ocu_handle_unhex(const char *hex, struct ocu_handle *h, char *err, size_t errlen);

#endif
