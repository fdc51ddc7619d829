/*
 * test_client.c - libomnipkg against a fake daemon.
 *
 * Each test starts a server thread on a private Unix socket in a temporary
 * directory; the thread plays one scripted conversation (framing by hand,
 * not through proto.c, so the two ends are checked independently) and
 * records the first line where the client's request was not what it
 * expected.  Run with `--daemon` (as the autostart test does through
 * $OMNIPKGD) this program is itself a tiny stand-in for `omnipkgd --daemon`.
 * The trust tests plant sockets the client must refuse and check that not
 * a byte reached them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <cjson/cJSON.h>

#include "omnipkg.h"
#include "proto.h"

struct fake;
typedef void (*fake_script)(struct fake *f, int fd);

struct fake {
	char dir[64];
	char path[128];
	int lfd;
	int go[2];         /* a pipe: the test tells the script to go on */
	pthread_t th;
	fake_script script;
	int bad_line;      /* first failed expectation inside the script, 0: none */
};

/* In client.c, outside the public API: the id the next request takes. */
void client_next_id_set(omni_client *c, uint64_t id);

#define FAKE_EXPECT(f, cond) do { if (!(cond) && !(f)->bad_line) (f)->bad_line = __LINE__; } while (0)

/* ---- framing, by hand ------------------------------------------------- */

static int fake_read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t k = read(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int fake_write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void fake_hdr(unsigned char h[4], uint32_t n)
{
	h[0] = (unsigned char)(n >> 24);
	h[1] = (unsigned char)(n >> 16);
	h[2] = (unsigned char)(n >> 8);
	h[3] = (unsigned char)n;
}

/* Next request's text, NUL-terminated (caller frees); NULL on EOF or junk. */
static char *fake_read_text(int fd)
{
	unsigned char h[4];
	uint32_t n;
	char *body;

	if (fake_read_full(fd, h, 4) < 0)
		return NULL;
	n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (n == 0 || n > (1u << 20) || !(body = malloc(n + 1)))
		return NULL;
	if (fake_read_full(fd, body, n) < 0) {
		free(body);
		return NULL;
	}
	body[n] = '\0';
	return body;
}

/* Next request as a cJSON object (caller deletes), NULL on EOF or junk. */
static cJSON *fake_read(int fd)
{
	char *body = fake_read_text(fd);
	cJSON *msg = body ? cJSON_Parse(body) : NULL;

	free(body);
	return msg;
}

static void fake_send_text(int fd, const char *json)
{
	unsigned char h[4];

	fake_hdr(h, (uint32_t)strlen(json));
	fake_write_full(fd, h, 4);
	fake_write_full(fd, json, strlen(json));
}

/* Replies to id with ok and the members of extra (a JSON object text or NULL). */
static void fake_reply(int fd, double id, int ok, const char *extra)
{
	cJSON *msg = extra ? cJSON_Parse(extra) : cJSON_CreateObject();
	char *text;

	cJSON_AddNumberToObject(msg, "v", 1);
	cJSON_AddNumberToObject(msg, "id", id);
	cJSON_AddBoolToObject(msg, "ok", ok);
	text = cJSON_PrintUnformatted(msg);
	fake_send_text(fd, text);
	cJSON_free(text);
	cJSON_Delete(msg);
}

static double fake_num(const cJSON *m, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *fake_str(const cJSON *m, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

/* Reads a request and checks its op; returns it (caller deletes). */
static cJSON *fake_expect_op(struct fake *f, int fd, const char *op)
{
	cJSON *m = fake_read(fd);

	FAKE_EXPECT(f, m != NULL);
	FAKE_EXPECT(f, m && fake_num(m, "v") == 1);
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "op"), op) == 0);
	return m;
}

static void fake_hello(struct fake *f, int fd, int proto)
{
	cJSON *m = fake_expect_op(f, fd, "hello");
	char extra[128];

	FAKE_EXPECT(f, m && fake_num(m, "id") == 1);
	snprintf(extra, sizeof extra,
		 "{\"daemon\":\"fake\",\"version\":\"0\",\"proto\":%d,\"pid\":%d}", proto,
		 (int)getpid());
	fake_reply(fd, m ? fake_num(m, "id") : 1, 1, extra);
	cJSON_Delete(m);
}

/* ---- the server thread ------------------------------------------------ */

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct pollfd pfd = { .fd = f->lfd, .events = POLLIN };
	struct timeval tv = { .tv_sec = 5 };
	int fd;

	/* bounded, so that a client that never comes cannot hang the test */
	if (poll(&pfd, 1, 5000) <= 0) {
		FAKE_EXPECT(f, 0);
		return NULL;
	}
	if ((fd = accept(f->lfd, NULL, NULL)) < 0) {
		FAKE_EXPECT(f, 0);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	f->script(f, fd);
	close(fd);
	return NULL;
}

static int fake_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int fake_start(struct fake *f, fake_script script)
{
	memset(f, 0, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/omni-test-client.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/s", f->dir);
	f->script = script;
	if (pipe(f->go) < 0)
		return -1;
	if ((f->lfd = fake_listen(f->path)) < 0)
		return -1;
	return pthread_create(&f->th, NULL, fake_main, f) == 0 ? 0 : -1;
}

/* Joins the thread and removes the socket; returns the script's bad line. */
static int fake_stop(struct fake *f)
{
	pthread_join(f->th, NULL);
	close(f->go[0]);
	close(f->go[1]);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
	return f->bad_line;
}

/* ---- scripts ---------------------------------------------------------- */

static void script_status(struct fake *f, int fd)
{
	cJSON *m;

	fake_hello(f, fd, PROTO_VERSION);
	m = fake_expect_op(f, fd, "status");
	FAKE_EXPECT(f, m && fake_num(m, "id") == 2);
	fake_reply(fd, m ? fake_num(m, "id") : 0, 1,
		   "{\"pid\":4242,\"version\":\"9.9\",\"uptime\":12.5,\"workers\":[1]}");
	cJSON_Delete(m);
	fake_read(fd);   /* until the client closes */
}

static void script_proto2(struct fake *f, int fd)
{
	fake_hello(f, fd, 2);
	fake_read(fd);
}

static void script_v2_frames(struct fake *f, int fd)
{
	cJSON *m = fake_expect_op(f, fd, "hello");

	fake_send_text(fd, "{\"v\":2,\"id\":1,\"ok\":true,\"proto\":2}");
	cJSON_Delete(m);
	fake_read(fd);
}

/* Three requests in; replies out as 3, 2, 4. */
static void script_out_of_order(struct fake *f, int fd)
{
	cJSON *m[3];

	fake_hello(f, fd, PROTO_VERSION);
	for (int i = 0; i < 3; i++) {
		m[i] = fake_read(fd);
		FAKE_EXPECT(f, m[i] && fake_num(m[i], "id") == 2 + i);
	}
	fake_reply(fd, 3, 1, "{\"which\":\"workers\"}");
	fake_reply(fd, 2, 1, "{\"which\":\"status\"}");
	fake_reply(fd, 4, 1, "{\"which\":\"list\"}");
	for (int i = 0; i < 3; i++)
		cJSON_Delete(m[i]);
	fake_read(fd);
}

static void script_huge_frame(struct fake *f, int fd)
{
	unsigned char h[4];

	fake_hello(f, fd, PROTO_VERSION);
	cJSON_Delete(fake_expect_op(f, fd, "status"));
	fake_hdr(h, PROTO_MAX_FRAME + 1);
	fake_write_full(fd, h, 4);
	fake_write_full(fd, "{\"v\":1", 6);
	fake_read(fd);
}

static void script_close_mid_reply(struct fake *f, int fd)
{
	unsigned char h[4];

	fake_hello(f, fd, PROTO_VERSION);
	cJSON_Delete(fake_expect_op(f, fd, "status"));
	fake_hdr(h, 100);
	fake_write_full(fd, h, 4);
	fake_write_full(fd, "{\"v\":1,\"id\":2,", 14);
	/* closing now leaves the reply cut in the middle */
}

static void script_bad_json(struct fake *f, int fd)
{
	fake_hello(f, fd, PROTO_VERSION);
	cJSON_Delete(fake_expect_op(f, fd, "status"));
	fake_send_text(fd, "[1,2,3]");
	fake_read(fd);
}

static void script_exec(struct fake *f, int fd)
{
	cJSON *m;

	fake_hello(f, fd, PROTO_VERSION);
	m = fake_expect_op(f, fd, "exec");
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "spec"), "numpy==1.26.4") == 0);
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "code"), "raise ValueError('x')") == 0);
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "python"), "3.11") == 0);
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "tag"), "t1") == 0);
	FAKE_EXPECT(f, m && fake_num(m, "timeout") == 2.5);
	FAKE_EXPECT(f, m && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "once")));
	fake_reply(fd, m ? fake_num(m, "id") : 0, 0,
		   "{\"stdout\":\"partial\\n\",\"stderr\":\"\",\"error\":\"ValueError: x\","
		   "\"reason\":\"exception\",\"traceback\":\"Traceback...\\nValueError: x\\n\","
		   "\"stdout_truncated\":true,\"duration\":0.01}");
	cJSON_Delete(m);
	m = fake_expect_op(f, fd, "exec");
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "spec"), "base") == 0);
	FAKE_EXPECT(f, m && !cJSON_GetObjectItemCaseSensitive(m, "python"));
	FAKE_EXPECT(f, m && !cJSON_GetObjectItemCaseSensitive(m, "timeout"));
	FAKE_EXPECT(f, m && !cJSON_GetObjectItemCaseSensitive(m, "tag"));
	FAKE_EXPECT(f, m && !cJSON_GetObjectItemCaseSensitive(m, "once"));
	fake_reply(fd, m ? fake_num(m, "id") : 0, 1, "{\"stdout\":\"ok\\n\"}");
	cJSON_Delete(m);
	fake_read(fd);
}

static void script_silent(struct fake *f, int fd)
{
	cJSON *m;
	char go;

	fake_hello(f, fd, PROTO_VERSION);
	m = fake_expect_op(f, fd, "workers");
	/* answer only once the client has given up waiting */
	FAKE_EXPECT(f, fake_read_full(f->go[0], &go, 1) == 0);
	fake_reply(fd, m ? fake_num(m, "id") : 0, 1, "{\"workers\":[]}");
	cJSON_Delete(m);
	fake_read(fd);
}

/* Two requests whose ids must arrive, and come back, as exact integers. */
static void script_ids(struct fake *f, int fd)
{
	static const char *const ids[] = { "9007199254740991", "9007199254740992" };

	fake_hello(f, fd, PROTO_VERSION);
	for (int i = 0; i < 2; i++) {
		char *text = fake_read_text(fd), want[48], reply[96];

		snprintf(want, sizeof want, "\"id\":%s,", ids[i]);
		FAKE_EXPECT(f, text && strstr(text, want));
		snprintf(reply, sizeof reply, "{\"v\":1,\"id\":%s,\"ok\":true}", ids[i]);
		fake_send_text(fd, reply);
		free(text);
	}
	fake_read(fd);
}

/* Reads a request and checks that its text is exactly want. */
static void fake_expect_text(struct fake *f, int fd, const char *want, int line)
{
	char *got = fake_read_text(fd);

	if (!got || strcmp(got, want) != 0) {
		fprintf(stderr, "\nline %d: request\n  %s\nnot\n  %s\n", line, got ? got : "(none)",
			want);
		if (!f->bad_line)
			f->bad_line = line;
	}
	free(got);
}

#define SEG_FRAME "{\"name\":\"frame\",\"id\":7,\"gen\":2,\"size\":1048576," \
		  "\"path\":\"/run/x/shm/frame\"}"

/* shm_create (named and persistent, then neither), shm_list twice (the
 * second for omni_shm_open), shm_remove: each request's exact text. */
static void script_shm(struct fake *f, int fd)
{
	fake_hello(f, fd, PROTO_VERSION);
	fake_expect_text(f, fd, "{\"size\":1048576,\"name\":\"frame\",\"persist\":true,\"v\":1,"
			 "\"id\":2,\"op\":\"shm_create\"}", __LINE__);
	fake_reply(fd, 2, 1, "{\"segment\":" SEG_FRAME "}");
	fake_expect_text(f, fd, "{\"size\":9007199254740993,\"v\":1,\"id\":3,"
			 "\"op\":\"shm_create\"}", __LINE__);
	fake_reply(fd, 3, 1, "{\"segment\":{\"name\":\"s1\",\"id\":8,\"gen\":0,\"size\":4096,"
		   "\"path\":\"/run/x/shm/s1\"}}");
	for (int id = 4; id <= 5; id++) {
		char want[64];

		snprintf(want, sizeof want, "{\"v\":1,\"id\":%d,\"op\":\"shm_list\"}", id);
		fake_expect_text(f, fd, want, __LINE__);
		fake_reply(fd, id, 1, "{\"segments\":[{\"name\":\"s1\",\"id\":8,\"gen\":0,"
			   "\"size\":4096,\"leases\":0,\"persist\":false,\"path\":\"/run/x/shm/s1\"},"
			   "{\"name\":\"frame\",\"id\":7,\"gen\":2,\"size\":1048576,\"leases\":1,"
			   "\"persist\":true,\"path\":\"/run/x/shm/frame\"}]}");
	}
	fake_expect_text(f, fd, "{\"name\":\"frame\",\"v\":1,\"id\":6,\"op\":\"shm_remove\"}",
			 __LINE__);
	fake_reply(fd, 6, 1, NULL);
	fake_read(fd);
}

/* Failed replies, each answering the next request whatever it is. */
static void script_shm_refusals(struct fake *f, int fd)
{
	static const char *const replies[] = {
		"{\"error\":\"over quota\",\"errno\":122,\"reason\":\"quota\"}",
		"{\"error\":\"name in use\",\"errno\":17,\"reason\":\"badarg\"}",
		"{\"error\":\"bad size\",\"reason\":\"badarg\"}",
		"{\"error\":\"in use\",\"errno\":16,\"reason\":\"leased\"}",
		"{\"error\":\"no such\",\"reason\":\"nosegment\"}",
		"{\"error\":\"stopping\",\"reason\":\"shutdown\"}",
		"{\"segments\":[]}",
	};

	fake_hello(f, fd, PROTO_VERSION);
	for (size_t i = 0; i < sizeof replies / sizeof replies[0]; i++) {
		cJSON *m = fake_read(fd);

		FAKE_EXPECT(f, m != NULL);
		fake_reply(fd, m ? fake_num(m, "id") : 0, i + 1 == sizeof replies / sizeof replies[0],
			   replies[i]);
		cJSON_Delete(m);
	}
	fake_read(fd);
}

static void script_exec_arrays(struct fake *f, int fd)
{
	fake_hello(f, fd, PROTO_VERSION);
	fake_expect_text(f, fd, "{\"spec\":\"base\",\"code\":\"pass\",\"arrays\":["
			 "{\"name\":\"arr_in\",\"segment\":\"frame\",\"dtype\":\"float32\","
			 "\"shape\":[512,512],\"offset\":0,\"access\":\"in\"},"
			 "{\"name\":\"out\",\"segment\":\"o\",\"dtype\":\"<i8\",\"shape\":[3,2],"
			 "\"offset\":1000000000000001,\"strides\":[8,-24],\"access\":\"out\"},"
			 "{\"name\":\"s\",\"segment\":\"o\",\"dtype\":\"|u1\",\"shape\":[],"
			 "\"offset\":0,\"access\":\"inout\"}],"
			 "\"bind\":{\"k\":3,\"t\":[\"x\",null]},\"v\":1,\"id\":2,\"op\":\"exec\"}",
			 __LINE__);
	fake_reply(fd, 2, 1, "{\"stdout\":\"\"}");
	/* nothing of the refused ones in between */
	fake_expect_text(f, fd, "{\"spec\":\"base\",\"code\":\"pass\",\"bind\":{},\"v\":1,"
			 "\"id\":3,\"op\":\"exec\"}", __LINE__);
	fake_reply(fd, 3, 1, NULL);
	fake_read(fd);
}

/* ---- tests ------------------------------------------------------------ */

static void test_connect_and_status(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	const char *j1;

	CU_ASSERT_FATAL(fake_start(&f, script_status) == 0);
	CU_ASSERT_EQUAL(omni_connect(&c, f.path, 0), 0);
	CU_ASSERT(omni_fd(c) >= 0);
	CU_ASSERT_EQUAL(omni_status(c, &r), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(omni_reply_id(r), 2);
	CU_ASSERT(omni_reply_ok(r));
	CU_ASSERT_EQUAL(omni_reply_num(r, "pid"), 4242);
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "version"), "9.9");
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "missing"), "");
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "workers"), "");   /* not a string */
	CU_ASSERT_EQUAL(omni_reply_num(r, "missing"), 0);
	j1 = omni_reply_json(r);
	CU_ASSERT_PTR_NOT_NULL(strstr(j1, "\"pid\":4242"));
	CU_ASSERT_PTR_EQUAL(omni_reply_json(r), j1);   /* printed once */
	omni_reply_free(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_refuses_other_proto(void)
{
	struct fake f;
	omni_client *c = (omni_client *)&f;

	CU_ASSERT_FATAL(fake_start(&f, script_proto2) == 0);
	CU_ASSERT_EQUAL(omni_connect(&c, f.path, 0), -EPROTONOSUPPORT);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);

	CU_ASSERT_FATAL(fake_start(&f, script_v2_frames) == 0);
	CU_ASSERT_EQUAL(omni_connect(&c, f.path, 0), -EPROTONOSUPPORT);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_out_of_order(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	uint64_t id1 = 0, id2 = 0;

	CU_ASSERT_FATAL(fake_start(&f, script_out_of_order) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_send(c, "status", NULL, &id1), 0);
	CU_ASSERT_EQUAL(omni_send(c, "workers", "{\"x\":1}", &id2), 0);
	CU_ASSERT_EQUAL(id1, 2);
	CU_ASSERT_EQUAL(id2, 3);
	/* its own reply comes last; the two before it are kept */
	CU_ASSERT_EQUAL(omni_call(c, "list", NULL, &r), 0);
	CU_ASSERT_EQUAL(omni_reply_id(r), 4);
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "which"), "list");
	omni_reply_free(r);
	CU_ASSERT_EQUAL(omni_recv(c, &r, 1000), 0);
	CU_ASSERT_EQUAL(omni_reply_id(r), 3);
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "which"), "workers");
	omni_reply_free(r);
	CU_ASSERT_EQUAL(omni_recv(c, &r, 1000), 0);
	CU_ASSERT_EQUAL(omni_reply_id(r), 2);
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "which"), "status");
	omni_reply_free(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_frame_over_max(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;

	CU_ASSERT_FATAL(fake_start(&f, script_huge_frame) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_call(c, "status", NULL, &r), -EMSGSIZE);
	CU_ASSERT_PTR_NULL(r);
	/* the stream is lost: the error stays */
	CU_ASSERT_EQUAL(omni_recv(c, &r, 0), -EMSGSIZE);
	CU_ASSERT_EQUAL(omni_send(c, "status", NULL, NULL), -EMSGSIZE);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_close_mid_reply(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;

	CU_ASSERT_FATAL(fake_start(&f, script_close_mid_reply) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_call(c, "status", NULL, &r), -ECONNRESET);
	CU_ASSERT_PTR_NULL(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_bad_reply(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;

	CU_ASSERT_FATAL(fake_start(&f, script_bad_json) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_call(c, "status", NULL, &r), -EBADMSG);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_exec(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	omni_exec_opts o = { .spec = "numpy==1.26.4", .python = "3.11", .timeout = 2.5,
			     .tag = "t1", .once = 1, .code = "raise ValueError('x')" };
	omni_exec_opts b = { .spec = "base", .code = "print('ok')" };

	CU_ASSERT_FATAL(fake_start(&f, script_exec) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	/* a failed job is still a successful call */
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), 0);
	CU_ASSERT_FALSE(omni_reply_ok(r));
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "reason"), "exception");
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "stdout"), "partial\n");
	CU_ASSERT_EQUAL(omni_reply_num(r, "stdout_truncated"), 1);
	omni_reply_free(r);
	CU_ASSERT_EQUAL(omni_exec(c, &b, &r), 0);
	CU_ASSERT(omni_reply_ok(r));
	CU_ASSERT_STRING_EQUAL(omni_reply_str(r, "stdout"), "ok\n");
	omni_reply_free(r);
	b.code = NULL;
	CU_ASSERT_EQUAL(omni_exec(c, &b, &r), -EINVAL);
	CU_ASSERT_EQUAL(omni_send(c, "status", "[1]", NULL), -EINVAL);
	CU_ASSERT_EQUAL(omni_send(c, "status", "{not json", NULL), -EINVAL);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_shm_requests(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	omni_segment s;

	CU_ASSERT_FATAL(fake_start(&f, script_shm) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_shm_create(c, "frame", 1 << 20, OMNI_SHM_PERSIST, &s), 0);
	CU_ASSERT_STRING_EQUAL(s.name, "frame");
	CU_ASSERT_STRING_EQUAL(s.path, "/run/x/shm/frame");
	CU_ASSERT_EQUAL(s.id, 7);
	CU_ASSERT_EQUAL(s.gen, 2);
	CU_ASSERT_EQUAL(s.size, 1 << 20);
	/* the size goes as exact digits, past what a double holds */
	CU_ASSERT_EQUAL(omni_shm_create(c, NULL, (UINT64_C(1) << 53) + 1, 0, &s), 0);
	CU_ASSERT_STRING_EQUAL(s.name, "s1");
	CU_ASSERT_EQUAL(omni_shm_list(c, &r), 0);
	CU_ASSERT(omni_reply_ok(r));
	CU_ASSERT_PTR_NOT_NULL(strstr(omni_reply_json(r), "\"leases\":1"));
	omni_reply_free(r);
	memset(&s, 0, sizeof s);
	CU_ASSERT_EQUAL(omni_shm_open(c, "frame", &s), 0);
	CU_ASSERT_STRING_EQUAL(s.path, "/run/x/shm/frame");
	CU_ASSERT_EQUAL(s.id, 7);
	CU_ASSERT_EQUAL(s.size, 1 << 20);
	CU_ASSERT_EQUAL(omni_shm_remove(c, "frame"), 0);
	/* refused before anything is sent */
	CU_ASSERT_EQUAL(omni_shm_create(c, "x", 1, 0x10, &s), -EINVAL);
	CU_ASSERT_EQUAL(omni_shm_remove(c, NULL), -EINVAL);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_shm_refusals(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = (omni_reply *)&f;
	omni_segment s;

	CU_ASSERT_FATAL(fake_start(&f, script_shm_refusals) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_shm_create(c, "big", UINT64_C(1) << 40, 0, &s), -EDQUOT);
	/* no reason of its own: the daemon's errno */
	CU_ASSERT_EQUAL(omni_shm_create(c, "frame", 1, 0, &s), -EEXIST);
	CU_ASSERT_EQUAL(omni_shm_create(c, "frame", 1, 0, &s), -EINVAL);
	CU_ASSERT_EQUAL(omni_shm_remove(c, "frame"), -EBUSY);
	CU_ASSERT_EQUAL(omni_shm_remove(c, "gone"), -ENOENT);
	CU_ASSERT_EQUAL(omni_shm_list(c, &r), -EPROTO);
	CU_ASSERT_PTR_NULL(r);
	CU_ASSERT_EQUAL(omni_shm_open(c, "frame", &s), -ENOENT);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(omni_strerror(-EDQUOT), "quota"));
	CU_ASSERT_PTR_NOT_NULL(strstr(omni_strerror(-EBUSY), "segment"));
}

static void test_exec_arrays(void)
{
	static const int64_t shape_a[] = { 512, 512 }, shape_b[] = { 3, 2 }, strides_b[] = { 8, -24 };
	omni_array a[] = {
		{ .name = "arr_in", .segment = "frame", .dtype = "float32", .shape = shape_a,
		  .ndim = 2, .access = OMNI_ACCESS_IN },
		{ .name = "out", .segment = "o", .dtype = "<i8", .shape = shape_b, .ndim = 2,
		  .offset = UINT64_C(1000000000000001), .strides = strides_b,
		  .access = OMNI_ACCESS_OUT },
		{ .name = "s", .segment = "o", .dtype = "|u1" },
	};
	omni_exec_opts o = { .spec = "base", .code = "pass", .arrays = a, .narrays = 3,
			     .bind_json = "{\"k\": 3, \"t\": [\"x\", null]}" };
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;

	CU_ASSERT_FATAL(fake_start(&f, script_exec_arrays) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), 0);
	CU_ASSERT(omni_reply_ok(r));
	omni_reply_free(r);

	/* views and bind texts that cannot be sent are refused here */
	o.narrays = 1;
	o.bind_json = NULL;
	a[0].ndim = OMNI_ARRAY_MAX_DIM + 1;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	a[0].ndim = 2;
	a[0].access = 3;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	a[0].access = OMNI_ACCESS_IN;
	a[0].segment = NULL;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.arrays = NULL;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.narrays = 0;
	o.bind_json = "[1]";
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.bind_json = "{";
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.bind_json = "{}";
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), 0);
	omni_reply_free(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

/* Reads one frame with recvmsg, collecting the descriptors that came. */
static cJSON *fake_read_fds(int fd, int *fds, int *nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} u;
	unsigned char h[4];
	struct iovec iov = { .iov_base = h, .iov_len = 4 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof u.buf };
	struct cmsghdr *cm;
	uint32_t n;
	char *body;
	cJSON *m;

	*nfds = 0;
	if (recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL) != 4)
		return NULL;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			*nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)*nfds);
		}
	n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (!(body = malloc(n + 1)) || fake_read_full(fd, body, n) < 0) {
		free(body);
		return NULL;
	}
	body[n] = 0;
	m = cJSON_Parse(body);
	free(body);
	return m;
}

/* The file a descriptor the fake received is, against the request's
 * word for it. */
static int fake_same_file(const cJSON *d, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && fake_num(d, "dev") == (double)st.st_dev &&
	       fake_num(d, "ino") == (double)st.st_ino && strcmp(fake_str(d, "kind"), "cuda") == 0;
}

static void script_exec_fds(struct fake *f, int fd)
{
	int fds[16], n;
	cJSON *m, *a;

	fake_hello(f, fd, PROTO_VERSION);
	m = fake_read_fds(fd, fds, &n);
	FAKE_EXPECT(f, m && strcmp(fake_str(m, "op"), "exec") == 0);
	a = cJSON_GetObjectItem(m, "fds");
	FAKE_EXPECT(f, n == 2 && cJSON_GetArraySize(a) == 2);
	if (n == 2 && cJSON_GetArraySize(a) == 2) {
		FAKE_EXPECT(f, strcmp(fake_str(cJSON_GetArrayItem(a, 0), "for"), "x") == 0);
		FAKE_EXPECT(f, strcmp(fake_str(cJSON_GetArrayItem(a, 1), "for"), "y") == 0);
		FAKE_EXPECT(f, fake_same_file(cJSON_GetArrayItem(a, 0), fds[0]));
		FAKE_EXPECT(f, fake_same_file(cJSON_GetArrayItem(a, 1), fds[1]));
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	fake_reply(fd, m ? fake_num(m, "id") : 0, 1, NULL);
	cJSON_Delete(m);
	/* the next request carries none */
	m = fake_read_fds(fd, fds, &n);
	FAKE_EXPECT(f, m && n == 0 && !cJSON_GetObjectItem(m, "fds"));
	fake_reply(fd, m ? fake_num(m, "id") : 0, 1, NULL);
	cJSON_Delete(m);
}

static void test_exec_fds(void)
{
	int p[2], q[2];
	const char *names[] = { "x", "y" };
	omni_exec_opts o = { .spec = "base", .code = "pass",
			     .bind_json = "{\"x\": 1, \"y\": 2}", .fd_for = names, .nfds = 2 };
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;

	CU_ASSERT_FATAL(pipe(p) == 0 && pipe(q) == 0);
	o.fds = (int[]){ p[0], q[1] };
	CU_ASSERT_FATAL(fake_start(&f, script_exec_fds) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), 0);
	CU_ASSERT(omni_reply_ok(r));
	omni_reply_free(r);
	/* refused before a byte goes: too many, no names, a closed one */
	o.nfds = OMNI_EXEC_MAX_FDS + 1;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.nfds = 2;
	o.fd_for = NULL;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EINVAL);
	o.fd_for = names;
	o.fds = (int[]){ p[0], 1000 };
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), -EBADF);
	o.nfds = 0;
	CU_ASSERT_EQUAL(omni_exec(c, &o, &r), 0);
	omni_reply_free(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

static void test_shm_map(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", link[96], buf[8];
	omni_segment s = { .size = 8192 };
	void *w = NULL, *ro = NULL;
	size_t wlen = 0, rlen = 0;
	int fd;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(s.path, sizeof s.path, "%s/seg", dir);
	CU_ASSERT_FATAL((fd = open(s.path, O_RDWR | O_CREAT | O_EXCL, 0600)) >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, 8192) == 0);

	CU_ASSERT_EQUAL(omni_shm_map(&s, 1, &w, &wlen), 0);
	CU_ASSERT_EQUAL(omni_shm_map(&s, 0, &ro, &rlen), 0);
	CU_ASSERT_EQUAL(wlen, 8192);
	CU_ASSERT_EQUAL(rlen, 8192);
	CU_ASSERT_FATAL(w && ro && w != ro);
	/* one set of pages: written through one mapping, seen through the other and the file */
	memcpy((char *)w + 4096, "bytes!", 7);
	CU_ASSERT_STRING_EQUAL((char *)ro + 4096, "bytes!");
	CU_ASSERT_EQUAL(pread(fd, buf, 7, 4096), 7);
	CU_ASSERT_STRING_EQUAL(buf, "bytes!");
	CU_ASSERT_EQUAL(omni_shm_unmap(w, wlen), 0);
	CU_ASSERT_EQUAL(omni_shm_unmap(ro, rlen), 0);
	CU_ASSERT_EQUAL(omni_shm_unmap(NULL, 0), 0);

	/* the file as it is now, not the size once described */
	CU_ASSERT_FATAL(ftruncate(fd, 0) == 0);
	w = (void *)&s;
	CU_ASSERT_EQUAL(omni_shm_map(&s, 1, &w, &wlen), 0);
	CU_ASSERT_PTR_NULL(w);
	CU_ASSERT_EQUAL(wlen, 0);

	/* never through a symlink, never a file that is not one */
	snprintf(link, sizeof link, "%s/link", dir);
	CU_ASSERT_FATAL(symlink(s.path, link) == 0);
	snprintf(s.path, sizeof s.path, "%s", link);
	CU_ASSERT_EQUAL(omni_shm_map(&s, 0, &ro, &rlen), -EPERM);
	CU_ASSERT_PTR_NULL(ro);
	snprintf(s.path, sizeof s.path, "%s", dir);
	CU_ASSERT_EQUAL(omni_shm_map(&s, 0, &ro, &rlen), -EPERM);
	snprintf(s.path, sizeof s.path, "%s/missing", dir);
	CU_ASSERT_EQUAL(omni_shm_map(&s, 0, &ro, &rlen), -ENOENT);

	close(fd);
	unlink(link);
	snprintf(link, sizeof link, "%s/seg", dir);
	unlink(link);
	rmdir(dir);
}

static void test_recv_timeout(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	uint64_t id = 0;

	CU_ASSERT_FATAL(fake_start(&f, script_silent) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	CU_ASSERT_EQUAL(omni_send(c, "workers", NULL, &id), 0);
	CU_ASSERT_EQUAL(omni_recv(c, &r, 20), -ETIMEDOUT);
	CU_ASSERT_PTR_NULL(r);
	CU_ASSERT_EQUAL(write(f.go[1], "g", 1), 1);
	/* a timeout leaves the handle usable */
	CU_ASSERT_EQUAL(omni_recv(c, &r, 5000), 0);
	CU_ASSERT_EQUAL(omni_reply_id(r), id);
	omni_reply_free(r);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

static void test_ids_exact_to_2_53(void)
{
	struct fake f;
	omni_client *c = NULL;
	omni_reply *r = NULL;
	uint64_t id = 0;

	CU_ASSERT_FATAL(fake_start(&f, script_ids) == 0);
	CU_ASSERT_FATAL(omni_connect(&c, f.path, 0) == 0);
	client_next_id_set(c, (UINT64_C(1) << 53) - 1);
	for (uint64_t want = (UINT64_C(1) << 53) - 1; want <= UINT64_C(1) << 53; want++) {
		char text[48];

		CU_ASSERT_EQUAL(omni_send(c, "status", NULL, &id), 0);
		CU_ASSERT_EQUAL(id, want);
		CU_ASSERT_EQUAL_FATAL(omni_recv(c, &r, 5000), 0);
		CU_ASSERT_EQUAL(omni_reply_id(r), want);
		snprintf(text, sizeof text, "\"id\":%llu,", (unsigned long long)want);
		CU_ASSERT_PTR_NOT_NULL(strstr(omni_reply_json(r), text));
		CU_ASSERT_EQUAL(omni_reply_num(r, "id"), (double)want);
		omni_reply_free(r);
	}
	/* past 2^53 the protocol has no ids left */
	CU_ASSERT_EQUAL(omni_send(c, "status", NULL, &id), -EOVERFLOW);
	omni_close(c);
	CU_ASSERT_EQUAL(fake_stop(&f), 0);
}

/* ---- trust: sockets the client must refuse, before sending a byte ------ */

#define SQUATTER 65534   /* "nobody" */

static int write_marker_daemon(const char *dir, char *bin, size_t n, char *mark, size_t m);

/* A listening socket nobody accepts on, at <dir>/s; -1 on failure. */
static int trust_listen(const char *dir, char *path, size_t n)
{
	int fd;

	snprintf(path, n, "%s/s", dir);
	if ((fd = fake_listen(path)) >= 0)
		fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* Whether nobody connected to lfd (so nothing was sent on it). */
static int trust_untouched(int lfd)
{
	int fd = accept(lfd, NULL, NULL);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	return errno == EAGAIN || errno == EWOULDBLOCK;
}

static void trust_expect_refused(const char *path, int lfd, const char *why)
{
	omni_client *c = (omni_client *)&c;
	char err[512] = "x";

	CU_ASSERT_EQUAL(omni_connect_err(&c, path, 0, err, sizeof err), -EPERM);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, why));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "OMNIPKG_RUNTIME_DIR"));
	CU_ASSERT(trust_untouched(lfd));
}

static void test_trust_dir_mode_and_link(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", link[64], path[128], lpath[128];
	int lfd;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL((lfd = trust_listen(dir, path, sizeof path)) >= 0);

	/* a directory others may write to: anyone could have put the socket there */
	CU_ASSERT_FATAL(chmod(dir, 0777) == 0);
	trust_expect_refused(path, lfd, "mode 0777");
	CU_ASSERT_FATAL(chmod(dir, 0750) == 0);
	trust_expect_refused(path, lfd, "mode 0750");
	CU_ASSERT_FATAL(chmod(dir, 0700) == 0);

	/* a symlink to a good directory: whoever owns the link chooses the target */
	snprintf(link, sizeof link, "%s.link", dir);
	CU_ASSERT_FATAL(symlink(dir, link) == 0);
	snprintf(lpath, sizeof lpath, "%s/s", link);
	trust_expect_refused(lpath, lfd, "symlink");

	unlink(link);
	close(lfd);
	unlink(path);
	rmdir(dir);
}

static void test_trust_other_owner(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", path[128];
	int lfd;

	if (geteuid() != 0)
		return;   /* only root can give a file away */
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL((lfd = trust_listen(dir, path, sizeof path)) >= 0);

	CU_ASSERT_FATAL(chown(dir, SQUATTER, SQUATTER) == 0);
	trust_expect_refused(path, lfd, "uid 65534");
	CU_ASSERT_FATAL(chown(dir, 0, 0) == 0);

	CU_ASSERT_FATAL(chown(path, SQUATTER, SQUATTER) == 0);
	trust_expect_refused(path, lfd, "uid 65534");

	close(lfd);
	unlink(path);
	rmdir(dir);
}

/* A socket file of ours whose listener runs as another uid: bound as root,
 * listening (which records the peer credentials) as the squatter. */
static void test_trust_peer_uid(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", path[64], got[32] = "";
	int ready[2], result[2], status = 0;
	omni_client *c = NULL;
	char err[512] = "";
	pid_t pid;

	if (geteuid() != 0)
		return;
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/s", dir);
	CU_ASSERT_FATAL(pipe(ready) == 0 && pipe(result) == 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int lfd = socket(AF_UNIX, SOCK_STREAM, 0), fd;
		struct pollfd pfd = { .events = POLLIN };
		char buf[256];
		long total = 0;
		ssize_t k;

		alarm(10);
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
		    setgid(SQUATTER) < 0 || setuid(SQUATTER) < 0 || listen(lfd, 4) < 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(2);
		pfd.fd = lfd;
		if (poll(&pfd, 1, 5000) != 1 || (fd = accept(lfd, NULL, NULL)) < 0)
			_exit(3);
		/* everything the client sends, until it hangs up */
		while ((k = read(fd, buf, sizeof buf)) > 0)
			total += k;
		dprintf(result[1], "%ld", total);
		_exit(0);
	}
	close(ready[1]);
	close(result[1]);
	CU_ASSERT_FATAL(fake_read_full(ready[0], got, 1) == 0);
	CU_ASSERT_EQUAL(omni_connect_err(&c, path, 0, err, sizeof err), -EPERM);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "runs as uid 65534"));
	memset(got, 0, sizeof got);
	CU_ASSERT(read(result[0], got, sizeof got - 1) > 0);
	CU_ASSERT_STRING_EQUAL(got, "0");
	waitpid(pid, &status, 0);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(ready[0]);
	close(result[0]);
	unlink(path);
	rmdir(dir);
}

/* Autostart neither runs a daemon for, nor dials through, a squatted
 * runtime directory. */
static void test_trust_no_autostart_into_squat(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", bin[128], mark[128], err[256];
	omni_client *c = NULL;
	struct stat st;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL(write_marker_daemon(dir, bin, sizeof bin, mark, sizeof mark) == 0);
	CU_ASSERT_FATAL(chmod(dir, 0777) == 0);
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	setenv("OMNIPKGD", bin, 1);
	unsetenv("OMNIPKG_DAEMON_CHILD");
	CU_ASSERT_EQUAL(omni_connect(&c, NULL, OMNI_CONNECT_AUTOSTART), -EPERM);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_EQUAL(omni_daemon_start(NULL, err, sizeof err), -EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, dir));
	CU_ASSERT(stat(mark, &st) < 0 && errno == ENOENT);
	unsetenv("OMNIPKGD");
	unsetenv("OMNIPKG_RUNTIME_DIR");
	unlink(bin);
	rmdir(dir);
}

static void test_strerror(void)
{
	static const int errs[] = { 0, -EPROTONOSUPPORT, -ECONNREFUSED, -ENOENT, -ECONNRESET,
				    -EMSGSIZE, -EBADMSG, -ETIMEDOUT, -EINVAL, -ENOMEM, -99999, 7 };

	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
		const char *s = omni_strerror(errs[i]);

		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT(strlen(s) > 0);
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(omni_strerror(-EPROTONOSUPPORT), "protocol"));
	CU_ASSERT_PTR_NOT_NULL(strstr(omni_strerror(-ECONNREFUSED), "not running"));
	CU_ASSERT(strlen(omni_version()) > 0);
}

/* A $OMNIPKGD that leaves a mark if anyone runs it. */
static int write_marker_daemon(const char *dir, char *bin, size_t n, char *mark, size_t m)
{
	FILE *fp;

	snprintf(bin, n, "%s/fake-omnipkgd", dir);
	snprintf(mark, m, "%s/ran", dir);
	if (!(fp = fopen(bin, "w")))
		return -1;
	fprintf(fp, "#!/bin/sh\ntouch '%s'\nexit 0\n", mark);
	fclose(fp);
	return chmod(bin, 0700);
}

static void test_no_autostart_in_worker(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", bin[128], mark[128], err[256];
	omni_client *c = NULL;
	struct stat st;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL(write_marker_daemon(dir, bin, sizeof bin, mark, sizeof mark) == 0);
	/* the default socket, in an empty runtime dir: only the worker check stops a start */
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	setenv("OMNIPKGD", bin, 1);
	setenv("OMNIPKG_DAEMON_CHILD", "1", 1);

	CU_ASSERT_EQUAL(omni_connect(&c, NULL, OMNI_CONNECT_AUTOSTART), -ECONNREFUSED);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_EQUAL(omni_daemon_start(NULL, err, sizeof err), -EPERM);
	CU_ASSERT(stat(mark, &st) < 0 && errno == ENOENT);

	/* without the flag nothing is started either */
	unsetenv("OMNIPKG_DAEMON_CHILD");
	CU_ASSERT_EQUAL(omni_connect(&c, NULL, 0), -ECONNREFUSED);
	CU_ASSERT(stat(mark, &st) < 0 && errno == ENOENT);

	unsetenv("OMNIPKGD");
	unsetenv("OMNIPKG_RUNTIME_DIR");
	unlink(bin);
	rmdir(dir);
}

static char self_path[PATH_MAX];

static void test_autostart(void)
{
	char dir[] = "/tmp/omni-test-client.XXXXXX", sock[256], other[256];
	char bin[128], mark[128], err[256];
	omni_client *c = NULL;
	omni_reply *r = NULL;
	struct stat st;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	setenv("OMNIPKG_RUNTIME_DIR", dir, 1);
	unsetenv("OMNIPKG_DAEMON_CHILD");
	CU_ASSERT_FATAL(omni_default_socket(sock, sizeof sock) == 0);

	/* the daemon listens on the default socket only: nothing is started for another */
	CU_ASSERT_FATAL(write_marker_daemon(dir, bin, sizeof bin, mark, sizeof mark) == 0);
	setenv("OMNIPKGD", bin, 1);
	snprintf(other, sizeof other, "%s/other.sock", dir);
	CU_ASSERT_EQUAL(omni_daemon_start(other, err, sizeof err), -EINVAL);
	CU_ASSERT(strlen(err) > 0);
	CU_ASSERT_EQUAL(omni_connect(&c, other, OMNI_CONNECT_AUTOSTART), -ECONNREFUSED);
	CU_ASSERT(stat(mark, &st) < 0 && errno == ENOENT);

	/* this program, run with --daemon, plays the daemon */
	setenv("OMNIPKGD", self_path, 1);
	CU_ASSERT_EQUAL(omni_connect(&c, NULL, OMNI_CONNECT_AUTOSTART), 0);
	if (c) {
		CU_ASSERT_EQUAL(omni_status(c, &r), 0);
		CU_ASSERT_EQUAL(omni_reply_num(r, "pid"), 4242);
		omni_reply_free(r);
	}
	omni_close(c);
	unsetenv("OMNIPKGD");
	unsetenv("OMNIPKG_RUNTIME_DIR");
	unlink(sock);
	unlink(bin);
	rmdir(dir);
}

/* `--daemon`: listen on the default socket, answer one client from a child
 * process, and exit 0 at once, as the real daemon's first process does. */
static int fake_daemon_main(void)
{
	struct fake f = { 0 };
	pid_t pid;

	if (omni_default_socket(f.path, sizeof f.path) < 0 || (f.lfd = fake_listen(f.path)) < 0)
		return 1;
	f.script = script_status;
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid > 0)
		return 0;
	alarm(10);
	fake_main(&f);
	unlink(f.path);
	_exit(0);
}

int main(int argc, char **argv)
{
	CU_pSuite s;
	ssize_t k;
	unsigned fails;

	if (argc > 1 && strcmp(argv[1], "--daemon") == 0)
		return fake_daemon_main();
	k = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
	if (k <= 0)
		return 1;
	self_path[k] = '\0';
	unsetenv("OMNIPKG_DAEMON_CHILD");

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	s = CU_add_suite("client", NULL, NULL);
	if (!s ||
	    !CU_add_test(s, "connect, hello, status, accessors", test_connect_and_status) ||
	    !CU_add_test(s, "refuses another protocol version", test_refuses_other_proto) ||
	    !CU_add_test(s, "out-of-order replies matched by id", test_out_of_order) ||
	    !CU_add_test(s, "frame over the maximum", test_frame_over_max) ||
	    !CU_add_test(s, "server closes mid-reply", test_close_mid_reply) ||
	    !CU_add_test(s, "malformed reply", test_bad_reply) ||
	    !CU_add_test(s, "exec request and failed job", test_exec) ||
	    !CU_add_test(s, "shm_create, shm_list, shm_remove requests", test_shm_requests) ||
	    !CU_add_test(s, "shm refusals become errnos", test_shm_refusals) ||
	    !CU_add_test(s, "exec with arrays and bind", test_exec_arrays) ||
	    !CU_add_test(s, "exec with descriptors", test_exec_fds) ||
	    !CU_add_test(s, "shm_map maps a segment's file", test_shm_map) ||
	    !CU_add_test(s, "recv timeout keeps the handle", test_recv_timeout) ||
	    !CU_add_test(s, "ids exact up to 2^53", test_ids_exact_to_2_53) ||
	    !CU_add_test(s, "trust: directory mode and symlink", test_trust_dir_mode_and_link) ||
	    !CU_add_test(s, "trust: another owner", test_trust_other_owner) ||
	    !CU_add_test(s, "trust: peer of another uid", test_trust_peer_uid) ||
	    !CU_add_test(s, "trust: no autostart into a squat", test_trust_no_autostart_into_squat) ||
	    !CU_add_test(s, "strerror", test_strerror) ||
	    !CU_add_test(s, "no autostart inside a worker", test_no_autostart_in_worker) ||
	    !CU_add_test(s, "autostart runs the daemon", test_autostart)) {
		CU_cleanup_registry();
		return 1;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
