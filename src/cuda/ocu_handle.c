/*
 * ocu_handle.c - the wire form of a CUDA buffer handle (omnicuda.h) and its
 * hex text: fixed size, little-endian, strictly decoded.  No driver here,
 * so the fuzzer links this file alone.
 *
 * Wire form, OCU_WIRE_SIZE bytes:
 *     0 magic "OCUH"   4 version   8 kind   12 device      (u32 each)
 *    16 alloc_size    24 offset   32 nbytes                (u64 each)
 *    40 flags (u32)   44 zero (u32)
 *    48 ipc[64]      112 event[64] (zero without OCU_HAS_EVENT)
 * An OCU_KIND_FD handle's ipc is "OCUF", the producer's pid (u32), a
 * random u64 and the allocation's buffer id (u64), then zeros.
 */
#include "omnicuda.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define OCU_EXPORT __attribute__((visibility("default")))

static void seterr(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (!err || !n)
		return;
	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

OCU_EXPORT void ocu_handle_encode(const struct ocu_handle *h, unsigned char out[OCU_WIRE_SIZE])
{
	put32(out, OCU_HANDLE_MAGIC);
	put32(out + 4, OCU_HANDLE_VERSION);
	put32(out + 8, h->kind);
	put32(out + 12, (uint32_t)h->device);
	put64(out + 16, h->alloc_size);
	put64(out + 24, h->offset);
	put64(out + 32, h->nbytes);
	put32(out + 40, h->flags);
	put32(out + 44, 0);
	memcpy(out + 48, h->ipc, OCU_IPC_BYTES);
	memcpy(out + 112, h->event, OCU_IPC_BYTES);
}

OCU_EXPORT int ocu_handle_decode(const void *buf, size_t len, struct ocu_handle *h, char *err,
				 size_t errlen)
{
	const unsigned char *p = buf;
	struct ocu_handle t;

	if (len != OCU_WIRE_SIZE) {
		seterr(err, errlen, "CUDA handle is %zu bytes, not %d", len, OCU_WIRE_SIZE);
		return -EINVAL;
	}
	if (get32(p) != OCU_HANDLE_MAGIC) {
		seterr(err, errlen, "not a CUDA handle (bad magic)");
		return -EINVAL;
	}
	if (get32(p + 4) != OCU_HANDLE_VERSION) {
		seterr(err, errlen, "CUDA handle version %u, this library reads %u", get32(p + 4),
		       OCU_HANDLE_VERSION);
		return -EINVAL;
	}
	t.kind = get32(p + 8);
	t.device = (int32_t)get32(p + 12);
	t.alloc_size = get64(p + 16);
	t.offset = get64(p + 24);
	t.nbytes = get64(p + 32);
	t.flags = get32(p + 40);
	t.fd = -1;
	memcpy(t.ipc, p + 48, OCU_IPC_BYTES);
	memcpy(t.event, p + 112, OCU_IPC_BYTES);
	if (t.kind != OCU_KIND_IPC && t.kind != OCU_KIND_FD) {
		seterr(err, errlen, "CUDA handle kind %u unknown", t.kind);
		return -EINVAL;
	}
	if (t.kind == OCU_KIND_FD && (memcmp(t.ipc, "OCUF", 4) || !zero(t.ipc + 24, 40))) {
		seterr(err, errlen, "CUDA descriptor handle does not name an allocation");
		return -EINVAL;
	}
	if ((t.flags & ~OCU_HAS_EVENT) || get32(p + 44) ||
	    (!(t.flags & OCU_HAS_EVENT) && !zero(t.event, OCU_IPC_BYTES))) {
		seterr(err, errlen, "CUDA handle flags %#x unknown", t.flags);
		return -EINVAL;
	}
	if (t.device < 0) {
		seterr(err, errlen, "CUDA handle device %d", t.device);
		return -EINVAL;
	}
	if (t.offset > t.alloc_size || t.nbytes > t.alloc_size - t.offset) {
		seterr(err, errlen, "CUDA handle offset %llu + %llu bytes overruns its allocation of %llu",
		       (unsigned long long)t.offset, (unsigned long long)t.nbytes,
		       (unsigned long long)t.alloc_size);
		return -EINVAL;
	}
	*h = t;
	return 0;
}

OCU_EXPORT void ocu_handle_hex(const struct ocu_handle *h, char out[2 * OCU_WIRE_SIZE + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char w[OCU_WIRE_SIZE];

	ocu_handle_encode(h, w);
	for (int i = 0; i < OCU_WIRE_SIZE; i++) {
		out[2 * i] = digits[w[i] >> 4];
		out[2 * i + 1] = digits[w[i] & 15];
	}
	out[2 * OCU_WIRE_SIZE] = 0;
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

OCU_EXPORT int ocu_handle_unhex(const char *hex, struct ocu_handle *h, char *err, size_t errlen)
{
	unsigned char w[OCU_WIRE_SIZE];
	size_t n = strlen(hex);

	if (n != 2 * OCU_WIRE_SIZE) {
		seterr(err, errlen, "CUDA handle hex is %zu characters, not %d", n, 2 * OCU_WIRE_SIZE);
		return -EINVAL;
	}
	for (int i = 0; i < OCU_WIRE_SIZE; i++) {
		int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			seterr(err, errlen, "CUDA handle hex has a non-hex character at %d", 2 * i);
			return -EINVAL;
		}
		w[i] = (unsigned char)(hi << 4 | lo);
	}
	return ocu_handle_decode(w, sizeof w, h, err, errlen);
}
