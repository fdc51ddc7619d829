/*
 * test_proto.c - frame codec and strict request decoding.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "omnipkg.h"
#include "proto.h"

/* Builds header + body in buf; returns the total length. */
static size_t frame(char *buf, const char *body)
{
	size_t n = strlen(body);

	proto_frame_hdr((unsigned char *)buf, n);
	memcpy(buf + PROTO_HDR, body, n);
	return PROTO_HDR + n;
}

static int decode(const char *body, cJSON **msg, uint64_t *id, char *err)
{
	return proto_decode(body, strlen(body), msg, id, err, 256);
}

static void test_hdr_big_endian(void)
{
	unsigned char h[PROTO_HDR];

	CU_ASSERT_EQUAL(proto_frame_hdr(h, 0x00a0b0c), 0);
	CU_ASSERT(h[0] == 0x00 && h[1] == 0x0a && h[2] == 0x0b && h[3] == 0x0c);
	CU_ASSERT_EQUAL(proto_frame_hdr(h, PROTO_MAX_FRAME), 0);
	CU_ASSERT_EQUAL(proto_frame_hdr(h, PROTO_MAX_FRAME + 1), -EMSGSIZE);
	CU_ASSERT_EQUAL(proto_frame_hdr(h, 0), -EMSGSIZE);
}

static void test_parse_truncated_header(void)
{
	const char *p = NULL;
	size_t plen = 0;
	char buf[16];

	frame(buf, "{}");
	CU_ASSERT_EQUAL(proto_frame_parse(buf, 0, &p, &plen), 0);
	CU_ASSERT_EQUAL(proto_frame_parse(buf, 3, &p, &plen), 0);
	CU_ASSERT_PTR_NULL(p);
}

static void test_parse_truncated_body(void)
{
	const char *p = NULL;
	size_t plen = 0;
	char buf[64];
	size_t n = frame(buf, "{\"v\":1}");

	CU_ASSERT_EQUAL(proto_frame_parse(buf, n - 1, &p, &plen), 0);
	CU_ASSERT_EQUAL(proto_frame_parse(buf, PROTO_HDR, &p, &plen), 0);
	CU_ASSERT_EQUAL(proto_frame_parse(buf, n, &p, &plen), (long)n);
	CU_ASSERT_PTR_EQUAL(p, buf + PROTO_HDR);
	CU_ASSERT_EQUAL(plen, 7);
}

static void test_parse_oversize(void)
{
	const unsigned char big[4] = { 0x01, 0x00, 0x00, 0x01 }; /* 16 MiB + 1 */
	const unsigned char huge[4] = { 0xff, 0xff, 0xff, 0xff };
	const char *p;
	size_t plen;

	CU_ASSERT_EQUAL(proto_frame_parse((const char *)big, 4, &p, &plen), -EMSGSIZE);
	CU_ASSERT_EQUAL(proto_frame_parse((const char *)huge, 4, &p, &plen), -EMSGSIZE);
}

/* A channel's own bound, judged from the header before the body comes. */
static void test_parse_lower_bound(void)
{
	const char eleven[4] = { 0, 0, 0, 11 };
	const char ten[14] = { 0, 0, 0, 10, '"', '1', '2', '3', '4', '5', '6', '7', '8', '"' };
	const char *p;
	size_t plen;

	CU_ASSERT_EQUAL(proto_frame_parse_max(eleven, 4, 10, &p, &plen), -EMSGSIZE);
	CU_ASSERT_EQUAL(proto_frame_parse_max(ten, sizeof ten, 10, &p, &plen), 14);
	CU_ASSERT_EQUAL(plen, 10);
	CU_ASSERT_EQUAL(proto_frame_parse_max(ten, 8, 10, &p, &plen), 0);
}

static void test_parse_zero_length(void)
{
	const char zero[6] = { 0, 0, 0, 0, '{', '}' };
	const char *p;
	size_t plen;

	CU_ASSERT_EQUAL(proto_frame_parse(zero, sizeof(zero), &p, &plen), -EBADMSG);
}

static void test_parse_two_frames(void)
{
	char buf[64];
	const char *p;
	size_t plen, a, b;
	long used;

	a = frame(buf, "{\"a\":1}");
	b = frame(buf + a, "[2]");
	used = proto_frame_parse(buf, a + b, &p, &plen);
	CU_ASSERT_EQUAL(used, (long)a);
	CU_ASSERT_EQUAL(plen, 7);
	CU_ASSERT_NSTRING_EQUAL(p, "{\"a\":1}", 7);
	used = proto_frame_parse(buf + a, b, &p, &plen);
	CU_ASSERT_EQUAL(used, (long)b);
	CU_ASSERT_EQUAL(plen, 3);
	CU_ASSERT_NSTRING_EQUAL(p, "[2]", 3);
}

static void test_encode_roundtrip(void)
{
	cJSON *m = cJSON_CreateObject(), *out = NULL;
	const char *p;
	size_t len = 0, plen;
	uint64_t id;
	char err[256];
	char *f;

	cJSON_AddNumberToObject(m, "v", 1);
	cJSON_AddNumberToObject(m, "id", 42);
	cJSON_AddStringToObject(m, "op", "exec");
	cJSON_AddStringToObject(m, "spec", "base");
	cJSON_AddStringToObject(m, "code", "print('hi')");
	f = proto_encode(m, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(proto_frame_parse(f, len, &p, &plen), (long)len);
	CU_ASSERT_EQUAL(proto_decode(p, plen, &out, &id, err, sizeof(err)), PROTO_OP_EXEC);
	CU_ASSERT_EQUAL(id, 42);
	CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(out, "code")->valuestring, "print('hi')");
	cJSON_Delete(out);
	cJSON_Delete(m);
	free(f);
}

static void test_decode_ok(void)
{
	cJSON *m = NULL;
	uint64_t id = 0;
	char err[256];

	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":7,\"op\":\"hello\"}", &m, &id, err), PROTO_OP_HELLO);
	CU_ASSERT_EQUAL(id, 7);
	CU_ASSERT_PTR_NOT_NULL(m);
	cJSON_Delete(m);
	CU_ASSERT_EQUAL(decode(" {\"op\":\"shutdown\",\"id\":9007199254740992,\"v\":1}\n", &m, &id, err),
			PROTO_OP_SHUTDOWN);
	CU_ASSERT_EQUAL(id, 9007199254740992ULL);
	cJSON_Delete(m);
}

static void test_decode_malformed(void)
{
	cJSON *m = (cJSON *)1;
	uint64_t id = 5;
	char err[256] = "";

	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":1,\"op\":\"hello\"", &m, &id, err), -EBADMSG);
	CU_ASSERT_PTR_NULL(m);
	CU_ASSERT_EQUAL(id, 0);
	CU_ASSERT_STRING_EQUAL(err, "payload is not valid JSON");
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":1,\"op\":\"hello\"} x", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(decode("not json", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(proto_decode("{\"v\":1}\0{}", 10, &m, &id, err, sizeof(err)), -EBADMSG);
}

static void test_decode_not_object(void)
{
	cJSON *m;
	uint64_t id;
	char err[256] = "";

	CU_ASSERT_EQUAL(decode("[1,2]", &m, &id, err), -EBADMSG);
	CU_ASSERT_STRING_EQUAL(err, "payload is not a JSON object");
	CU_ASSERT_EQUAL(decode("42", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(decode("\"s\"", &m, &id, err), -EBADMSG);
}

static void test_decode_version(void)
{
	cJSON *m = (cJSON *)1;
	uint64_t id = 0;
	char err[256] = "";

	CU_ASSERT_EQUAL(decode("{\"v\":2,\"id\":3,\"op\":\"hello\"}", &m, &id, err), -EPROTONOSUPPORT);
	CU_ASSERT_EQUAL(id, 3);
	CU_ASSERT_PTR_NULL(m);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 2"));
	CU_ASSERT_EQUAL(decode("{\"id\":3,\"op\":\"hello\"}", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(id, 3);
	CU_ASSERT_EQUAL(decode("{\"v\":\"1\",\"id\":3,\"op\":\"hello\"}", &m, &id, err), -EBADMSG);
}

static void test_decode_bad_ids(void)
{
	static const char *const bad[] = {
		"{\"v\":1,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":-1,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":0,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":1.5,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":9007199254740994,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":1e300,\"op\":\"hello\"}",
		"{\"v\":1,\"id\":\"1\",\"op\":\"hello\"}",
		"{\"v\":1,\"id\":null,\"op\":\"hello\"}",
	};
	cJSON *m;
	uint64_t id;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		id = 99;
		err[0] = '\0';
		CU_ASSERT_EQUAL(decode(bad[i], &m, &id, err), -EBADMSG);
		CU_ASSERT_EQUAL(id, 0);
		CU_ASSERT_PTR_NULL(m);
		CU_ASSERT(err[0] != '\0');
	}
}

static void test_decode_unknown_op(void)
{
	cJSON *m;
	uint64_t id;
	char err[256] = "";

	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":8,\"op\":\"reboot\"}", &m, &id, err), -EOPNOTSUPP);
	CU_ASSERT_EQUAL(id, 8);
	CU_ASSERT_STRING_EQUAL(err, "unknown op \"reboot\"");
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":8,\"op\":\"HELLO\"}", &m, &id, err), -EOPNOTSUPP);
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":8,\"op\":5}", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":8}", &m, &id, err), -EBADMSG);
}

static void test_op_names(void)
{
	static const char *const names[] = { NULL, "hello", "exec", "status", "workers",
					     "pythons", "list", "shutdown", "cancel", "shm_create",
					     "shm_list", "shm_remove", "evict", "idle_config" };

	for (int op = 1; op <= 13; op++) {
		CU_ASSERT_STRING_EQUAL(proto_op_name(op), names[op]);
		CU_ASSERT_EQUAL(proto_op_code(names[op]), op);
	}
	CU_ASSERT_EQUAL(PROTO_OP_EVICT, 12);
	CU_ASSERT_EQUAL(PROTO_OP_IDLE_CONFIG, 13);
	CU_ASSERT_PTR_NULL(proto_op_name(0));
	CU_ASSERT_PTR_NULL(proto_op_name(14));
	CU_ASSERT_PTR_NULL(proto_op_name(-1));
	CU_ASSERT_EQUAL(proto_op_code("nope"), -1);
	CU_ASSERT_EQUAL(proto_op_code(NULL), -1);
}

/* Decodes body, expecting rc; err must contain each of the NULL-ended words. */
static void expect(const char *body, int rc, ...)
{
	cJSON *m = (cJSON *)1;
	uint64_t id = 0;
	char err[256] = "";
	va_list ap;
	const char *w;
	int got = decode(body, &m, &id, err);

	CU_ASSERT_EQUAL(got, rc);
	if (got != rc)
		fprintf(stderr, "\n%s: got %d (%s), want %d\n", body, got, err, rc);
	if (rc > 0) {
		CU_ASSERT_PTR_NOT_NULL(m);
		cJSON_Delete(m);
		return;
	}
	CU_ASSERT_PTR_NULL(m);
	va_start(ap, rc);
	while ((w = va_arg(ap, const char *))) {
		CU_ASSERT_PTR_NOT_NULL(strstr(err, w));
		if (!strstr(err, w))
			fprintf(stderr, "\n%s: error \"%s\" lacks \"%s\"\n", body, err, w);
	}
	va_end(ap);
	CU_ASSERT(proto_utf8_valid(err, strlen(err)));
}

#define EXEC "{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\",\"code\":\"1\""

static void test_args_exec_ok(void)
{
	expect(EXEC "}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"python\":\"3.12\",\"timeout\":2.5,\"tag\":\"t\",\"once\":true}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"python\":null,\"timeout\":null,\"tag\":null,\"once\":null}", PROTO_OP_EXEC, NULL);
}

static void test_args_unknown_key(void)
{
	expect(EXEC ",\"pyhton\":\"3.12\"}", -EINVAL, "\"pyhton\"", "exec", NULL);
	expect(EXEC ",\"shm_in\":{}}", -EINVAL, "\"shm_in\"", "exec", NULL);
	expect(EXEC ",\"Spec\":\"base\"}", -EINVAL, "\"Spec\"", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"hello\",\"x\":1}", -EINVAL, "\"x\"", "hello", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"status\",\"spec\":\"base\"}", -EINVAL, "\"spec\"", "status", NULL);
}

static void test_args_wrong_type(void)
{
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":1,\"code\":\"1\"}", -EINVAL,
	       "\"spec\"", "a string", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\",\"code\":null}", -EINVAL,
	       "\"code\"", "a string", NULL);
	expect(EXEC ",\"python\":3.12}", -EINVAL, "\"python\"", "a string or null", NULL);
	expect(EXEC ",\"timeout\":\"5\"}", -EINVAL, "\"timeout\"", "a number or null", NULL);
	expect(EXEC ",\"tag\":[]}", -EINVAL, "\"tag\"", "a string or null", NULL);
	expect(EXEC ",\"once\":1}", -EINVAL, "\"once\"", "true, false or null", NULL);
}

static void test_args_exec_pin_memory(void)
{
	expect(EXEC ",\"pin\":true,\"max_memory_mb\":64}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"pin\":false,\"max_memory_mb\":0.5}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"pin\":null,\"max_memory_mb\":null}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"max_memory_mb\":1048576}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"pin\":1}", -EINVAL, "\"pin\"", "true, false or null", NULL);
	expect(EXEC ",\"pin\":\"yes\"}", -EINVAL, "\"pin\"", NULL);
	expect(EXEC ",\"max_memory_mb\":\"64\"}", -EINVAL, "\"max_memory_mb\"", "a number or null",
	       NULL);
	expect(EXEC ",\"max_memory_mb\":0}", -EINVAL, "exec", "\"max_memory_mb\"", "over 0", NULL);
	expect(EXEC ",\"max_memory_mb\":-1}", -EINVAL, "\"max_memory_mb\"", NULL);
	expect(EXEC ",\"max_memory_mb\":1048576.5}", -EINVAL, "\"max_memory_mb\"", "1048576", NULL);
	expect(EXEC ",\"max_memory_mb\":1e999}", -EINVAL, "\"max_memory_mb\"", NULL);
	expect(EXEC ",\"pin\":true,\"pin\":true}", -EINVAL, "\"pin\"", "twice", NULL);
	expect(EXEC ",\"max_memory_mb\":8,\"max_memory_mb\":8}", -EINVAL, "\"max_memory_mb\"",
	       "twice", NULL);
	expect(EXEC ",\"pinned\":true}", -EINVAL, "unknown key \"pinned\"", NULL);
	expect(EXEC ",\"max_memory\":8}", -EINVAL, "unknown key \"max_memory\"", NULL);
}

/* The timeout range is the table's too, checked before any front sees it. */
static void test_args_exec_timeout_range(void)
{
	expect(EXEC ",\"timeout\":604800}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"timeout\":0}", -EINVAL, "\"timeout\"", NULL);
	expect(EXEC ",\"timeout\":604800.5}", -EINVAL, "\"timeout\"", NULL);
}

#define EVICT "{\"v\":1,\"id\":3,\"op\":\"evict\""

static void test_args_evict(void)
{
	expect(EVICT ",\"spec\":\"numpy==1.26.4\"}", PROTO_OP_EVICT, NULL);
	expect(EVICT ",\"spec\":\"base\",\"python\":\"3.11\",\"tag\":\"t\"}", PROTO_OP_EVICT, NULL);
	expect(EVICT ",\"spec\":\"base\",\"python\":null,\"tag\":null}", PROTO_OP_EVICT, NULL);
	expect(EVICT "}", -EINVAL, "evict", "missing \"spec\"", NULL);
	expect(EVICT ",\"spec\":null}", -EINVAL, "\"spec\"", "a string", NULL);
	expect(EVICT ",\"spec\":\"base\",\"python\":3.11}", -EINVAL, "\"python\"", NULL);
	expect(EVICT ",\"spec\":\"base\",\"tag\":1}", -EINVAL, "\"tag\"", NULL);
	expect(EVICT ",\"spec\":\"base\",\"spec\":\"base\"}", -EINVAL, "\"spec\"", "twice", NULL);
	expect(EVICT ",\"spec\":\"base\",\"code\":\"1\"}", -EINVAL, "evict", "unknown key \"code\"",
	       NULL);
	expect(EVICT ",\"spec\":\"base\",\"pin\":true}", -EINVAL, "unknown key \"pin\"", NULL);
}

#define IDLE "{\"v\":1,\"id\":4,\"op\":\"idle_config\""

static void test_args_idle_config(void)
{
	expect(IDLE "}", PROTO_OP_IDLE_CONFIG, NULL);
	expect(IDLE ",\"python\":\"3.11\"}", PROTO_OP_IDLE_CONFIG, NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":0}", PROTO_OP_IDLE_CONFIG, NULL);
	expect(IDLE ",\"python\":\"/usr/bin/python3\",\"count\":64}", PROTO_OP_IDLE_CONFIG, NULL);
	expect(IDLE ",\"python\":null,\"count\":null}", PROTO_OP_IDLE_CONFIG, NULL);
	expect(IDLE ",\"count\":1}", -EINVAL, "idle_config", "\"count\" needs \"python\"", NULL);
	expect(IDLE ",\"python\":null,\"count\":1}", -EINVAL, "\"count\" needs \"python\"", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":65}", -EINVAL, "\"count\"",
	       "an integer from 0 to 64", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":-1}", -EINVAL, "\"count\"", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":1.5}", -EINVAL, "\"count\"", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":\"2\"}", -EINVAL, "\"count\"",
	       "a number or null", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"count\":1,\"count\":1}", -EINVAL, "\"count\"",
	       "twice", NULL);
	expect(IDLE ",\"python\":\"3.11\",\"counts\":1}", -EINVAL, "unknown key \"counts\"", NULL);
	expect(IDLE ",\"python\":[]}", -EINVAL, "\"python\"", NULL);
}

/* The memory reason is a job failure (exit code 1), numbered after leased. */
static void test_reason_memory(void)
{
	CU_ASSERT_EQUAL(OMNI_REASON_MEMORY, 20);
	CU_ASSERT_EQUAL(OMNI_REASON_LEASED + 1, OMNI_REASON_MEMORY);
	CU_ASSERT_STRING_EQUAL(omni_reason_name(OMNI_REASON_MEMORY), "memory");
	CU_ASSERT_EQUAL(omni_reason_code("memory"), OMNI_REASON_MEMORY);
	CU_ASSERT_EQUAL(omni_reason_class(OMNI_REASON_MEMORY), OMNI_REASON_JOB);
	CU_ASSERT_EQUAL(OMNI_REASON_MAX, 21);
}

static void test_args_cancel(void)
{
	expect("{\"v\":1,\"id\":2,\"op\":\"cancel\",\"target\":1}", PROTO_OP_CANCEL, NULL);
	expect("{\"v\":1,\"id\":2,\"op\":\"cancel\"}", -EINVAL, "missing \"target\"", NULL);
	expect("{\"v\":1,\"id\":2,\"op\":\"cancel\",\"target\":\"1\"}", -EINVAL, "\"target\"",
	       "a number", NULL);
}

/* cJSON would end a string at \u0000 and drop the rest unseen. */
static void test_nul_escape_refused(void)
{
	expect(EXEC ",\"tag\":\"a\\u0000b\"}", -EILSEQ, "NUL", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\",\"code\":\"x\\u0000\"}",
	       -EILSEQ, "NUL", NULL);
	/* An escaped backslash followed by u0000 is six characters of text. */
	expect(EXEC ",\"tag\":\"a\\\\u0000b\"}", PROTO_OP_EXEC, NULL);
	expect(EXEC ",\"tag\":\"\\u0001\"}", PROTO_OP_EXEC, NULL);
}

static void test_args_missing(void)
{
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"code\":\"1\"}", -EINVAL, "missing \"spec\"", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\"}", -EINVAL, "missing \"code\"", NULL);
}

static void test_args_twice(void)
{
	expect(EXEC ",\"spec\":\"numpy==2.2.6\"}", -EINVAL, "\"spec\"", "twice", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"hello\",\"op\":\"hello\"}", -EINVAL, "\"op\"", "twice", NULL);
}

static void test_args_reasons(void)
{
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EINVAL)), "badarg");
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EILSEQ)), "badcode");
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EMSGSIZE)), "toolarge");
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EBADMSG)), "proto");
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EOPNOTSUPP)), "proto");
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EPROTONOSUPPORT)), "proto");
}

static void test_utf8_valid(void)
{
	static const char *const good[] = { "", "abc", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
					    "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf" };
	static const char *const bad[] = { "\xff", "\x80", "\xc3", "\xc0\xaf", "\xe0\x80\xaf",
					   "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
					   "a\xe2\x82", "\xe2\x28\xa1" };

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		CU_ASSERT(proto_utf8_valid(good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CU_ASSERT(!proto_utf8_valid(bad[i], strlen(bad[i])));
}

static void test_decode_bad_utf8(void)
{
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\",\"code\":\"print(1)\xff\"}", -EILSEQ,
	       "\"code\"", "UTF-8", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"b\xc0\xafse\",\"code\":\"1\"}", -EILSEQ,
	       "\"spec\"", NULL);
	expect("{\"v\":1,\"id\":1,\"op\":\"hel\xfflo\"}", -EILSEQ, "\"op\"", NULL);
	/* A bad key is not quoted back: the error itself must stay valid text. */
	expect(EXEC ",\"k\xff\":1}", -EILSEQ, "a key", NULL);
	expect(EXEC ",\"x\":{\"y\":[\"\xed\xa0\x80\"]}}", -EILSEQ, "\"x\"", NULL);
	/* An escaped character is text, not a byte. */
	expect(EXEC ",\"tag\":\"\\u00e9\\ud83d\\ude00\"}", PROTO_OP_EXEC, NULL);
}

static void test_unknown_op_clipped(void)
{
	char body[256], err[256];
	cJSON *m;
	uint64_t id;

	/* 40 two-byte characters: a clip at 63 bytes must not split one. */
	strcpy(body, "{\"v\":1,\"id\":1,\"op\":\"");
	for (int i = 0; i < 40; i++)
		strcat(body, "\xc3\xa9");
	strcat(body, "\"}");
	CU_ASSERT_EQUAL(decode(body, &m, &id, err), -EOPNOTSUPP);
	CU_ASSERT(proto_utf8_valid(err, strlen(err)));
}

/* A payload of `pad` bytes of `fill` as the exec code. */
static char *exec_with_code(size_t pad, char fill, size_t *len)
{
	static const char head[] = "{\"v\":1,\"id\":1,\"op\":\"exec\",\"spec\":\"base\",\"code\":\"";
	char *b = malloc(sizeof head + pad + 2);

	memcpy(b, head, sizeof head - 1);
	memset(b + sizeof head - 1, fill, pad);
	memcpy(b + sizeof head - 1 + pad, "\"}", 3);
	*len = sizeof head - 1 + pad + 2;
	return b;
}

static void test_decode_expands_too_large(void)
{
	cJSON *m = NULL;
	uint64_t id;
	char err[256] = "";
	size_t len;
	/* Three MiB of raw \x01 become 18 MiB of \u0001 once re-encoded. */
	char *b = exec_with_code(3u << 20, '\x01', &len);

	CU_ASSERT_EQUAL(proto_decode(b, len, &m, &id, err, sizeof err), -EMSGSIZE);
	CU_ASSERT_EQUAL(id, 1);
	CU_ASSERT_PTR_NULL(m);
	CU_ASSERT_STRING_EQUAL(omni_reason_name(proto_reason(-EMSGSIZE)), "toolarge");
	free(b);
	/* The same size in plain text passes. */
	b = exec_with_code(3u << 20, 'x', &len);
	CU_ASSERT_EQUAL(proto_decode(b, len, &m, &id, err, sizeof err), PROTO_OP_EXEC);
	cJSON_Delete(m);
	free(b);
}

static void test_json_size_matches_cjson(void)
{
	const char *body = "{\"a\":\"q\\\"\\\\\\n\\t\\u0001\\u001f\xc3\xa9\",\"b\":[true,false,null,\"\"],"
			   "\"c\":{\"d\":{}},\"e\":[]}";
	cJSON *m = cJSON_Parse(body);
	char *s = cJSON_PrintUnformatted(m);

	/* Exact without numbers: every byte of the bound is accounted for,
	 * give or take the fixed 5 of true and null. */
	CU_ASSERT(proto_json_size(m) >= strlen(s));
	CU_ASSERT(proto_json_size(m) <= strlen(s) + 2);
	cJSON_free(s);
	cJSON_Delete(m);
}

static void test_set_id_exact(void)
{
	static const uint64_t ids[] = { 1, 42, 9007199254740991ULL, 9007199254740992ULL };
	char want[64];

	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		cJSON *m = cJSON_CreateObject(), *back;
		char *s;

		cJSON_AddNumberToObject(m, "id", 7);
		CU_ASSERT_EQUAL(proto_set_id(m, ids[i]), 0);
		s = cJSON_PrintUnformatted(m);
		snprintf(want, sizeof want, "{\"id\":%llu}", (unsigned long long)ids[i]);
		CU_ASSERT_STRING_EQUAL(s, want);
		back = cJSON_Parse(s);
		CU_ASSERT_EQUAL((uint64_t)cJSON_GetObjectItem(back, "id")->valuedouble, ids[i]);
		cJSON_Delete(back);
		cJSON_free(s);
		cJSON_Delete(m);
	}
}

static void test_decode_id_edges(void)
{
	cJSON *m;
	uint64_t id;
	char err[256];

	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":9007199254740991,\"op\":\"hello\"}", &m, &id, err),
			PROTO_OP_HELLO);
	CU_ASSERT_EQUAL(id, 9007199254740991ULL);
	cJSON_Delete(m);
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":1e-9,\"op\":\"hello\"}", &m, &id, err), -EBADMSG);
	CU_ASSERT_EQUAL(decode("{\"v\":1,\"id\":1.0000001,\"op\":\"hello\"}", &m, &id, err), -EBADMSG);
}

static void test_features(void)
{
	cJSON *f = proto_features();
	int ops = 0, tag = 0, once = 0, spec = 0, pin = 0, mem = 0, count = 0;
	cJSON *w;

	CU_ASSERT_FATAL(cJSON_IsArray(f));
	cJSON_ArrayForEach(w, f) {
		CU_ASSERT(cJSON_IsString(w));
		ops += proto_op_code(w->valuestring) > 0;
		tag += strcmp(w->valuestring, "exec.tag") == 0;
		once += strcmp(w->valuestring, "exec.once") == 0;
		spec += strcmp(w->valuestring, "exec.spec") == 0;
		pin += strcmp(w->valuestring, "exec.pin") == 0;
		mem += strcmp(w->valuestring, "exec.max_memory_mb") == 0;
		count += strcmp(w->valuestring, "idle_config.count") == 0;
	}
	CU_ASSERT_EQUAL(ops, 13);
	CU_ASSERT_EQUAL(tag, 1);
	CU_ASSERT_EQUAL(once, 1);
	CU_ASSERT_EQUAL(spec, 0);   /* required: not a capability */
	CU_ASSERT_EQUAL(pin, 1);
	CU_ASSERT_EQUAL(mem, 1);
	CU_ASSERT_EQUAL(count, 1);
	cJSON_Delete(f);
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("proto", NULL, NULL);
	CU_add_test(s, "hdr big endian", test_hdr_big_endian);
	CU_add_test(s, "truncated header", test_parse_truncated_header);
	CU_add_test(s, "truncated body", test_parse_truncated_body);
	CU_add_test(s, "oversize length", test_parse_oversize);
	CU_add_test(s, "zero length", test_parse_zero_length);
	CU_add_test(s, "two frames back to back", test_parse_two_frames);
	CU_add_test(s, "encode round trip", test_encode_roundtrip);
	CU_add_test(s, "decode ok", test_decode_ok);
	CU_add_test(s, "malformed JSON", test_decode_malformed);
	CU_add_test(s, "not an object", test_decode_not_object);
	CU_add_test(s, "wrong version", test_decode_version);
	CU_add_test(s, "bad ids", test_decode_bad_ids);
	CU_add_test(s, "unknown op", test_decode_unknown_op);
	CU_add_test(s, "op names", test_op_names);
	CU_add_test(s, "exec arguments accepted", test_args_exec_ok);
	CU_add_test(s, "unknown key", test_args_unknown_key);
	CU_add_test(s, "wrong type", test_args_wrong_type);
	CU_add_test(s, "missing argument", test_args_missing);
	CU_add_test(s, "key given twice", test_args_twice);
	CU_add_test(s, "decode reasons", test_args_reasons);
	CU_add_test(s, "utf-8 validation", test_utf8_valid);
	CU_add_test(s, "invalid utf-8 refused", test_decode_bad_utf8);
	CU_add_test(s, "unknown op clipped", test_unknown_op_clipped);
	CU_add_test(s, "expanding control bytes", test_decode_expands_too_large);
	CU_add_test(s, "json size bound", test_json_size_matches_cjson);
	CU_add_test(s, "exact ids written", test_set_id_exact);
	CU_add_test(s, "id edges", test_decode_id_edges);
	CU_add_test(s, "hello features", test_features);
	CU_add_test(s, "cancel arguments", test_args_cancel);
	CU_add_test(s, "exec pin and max_memory_mb", test_args_exec_pin_memory);
	CU_add_test(s, "exec timeout range", test_args_exec_timeout_range);
	CU_add_test(s, "evict arguments", test_args_evict);
	CU_add_test(s, "idle_config arguments", test_args_idle_config);
	CU_add_test(s, "memory reason", test_reason_memory);
	CU_add_test(s, "NUL escape refused", test_nul_escape_refused);
	CU_add_test(s, "frame under a channel's bound", test_parse_lower_bound);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
