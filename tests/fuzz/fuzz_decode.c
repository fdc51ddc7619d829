/*
 * fuzz_decode.c - libFuzzer harness for proto_decode: a request is either
 * refused with a reason (a known error that maps to a reason of the
 * table), or accepted as an object whose version, id and op say what
 * proto_decode returned, and whose ranged numbers are in their ranges.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "omnipkg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *msg = NULL;
	const cJSON *j;
	uint64_t id = 0;
	char err[256];
	int op;

	err[0] = '\0';
	op = proto_decode((const char *)data, size, &msg, &id, err, sizeof(err));
	if (op < 0) {
		if (msg || !err[0] || memchr(err, '\0', sizeof(err)) == NULL ||
		    (op != -EBADMSG && op != -EPROTONOSUPPORT && op != -EOPNOTSUPP &&
		     op != -EINVAL && op != -EILSEQ && op != -EMSGSIZE && op != -ENOMEM))
			abort();
		if (!omni_reason_name(proto_reason(op)) || proto_reason(op) == 0)
			abort();
		return 0;
	}
	if (!cJSON_IsObject(msg) || id < 1 || id > (uint64_t)PROTO_MAX_ID || !proto_op_name(op))
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "v");
	if (!cJSON_IsNumber(j) || j->valuedouble != PROTO_VERSION)
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "id");
	if (!cJSON_IsNumber(j) || j->valuedouble != (double)id)
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "op");
	if (!cJSON_IsString(j) || proto_op_code(j->valuestring) != op)
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "max_memory_mb");
	if (op == PROTO_OP_EXEC && cJSON_IsNumber(j) &&
	    !(j->valuedouble > 0 && j->valuedouble <= PROTO_MAX_MEMORY_MB))
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "timeout");
	if (op == PROTO_OP_EXEC && cJSON_IsNumber(j) &&
	    !(j->valuedouble > 0 && j->valuedouble <= PROTO_MAX_TIMEOUT))
		abort();
	j = cJSON_GetObjectItemCaseSensitive(msg, "count");
	if (op == PROTO_OP_IDLE_CONFIG && cJSON_IsNumber(j) &&
	    (!(j->valuedouble >= 0 && j->valuedouble <= PROTO_MAX_IDLE_COUNT) ||
	     j->valuedouble != (double)(int)j->valuedouble ||
	     !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "python"))))
		abort();
	cJSON_Delete(msg);
	return 0;
}
