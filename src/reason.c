/*
 * reason.c - the table of failure reasons declared in omnipkg.h.
 */
#include <stddef.h>
#include <string.h>
#include "omnipkg.h"

static const struct {
	const char *name;
	int cls;
} reasons[OMNI_REASON_MAX] = {
	[OMNI_REASON_NONE] = { "", 0 },
#define OMNI_REASON_ROW_(n, num, text, c) [num] = { text, OMNI_REASON_##c },
	OMNI_REASONS(OMNI_REASON_ROW_)
#undef OMNI_REASON_ROW_
};

const char *omni_reason_name(int reason)
{
	return reason >= 0 && reason < OMNI_REASON_MAX ? reasons[reason].name : NULL;
}

int omni_reason_code(const char *name)
{
	if (!name || !*name)
		return OMNI_REASON_NONE;
	for (int i = 1; i < OMNI_REASON_MAX; i++)
		if (reasons[i].name && strcmp(reasons[i].name, name) == 0)
			return i;
	return -1;
}

int omni_reason_class(int reason)
{
	return reason > 0 && reason < OMNI_REASON_MAX ? reasons[reason].cls : 0;
}
