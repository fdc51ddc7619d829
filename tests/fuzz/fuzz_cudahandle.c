/*
 * fuzz_cudahandle.c - libFuzzer harness for the CUDA handle wire form
 * (ocu_handle_decode) and its hex form (ocu_handle_unhex): any input is
 * refused with a message, or decodes to a handle of a known kind and
 * flags (no descriptor: those never travel in it) whose buffer lies
 * inside its allocation and which re-encodes to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "omnicuda.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct ocu_handle *h)
{
	if ((h->kind != OCU_KIND_IPC && h->kind != OCU_KIND_FD) || h->device < 0 ||
	    h->offset > h->alloc_size || h->nbytes > h->alloc_size - h->offset || h->fd != -1 ||
	    (h->flags & ~OCU_HAS_EVENT) || (h->kind == OCU_KIND_FD && memcmp(h->ipc, "OCUF", 4)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ocu_handle h;
	unsigned char w[OCU_WIRE_SIZE];
	char err[256], *hex;

	err[0] = 0;
	if (ocu_handle_decode(data, size, &h, err, sizeof err) == 0) {
		check(&h);
		ocu_handle_encode(&h, w);
		if (size != OCU_WIRE_SIZE || memcmp(w, data, size))
			abort();
	} else if (!err[0]) {
		abort();
	}
	hex = malloc(size + 1);
	if (!hex)
		return 0;
	memcpy(hex, data, size);
	hex[size] = 0;
	err[0] = 0;
	if (ocu_handle_unhex(hex, &h, err, sizeof err) == 0)
		check(&h);
	else if (!err[0])
		abort();
	free(hex);
	return 0;
}
