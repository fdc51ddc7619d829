/*
 * test_proto.c - frame codec and strict request decoding.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
					     "pythons", "list", "shutdown" };

	for (int op = 1; op <= 7; op++) {
		CU_ASSERT_STRING_EQUAL(proto_op_name(op), names[op]);
		CU_ASSERT_EQUAL(proto_op_code(names[op]), op);
	}
	CU_ASSERT_PTR_NULL(proto_op_name(0));
	CU_ASSERT_PTR_NULL(proto_op_name(8));
	CU_ASSERT_PTR_NULL(proto_op_name(-1));
	CU_ASSERT_EQUAL(proto_op_code("nope"), -1);
	CU_ASSERT_EQUAL(proto_op_code(NULL), -1);
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
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
