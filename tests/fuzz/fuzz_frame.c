/*
 * fuzz_frame.c - libFuzzer harness for proto_frame_parse: any byte string
 * is either incomplete, refused, or one frame whose header round-trips
 * through proto_frame_hdr and whose payload lies inside the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data, *payload = NULL;
	unsigned char hdr[PROTO_HDR];
	size_t plen = 0;
	long r = proto_frame_parse(buf, size, &payload, &plen);

	if (r == 0) {
		uint32_t n = size < PROTO_HDR ? 0 : (uint32_t)data[0] << 24 |
			(uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];

		if (size >= PROTO_HDR && size - PROTO_HDR >= n)
			abort();        /* a whole frame was there */
		return 0;
	}
	if (r == -EMSGSIZE || r == -EBADMSG)
		return 0;
	if (r < 0 || (size_t)r > size || payload != buf + PROTO_HDR ||
	    plen == 0 || plen > PROTO_MAX_FRAME || (size_t)r != PROTO_HDR + plen)
		abort();
	if (proto_frame_hdr(hdr, plen) != 0 || memcmp(hdr, data, PROTO_HDR) != 0)
		abort();
	return 0;
}
