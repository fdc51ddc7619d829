/*
 * ctl.h - the command language of <mount>/ctl, parsed apart from acting.
 *
 *   $ echo 'shm create frame 64M' > /omnipkg/ctl
 *   $ echo 'shm rm frame' > /omnipkg/ctl
 *
 * One command per line; words are separated by blanks (space, tab, CR);
 * an empty line or one whose first word starts with '#' does nothing.
 * Sizes are decimal bytes with an optional K, M or G suffix (powers of
 * two, either case) and must fit in an off_t.
 */
#ifndef OMNI_CTL_H
#define OMNI_CTL_H

#include <stdint.h>

enum ctl_op { CTL_NONE = 0, CTL_SHM_CREATE, CTL_SHM_RM };

struct ctl_cmd {
	enum ctl_op op;
	const char *name;       /* borrowed: points into the parsed line */
	int64_t size;           /* CTL_SHM_CREATE only */
};

/*
 * Parses one line (NUL-terminated, no newline); the line is split in
 * place.  Returns 0 with *out filled (op CTL_NONE for an empty or comment
 * line), -EINVAL for an unknown command, a bad size or a bad segment name
 * to create, -ENOENT for a segment name to remove that no segment can have.
 */
int ctl_parse(char *line, struct ctl_cmd *out);

#endif
