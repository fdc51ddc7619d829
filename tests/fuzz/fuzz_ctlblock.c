/*
 * fuzz_ctlblock.c - libFuzzer harness for what client_ctl.c reads from
 * files and mappings it does not control.  The first byte picks:
 *
 *   even  the rest is the text of a /proc/<pid>/stat (client_ctl_parse_stat):
 *         an accepted text has its state letter and start time in it;
 *   odd   the rest is the image of a control block (any bytes a peer could
 *         have left in a segment): check, read, claim, publish and recover
 *         never touch a byte outside it, and on a block they accept the
 *         seqlock's rules hold (a claim is odd and ours, its publish is the
 *         next even seq and one more generation).
 *
 * Every call uses timeout 0, so nothing sleeps.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_ctl.h"
#include "omnipkg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_stat(const uint8_t *data, size_t size)
{
	char state = 0;
	uint64_t start = 0;

	if (client_ctl_parse_stat((const char *)data, size, &state, &start) == 0 &&
	    !memchr(data, state, size))
		abort();
}

static void fuzz_block(const uint8_t *data, size_t size)
{
	/* an exact-size heap copy, 8-byte aligned: ASan sees any overrun */
	uint64_t *blk = malloc(size ? size : 1);
	omni_ctl_header *h = (omni_ctl_header *)blk;
	omni_ctl_snapshot snap;
	omni_ctl_ticket t;
	unsigned char buf[64];
	int r;

	if (!blk)
		return;
	memcpy(blk, data, size);
	r = omni_ctl_check(blk, size);
	if (r == 0 && (h->flags & OMNI_CTL_FILELOCK)) {
		if (omni_ctl_read(blk, size, 0, buf, 0, 0, &snap) != -EOPNOTSUPP ||
		    omni_ctl_begin(blk, size, OMNI_CTL_ANY, 0, &t) != -EOPNOTSUPP)
			abort();
	} else if (r == 0) {
		uint64_t rs = h->record_size, gen;
		size_t n = rs < sizeof buf ? (size_t)rs : sizeof buf;

		r = omni_ctl_read(blk, size, rs - n, buf, n, 0, &snap);
		if (r == -ERANGE || (r == 0 && (snap.seq & 1)))
			abort();
		if (omni_ctl_read(blk, size, rs, buf, 1, 0, &snap) != -ERANGE)
			abort();
		gen = h->generation;
		if (omni_ctl_begin(blk, size, OMNI_CTL_ANY, 0, &t) == 0) {
			if (!(t.word & 1) || h->seq != t.word ||
			    t.word >> OMNI_CTL_PID_SHIFT != (uint64_t)getpid() ||
			    h->owner_pid != (uint64_t)getpid())
				abort();
			if (omni_ctl_end(blk, &t, 0) != 0 || h->seq & 1 ||
			    h->seq != ((t.word & OMNI_CTL_SEQ_MASK) + 1) % (OMNI_CTL_SEQ_MASK + 1) ||
			    h->generation != gen + 1 || h->torn || h->owner_pid)
				abort();
		}
		(void)omni_ctl_begin(blk, size, h->seq, 0, &t);
	}
	(void)omni_ctl_recover(blk, size, 0, 0);
	(void)omni_ctl_format(blk, size, 0);
	free(blk);

	/* a zeroed block of the same size formats and checks */
	if (size >= OMNI_CTL_HEADER_SIZE && (blk = calloc(1, size))) {
		if (omni_ctl_format(blk, size, 0) != 0 || omni_ctl_check(blk, size) != 0)
			abort();
		free(blk);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_block(data + 1, size - 1);
	else
		fuzz_stat(data + 1, size - 1);
	return 0;
}
