/*
 * proto.c - framing and strict decoding of the wire protocol (proto.h).
 *
 * Both ends of every channel go through these functions, so a frame that
 * one side accepts is exactly a frame the other side can produce.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const proto_ops[] = {
	[PROTO_OP_HELLO] = "hello",
	[PROTO_OP_EXEC] = "exec",
	[PROTO_OP_STATUS] = "status",
	[PROTO_OP_WORKERS] = "workers",
	[PROTO_OP_PYTHONS] = "pythons",
	[PROTO_OP_LIST] = "list",
	[PROTO_OP_SHUTDOWN] = "shutdown",
};

#define PROTO_NOPS ((int)(sizeof(proto_ops) / sizeof(proto_ops[0])))

const char *proto_op_name(int op)
{
	if (op <= 0 || op >= PROTO_NOPS)
		return NULL;
	return proto_ops[op];
}

int proto_op_code(const char *name)
{
	if (!name)
		return -1;
	for (int op = 1; op < PROTO_NOPS; op++)
		if (proto_ops[op] && strcmp(proto_ops[op], name) == 0)
			return op;
	return -1;
}

long proto_frame_parse(const char *buf, size_t len, const char **payload, size_t *plen)
{
	const unsigned char *p = (const unsigned char *)buf;
	uint32_t n;

	if (len < PROTO_HDR)
		return 0;
	n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	/* Judged from the header alone, so a hostile length is refused before
	 * the reader buffers anything for it. */
	if (n == 0)
		return -EBADMSG;
	if (n > PROTO_MAX_FRAME)
		return -EMSGSIZE;
	if (len - PROTO_HDR < n)
		return 0;
	*payload = buf + PROTO_HDR;
	*plen = n;
	return (long)(PROTO_HDR + n);
}

int proto_frame_hdr(unsigned char hdr[PROTO_HDR], size_t plen)
{
	if (plen == 0 || plen > PROTO_MAX_FRAME)
		return -EMSGSIZE;
	hdr[0] = (unsigned char)(plen >> 24);
	hdr[1] = (unsigned char)(plen >> 16);
	hdr[2] = (unsigned char)(plen >> 8);
	hdr[3] = (unsigned char)plen;
	return 0;
}

char *proto_encode(const cJSON *msg, size_t *len_out)
{
	char *json, *frame;
	size_t n;

	json = cJSON_PrintUnformatted(msg);
	if (!json)
		return NULL;
	n = strlen(json);
	if (n == 0 || n > PROTO_MAX_FRAME || !(frame = malloc(PROTO_HDR + n))) {
		cJSON_free(json);
		return NULL;
	}
	proto_frame_hdr((unsigned char *)frame, n);
	memcpy(frame + PROTO_HDR, json, n);
	cJSON_free(json);
	if (len_out)
		*len_out = PROTO_HDR + n;
	return frame;
}

static int proto_fail(int rc, char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
	return rc;
}

/* Only whitespace may follow the object; cJSON alone would accept "{}x". */
static int proto_only_space(const char *p, const char *end)
{
	for (; p < end; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			return 0;
	return 1;
}

int proto_decode(const char *payload, size_t plen, cJSON **out, uint64_t *id,
		 char *err, size_t errlen)
{
	const char *end = NULL;
	cJSON *msg, *jid, *jv, *jop;
	double d;
	int op;

	*out = NULL;
	*id = 0;
	if (plen == 0 || plen > PROTO_MAX_FRAME)
		return proto_fail(-EBADMSG, err, errlen, "empty or oversized payload");
	if (memchr(payload, '\0', plen))
		return proto_fail(-EBADMSG, err, errlen, "NUL byte in payload");
	msg = cJSON_ParseWithLengthOpts(payload, plen, &end, 0);
	if (!msg || !end || !proto_only_space(end, payload + plen)) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen, "payload is not valid JSON");
	}
	if (!cJSON_IsObject(msg)) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen, "payload is not a JSON object");
	}

	/* The id is read first so that every later error can be answered. */
	jid = cJSON_GetObjectItemCaseSensitive(msg, "id");
	if (!jid) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen, "missing \"id\"");
	}
	d = jid->valuedouble;
	/* Range first (NaN fails it too), then the integer round trip is exact. */
	if (!cJSON_IsNumber(jid) || !(d >= 1 && d <= PROTO_MAX_ID) || (double)(uint64_t)d != d) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen,
				  "\"id\" must be an integer from 1 to 2^53");
	}
	*id = (uint64_t)d;

	jv = cJSON_GetObjectItemCaseSensitive(msg, "v");
	if (!jv || !cJSON_IsNumber(jv)) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen, "missing or non-numeric \"v\"");
	}
	if (jv->valuedouble != PROTO_VERSION) {
		if (err && errlen)
			snprintf(err, errlen, "protocol version %g not supported (this side speaks %d)",
				 jv->valuedouble, PROTO_VERSION);
		cJSON_Delete(msg);
		return -EPROTONOSUPPORT;
	}

	jop = cJSON_GetObjectItemCaseSensitive(msg, "op");
	if (!cJSON_IsString(jop) || !jop->valuestring) {
		cJSON_Delete(msg);
		return proto_fail(-EBADMSG, err, errlen, "missing or non-string \"op\"");
	}
	op = proto_op_code(jop->valuestring);
	if (op < 0) {
		if (err && errlen)
			snprintf(err, errlen, "unknown op \"%.64s\"", jop->valuestring);
		cJSON_Delete(msg);
		return -EOPNOTSUPP;
	}
	*out = msg;
	return op;
}

cJSON *proto_reply_error(int err, const char *reason, const char *fmt, ...)
{
	cJSON *r = cJSON_CreateObject();
	char msg[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cJSON_AddBoolToObject(r, "ok", 0);
	cJSON_AddStringToObject(r, "error", msg);
	if (err)
		cJSON_AddNumberToObject(r, "errno", err);
	if (reason)
		cJSON_AddStringToObject(r, "reason", reason);
	return r;
}
