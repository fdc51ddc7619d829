/*
 * omnicuda.h - libomnipkg-cuda: device buffers shared between processes
 * through the CUDA driver API.
 *
 * The driver (libcuda.so.1, or the file named by $OMNIPKG_CUDA_DRIVER) is
 * dlopen()ed at first use and never linked, so the daemon and the zygote
 * never carry it; a process that calls none of these functions never maps
 * it.  Workers reach this library through ctypes.
 *
 * A buffer crosses as an ocu_handle: the IPC handle of its allocation's
 * base (cuMemGetAddressRange), the offset of the buffer inside it and its
 * length, so a tensor sub-allocated by a caching allocator maps at the
 * right address.  An importing process opens each allocation once and
 * keeps it in a cache keyed by the IPC handle, counting its users; an
 * entry nobody uses stays mapped (so the next call with the same handle
 * opens nothing) until OCU_IDLE_MAX newer idle entries push it out or
 * ocu_trim() / ocu_unload() runs.
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
#define OCU_HANDLE_VERSION 1u
#define OCU_IPC_BYTES 64
#define OCU_WIRE_SIZE 104 /* bytes of an encoded handle */
#define OCU_IDLE_MAX 16

enum ocu_kind {
	OCU_KIND_IPC = 1, /* cuIpcGetMemHandle of the allocation's base */
};

struct ocu_handle {
	uint32_t kind;		  /* enum ocu_kind */
	int32_t device;		  /* ordinal of the producer's device */
	uint64_t alloc_size;	  /* bytes of the whole allocation */
	uint64_t offset;	  /* of the buffer from the allocation base */
	uint64_t nbytes;	  /* of the buffer */
	unsigned char ipc[OCU_IPC_BYTES];
};

/* Load the driver, cuInit it and check for a device (idempotent). */
int ocu_load(char *err, size_t errlen);
/* Close every cached mapping and unload the driver (tests, shutdown). */
void ocu_unload(void);

/*
 * Describe nbytes at device pointer ptr for another process.  stream (a
 * CUstream, 0 for the legacy default) is synchronised first, so whatever
 * the producer queued on it is written before the handle leaves.
 */
int ocu_export(uint64_t ptr, uint64_t nbytes, void *stream, struct ocu_handle *out,
	       char *err, size_t errlen);

/*
 * Map h in this process (opened once per allocation, cached) and store the
 * buffer's device address in *ptr; the mapping is held until a matching
 * ocu_release(h).  A current context is made from the device's primary
 * context when the thread has none.
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
/* cuIpcOpenMemHandle calls this process made (cache misses); stats, tests. */
uint64_t ocu_opens(void);
/* Users of h's mapping (0 idle, -1 not cached); for tests and stats. */
int ocu_refs(const struct ocu_handle *h);

/* Fixed little-endian wire form: OCU_WIRE_SIZE bytes, strict decode. */
void ocu_handle_encode(const struct ocu_handle *h, unsigned char out[OCU_WIRE_SIZE]);
int ocu_handle_decode(const void *buf, size_t len, struct ocu_handle *h, char *err,
		      size_t errlen);
/* Hex of the wire form (2*OCU_WIRE_SIZE + 1 bytes with the NUL) and back. */
void ocu_handle_hex(const struct ocu_handle *h, char out[2 * OCU_WIRE_SIZE + 1]);
int ocu_handle_unhex(const char *hex, struct ocu_handle *h, char *err, size_t errlen);

#endif
