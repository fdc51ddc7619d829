/*
 * proto.c - framing and strict decoding of the wire protocol (proto.h).
 *
 * Both ends of every channel go through these functions, so a frame that
 * one side accepts is exactly a frame the other side can produce.
 */
#include "proto.h"
#include "omnipkg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON types an argument may take (bit set). */
enum { PT_STR = 1, PT_NUM = 2, PT_BOOL = 4, PT_NULL = 8, PT_ARR = 16, PT_OBJ = 32 };

/* What a number must be, when it is one (null passes where allowed). */
enum {
	PR_ANY = 0,
	PR_INT,        /* an integer in [lo, hi] */
	PR_POS,        /* a number in (lo, hi] */
};

struct proto_arg {
	const char *key;
	unsigned types;
	int required;
	int range;         /* PR_*: judged here, so every front refuses alike */
	double lo, hi;
	const char *needs; /* given (not null) only beside this key, not null */
};

/* Table rows: a required argument, an optional one (null allowed), and an
 * optional number that must fall in a range. */
#define ARG_REQ(k, t) { .key = (k), .types = (t), .required = 1 }
#define ARG_OPT(k, t) { .key = (k), .types = (t) | PT_NULL }
#define ARG_NUM(k, r, l, h) { .key = (k), .types = PT_NUM | PT_NULL, .range = (r), .lo = (l), .hi = (h) }
#define ARG_END { .key = NULL }

/* Every request carries these; proto_decode checks their values itself. */
static const struct proto_arg proto_common_args[] = {
	ARG_REQ("v", PT_NUM), ARG_REQ("id", PT_NUM), ARG_REQ("op", PT_STR), ARG_END,
};

static const struct proto_arg proto_exec_args[] = {
	ARG_REQ("spec", PT_STR),
	ARG_REQ("code", PT_STR),
	ARG_OPT("python", PT_STR),
	ARG_NUM("timeout", PR_POS, 0, PROTO_MAX_TIMEOUT),
	ARG_OPT("tag", PT_STR),
	ARG_OPT("once", PT_BOOL),
	ARG_OPT("arrays", PT_ARR),
	ARG_OPT("bind", PT_OBJ),
	ARG_OPT("pin", PT_BOOL),
	ARG_NUM("max_memory_mb", PR_POS, 0, PROTO_MAX_MEMORY_MB),
	ARG_OPT("fds", PT_ARR),
	ARG_END,
};
static const struct proto_arg proto_shm_create_args[] = {
	ARG_REQ("size", PT_NUM),
	ARG_OPT("name", PT_STR),
	ARG_OPT("persist", PT_BOOL),
	ARG_OPT("dtype", PT_STR),
	ARG_OPT("shape", PT_ARR),
	ARG_END,
};
static const struct proto_arg proto_shm_remove_args[] = {
	ARG_REQ("name", PT_STR),
	ARG_END,
};
static const struct proto_arg proto_cancel_args[] = {
	ARG_REQ("target", PT_NUM),
	ARG_END,
};
static const struct proto_arg proto_evict_args[] = {
	ARG_REQ("spec", PT_STR),
	ARG_OPT("python", PT_STR),
	ARG_OPT("tag", PT_STR),
	ARG_END,
};
static const struct proto_arg proto_idle_config_args[] = {
	ARG_OPT("python", PT_STR),
	{ .key = "count", .types = PT_NUM | PT_NULL, .range = PR_INT, .lo = 0,
	  .hi = PROTO_MAX_IDLE_COUNT, .needs = "python" },
	ARG_END,
};

/* An op without an argument list takes no arguments. */
static const struct {
	const char *name;
	const struct proto_arg *args;
} proto_ops[] = {
	[PROTO_OP_HELLO] = { "hello", NULL },
	[PROTO_OP_EXEC] = { "exec", proto_exec_args },
	[PROTO_OP_STATUS] = { "status", NULL },
	[PROTO_OP_WORKERS] = { "workers", NULL },
	[PROTO_OP_PYTHONS] = { "pythons", NULL },
	[PROTO_OP_LIST] = { "list", NULL },
	[PROTO_OP_SHUTDOWN] = { "shutdown", NULL },
	[PROTO_OP_CANCEL] = { "cancel", proto_cancel_args },
	[PROTO_OP_SHM_CREATE] = { "shm_create", proto_shm_create_args },
	[PROTO_OP_SHM_LIST] = { "shm_list", NULL },
	[PROTO_OP_SHM_REMOVE] = { "shm_remove", proto_shm_remove_args },
	[PROTO_OP_EVICT] = { "evict", proto_evict_args },
	[PROTO_OP_IDLE_CONFIG] = { "idle_config", proto_idle_config_args },
};

#define PROTO_NOPS ((int)(sizeof(proto_ops) / sizeof(proto_ops[0])))

/* Capabilities that are not an op or an argument, for "hello". */
static const char *const proto_caps[] = {
	"args.strict",   /* unknown or mistyped keys are refused */
	"id.exact",      /* reply ids are written as exact integers */
};

const char *proto_op_name(int op)
{
	if (op <= 0 || op >= PROTO_NOPS)
		return NULL;
	return proto_ops[op].name;
}

int proto_op_code(const char *name)
{
	if (!name)
		return -1;
	for (int op = 1; op < PROTO_NOPS; op++)
		if (proto_ops[op].name && strcmp(proto_ops[op].name, name) == 0)
			return op;
	return -1;
}

cJSON *proto_features(void)
{
	cJSON *a = cJSON_CreateArray();
	char w[64];

	if (!a)
		return NULL;
	for (int op = 1; op < PROTO_NOPS; op++) {
		cJSON_AddItemToArray(a, cJSON_CreateString(proto_ops[op].name));
		for (const struct proto_arg *g = proto_ops[op].args; g && g->key; g++)
			if (!g->required) {
				snprintf(w, sizeof w, "%s.%s", proto_ops[op].name, g->key);
				cJSON_AddItemToArray(a, cJSON_CreateString(w));
			}
	}
	for (size_t i = 0; i < sizeof proto_caps / sizeof proto_caps[0]; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(proto_caps[i]));
	return a;
}

int proto_set_id(cJSON *msg, uint64_t id)
{
	char num[24];
	cJSON *raw;

	/* cJSON prints doubles with 15 significant digits, which rounds ids
	 * near 2^53; the integer's own digits are exact. */
	snprintf(num, sizeof num, "%llu", (unsigned long long)id);
	raw = cJSON_CreateRaw(num);
	if (!raw)
		return -ENOMEM;
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "id");
	if (!cJSON_AddItemToObject(msg, "id", raw)) {
		cJSON_Delete(raw);
		return -ENOMEM;
	}
	return 0;
}

int proto_reason(int rc)
{
	switch (rc) {
	case -EINVAL: return OMNI_REASON_BADARG;
	case -EILSEQ: return OMNI_REASON_BADCODE;
	case -EMSGSIZE: return OMNI_REASON_TOOLARGE;
	case -ENOMEM: return OMNI_REASON_NOMEM;
	default: return OMNI_REASON_PROTO;
	}
}

long proto_frame_parse(const char *buf, size_t len, const char **payload, size_t *plen)
{
	return proto_frame_parse_max(buf, len, PROTO_MAX_FRAME, payload, plen);
}

long proto_frame_parse_max(const char *buf, size_t len, size_t max, const char **payload,
			   size_t *plen)
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
	if (n > PROTO_MAX_FRAME || n > max)
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

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
int proto_utf8_valid(const char *str, size_t n)
{
	const unsigned char *p = (const unsigned char *)str, *end = p + n;

	while (p < end) {
		unsigned c = *p, cp;
		size_t k;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			k = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, cp = c & 0x07;
		else
			return 0;
		if ((size_t)(end - p) <= k)
			return 0;
		for (size_t i = 1; i <= k; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		p += k + 1;
	}
	return 1;
}

/* Copies at most n-1 bytes of valid UTF-8 s into buf without splitting a
 * character, so that a name quoted in an error is still valid text. */
static const char *proto_clip(const char *s, char *buf, size_t n)
{
	size_t len = strlen(s);

	if (len >= n) {
		len = n - 1;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	return buf;
}

/* Bytes of a string as cJSON writes it: quotes, two-byte escapes, and
 * \u00XX for the other control characters. */
static size_t proto_str_size(const char *s)
{
	size_t n = 2;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\' || *p == '\b' || *p == '\f' || *p == '\n' ||
		    *p == '\r' || *p == '\t')
			n += 2;
		else if (*p < 0x20)
			n += 6;
		else
			n += 1;
	}
	return n;
}

size_t proto_json_size(const cJSON *item)
{
	size_t n = 0;

	if (cJSON_IsString(item))
		return proto_str_size(item->valuestring ? item->valuestring : "");
	if (cJSON_IsRaw(item))
		return item->valuestring ? strlen(item->valuestring) : 0;
	if (cJSON_IsNumber(item))
		return 32;    /* an upper bound of cJSON's "%1.17g" */
	if (cJSON_IsBool(item) || cJSON_IsNull(item))
		return 5;
	for (const cJSON *c = item->child; c; c = c->next) {
		n += proto_json_size(c) + (c->next != NULL);   /* the comma */
		if (cJSON_IsObject(item))
			n += proto_str_size(c->string ? c->string : "") + 1;
	}
	return n + 2;
}

/* Whether every string in item's value (keys of nested objects too) is
 * valid UTF-8. */
static int proto_item_utf8(const cJSON *item)
{
	if (cJSON_IsString(item))
		return proto_utf8_valid(item->valuestring, strlen(item->valuestring));
	for (const cJSON *c = item->child; c; c = c->next)
		if ((c->string && !proto_utf8_valid(c->string, strlen(c->string))) || !proto_item_utf8(c))
			return 0;
	return 1;
}

/* -EILSEQ naming the top-level key whose key or value is not valid UTF-8;
 * 0 when all text is valid. */
static int proto_check_utf8(const cJSON *msg, char *err, size_t errlen)
{
	char key[64];

	for (const cJSON *c = msg->child; c; c = c->next) {
		if (!proto_utf8_valid(c->string, strlen(c->string))) {
			snprintf(err, errlen, "a key is not valid UTF-8 text");
			return -EILSEQ;
		}
		if (!proto_item_utf8(c)) {
			snprintf(err, errlen, "\"%s\" is not valid UTF-8 text",
				 proto_clip(c->string, key, sizeof key));
			return -EILSEQ;
		}
	}
	return 0;
}

static const struct proto_arg *proto_arg_find(const struct proto_arg *t, const char *key, unsigned *idx)
{
	for (unsigned i = 0; t && t[i].key; i++)
		if (strcmp(t[i].key, key) == 0) {
			*idx = i;
			return &t[i];
		}
	return NULL;
}

static unsigned proto_type_of(const cJSON *v)
{
	if (cJSON_IsString(v))
		return PT_STR;
	if (cJSON_IsNumber(v))
		return PT_NUM;
	if (cJSON_IsBool(v))
		return PT_BOOL;
	if (cJSON_IsNull(v))
		return PT_NULL;
	if (cJSON_IsArray(v))
		return PT_ARR;
	if (cJSON_IsObject(v))
		return PT_OBJ;
	return 0;
}

static const char *proto_types_text(unsigned t)
{
	static const char *const text[] = {
		[PT_STR] = "a string", [PT_NUM] = "a number", [PT_BOOL] = "true or false",
		[PT_STR | PT_NULL] = "a string or null", [PT_NUM | PT_NULL] = "a number or null",
		[PT_BOOL | PT_NULL] = "true, false or null",
		[PT_ARR | PT_NULL] = "an array or null", [PT_OBJ | PT_NULL] = "an object or null",
	};

	return t < sizeof text / sizeof text[0] && text[t] ? text[t] : "another type";
}

/* Whether the number d is within a's range; its text into err if not. */
static int proto_check_range(const struct proto_arg *a, const char *op, double d, char *err,
			     size_t errlen)
{
	switch (a->range) {
	case PR_INT:
		/* Range first (NaN fails it too), then the integer cast is defined. */
		if (d >= a->lo && d <= a->hi && (double)(long long)d == d)
			return 0;
		snprintf(err, errlen, "%s: \"%s\" must be an integer from %.15g to %.15g", op, a->key,
			 a->lo, a->hi);
		return -EINVAL;
	case PR_POS:
		if (d > a->lo && d <= a->hi)
			return 0;
		snprintf(err, errlen, "%s: \"%s\" must be a number over %.15g and at most %.15g", op,
			 a->key, a->lo, a->hi);
		return -EINVAL;
	default:
		return 0;
	}
}

/*
 * Checks msg's top-level keys against the common keys and op's table:
 * each known, of an allowed type (a number in its range), present once;
 * every required one there.  -EINVAL with the key and the op named in err.
 */
static int proto_check_args(const cJSON *msg, int op, char *err, size_t errlen)
{
	const char *name = proto_ops[op].name;
	const struct proto_arg *args = proto_ops[op].args;
	unsigned seen_common = 0, seen = 0;
	char key[64];

	for (const cJSON *c = msg->child; c; c = c->next) {
		const struct proto_arg *a;
		unsigned idx, *mask = &seen_common;

		if (!(a = proto_arg_find(proto_common_args, c->string, &idx))) {
			a = proto_arg_find(args, c->string, &idx);
			mask = &seen;
		}
		if (!a) {
			snprintf(err, errlen, "%s: unknown key \"%s\"%s", name,
				 proto_clip(c->string, key, sizeof key),
				 args ? "" : " (it takes no arguments)");
			return -EINVAL;
		}
		if (*mask & 1u << idx) {
			snprintf(err, errlen, "%s: key \"%s\" given twice", name, a->key);
			return -EINVAL;
		}
		*mask |= 1u << idx;
		if (!(proto_type_of(c) & a->types)) {
			snprintf(err, errlen, "%s: \"%s\" must be %s", name, a->key,
				 proto_types_text(a->types));
			return -EINVAL;
		}
		if (cJSON_IsNumber(c) && proto_check_range(a, name, c->valuedouble, err, errlen) < 0)
			return -EINVAL;
	}
	for (unsigned i = 0; args && args[i].key; i++) {
		const cJSON *v, *other;

		if (args[i].required && !(seen & 1u << i)) {
			snprintf(err, errlen, "%s: missing \"%s\" (%s)", name, args[i].key,
				 proto_types_text(args[i].types));
			return -EINVAL;
		}
		v = cJSON_GetObjectItemCaseSensitive(msg, args[i].key);
		if (args[i].needs && v && !cJSON_IsNull(v) &&
		    (!(other = cJSON_GetObjectItemCaseSensitive(msg, args[i].needs)) ||
		     cJSON_IsNull(other))) {
			snprintf(err, errlen, "%s: \"%s\" needs \"%s\"", name, args[i].key,
				 args[i].needs);
			return -EINVAL;
		}
	}
	return 0;
}

/* Does valid JSON text hold the escape \u0000?  cJSON ends a string
 * there, so the rest of it would vanish unseen. */
static int proto_has_nul_escape(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != '\\')
			continue;
		if (p[i + 1] == 'u' && n - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
			return 1;
		i++;   /* the escaped character, a backslash included */
	}
	return 0;
}

int proto_decode(const char *payload, size_t plen, cJSON **out, uint64_t *id,
		 char *err, size_t errlen)
{
	const char *end = NULL;
	cJSON *msg, *jid, *jv, *jop;
	char name[64];
	double d;
	int op, rc;

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

	/* Before anything quotes a key or a value back in an error. */
	if ((rc = proto_check_utf8(msg, err ? err : name, err ? errlen : sizeof name)) < 0) {
		cJSON_Delete(msg);
		return rc;
	}
	if (proto_has_nul_escape(payload, plen)) {
		cJSON_Delete(msg);
		return proto_fail(-EILSEQ, err, errlen, "a string holds a NUL character (\\u0000)");
	}

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
			snprintf(err, errlen, "unknown op \"%s\"", proto_clip(jop->valuestring, name, sizeof name));
		cJSON_Delete(msg);
		return -EOPNOTSUPP;
	}
	if ((rc = proto_check_args(msg, op, err ? err : name, err ? errlen : sizeof name)) < 0) {
		cJSON_Delete(msg);
		return rc;
	}
	/* cJSON writes what it read raw (control bytes, as one example) in
	 * escaped form, up to six times larger: what is forwarded must still
	 * be a frame. */
	if (proto_json_size(msg) > PROTO_MAX_FRAME - PROTO_ENVELOPE) {
		cJSON_Delete(msg);
		return proto_fail(-EMSGSIZE, err, errlen,
				  "request too large once encoded (over the frame limit)");
	}
	*out = msg;
	return op;
}

cJSON *proto_reply_ok(void)
{
	cJSON *r = cJSON_CreateObject();

	if (r && !cJSON_AddBoolToObject(r, "ok", 1)) {
		cJSON_Delete(r);
		return NULL;
	}
	return r;
}

cJSON *proto_reply_error(int err, int reason, const char *fmt, ...)
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
	if (reason > 0 && omni_reason_name(reason))
		cJSON_AddStringToObject(r, "reason", omni_reason_name(reason));
	return r;
}
