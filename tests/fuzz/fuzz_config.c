/*
 * fuzz_config.c - libFuzzer harness for the config parser, reached through
 * config_load on a memfd (/proc/self/fd/N) so that the parser stays
 * private to config.c.  A refused file leaves the old settings untouched
 * and says why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	static struct config c, before;
	char err[512];
	int r;

	if (fd < 0) {
		if ((fd = memfd_create("omnipkg-fuzz-config", 0)) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	config_defaults(&c);
	memcpy(&before, &c, sizeof(c));
	err[0] = '\0';
	r = config_load(&c, path, err, sizeof(err));
	if (r < 0 && (!err[0] || memcmp(&c, &before, sizeof(c)) != 0))
		abort();
	if (r == 0 && (c.npythons > CONFIG_MAX_PYTHONS || c.nprewarm > CONFIG_MAX_PREWARM ||
		       !memchr(c.mount, '\0', sizeof(c.mount)) ||
		       !memchr(c.default_python, '\0', sizeof(c.default_python))))
		abort();
	return 0;
}
