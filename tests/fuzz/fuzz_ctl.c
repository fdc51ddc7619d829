/*
 * fuzz_ctl.c - libFuzzer harness for ctl_parse, fed the way <mount>/ctl
 * feeds it: the written bytes split at newlines.  Every line is refused
 * with -EINVAL/-ENOENT or gives a command whose name is a valid segment
 * name inside the line and whose size is not negative.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ctl.h"
#include "shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *line, *nl;
	struct ctl_cmd c;
	int r;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (line = text; line; line = nl ? nl + 1 : NULL) {
		char *end;

		if ((nl = strchr(line, '\n')))
			*nl = '\0';
		end = line + strlen(line);
		r = ctl_parse(line, &c);
		if (r == -EINVAL || r == -ENOENT)
			continue;
		if (r != 0)
			abort();
		if (c.op == CTL_NONE) {
			if (c.name)
				abort();
			continue;
		}
		if ((c.op != CTL_SHM_CREATE && c.op != CTL_SHM_RM) || !c.name ||
		    c.name < line || c.name >= end || !shm_name_ok(c.name) || c.size < 0 ||
		    (c.op == CTL_SHM_RM && c.size != 0))
			abort();
	}
	free(text);
	return 0;
}
