/*
 * test_loop.c - the event loop's interest set and the read side of the
 * framed channel, as the hot path uses them: a small request must not
 * grow (and then trim) the read buffer, a short read must not be followed
 * by a read that only sees EAGAIN, and the end of stream still comes after
 * the frames before it.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "loop.h"
#include "proto.h"

static int pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	return fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0 ? -1 : 0;
}

/* Writes one frame of body bytes of 'x' wrapped as a JSON string. */
static int put_frame(int fd, size_t body)
{
	size_t n = PROTO_HDR + body, off = 0;
	char *b = malloc(n);

	if (!b)
		return -1;
	proto_frame_hdr((unsigned char *)b, body);
	memset(b + PROTO_HDR, 'x', body);
	b[PROTO_HDR] = '"';
	b[n - 1] = '"';
	while (off < n) {
		ssize_t w = write(fd, b + off, n - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	free(b);
	return off == n ? 0 : -1;
}

static void test_small_frame_keeps_buffer(void)
{
	struct chan c;
	const char *p;
	size_t len;
	int sv[2];

	CU_ASSERT_FATAL(pair(sv) == 0);
	chan_init(&c, sv[0], 1 << 20);
	for (int i = 0; i < 100; i++) {
		long n;

		CU_ASSERT_FATAL(put_frame(sv[1], 71) == 0);
		CU_ASSERT_EQUAL(chan_fill(&c), 0);
		n = chan_frame(&c, &p, &len);
		CU_ASSERT_EQUAL(n, PROTO_HDR + 71);
		CU_ASSERT_EQUAL(len, 71);
		chan_drop(&c, (size_t)n);
		chan_trim(&c);
		/* One buffer of the first size, kept between frames. */
		CU_ASSERT_EQUAL(c.rcap, 65536);
	}
	chan_free(&c);
	close(sv[0]);
	close(sv[1]);
}

static void test_big_frame_grows_and_trims(void)
{
	struct chan c;
	const char *p = NULL;
	size_t len = 0;
	long n = 0;
	int sv[2], w = 0;
	size_t body = 300 * 1024;
	char *b = malloc(PROTO_HDR + body);
	size_t off = 0;

	CU_ASSERT_FATAL(b != NULL);
	CU_ASSERT_FATAL(pair(sv) == 0);
	CU_ASSERT_FATAL(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
	proto_frame_hdr((unsigned char *)b, body);
	memset(b + PROTO_HDR, 'y', body);
	chan_init(&c, sv[0], 1 << 20);
	/* More than a socket buffer holds: write and fill in turns. */
	for (int turn = 0; turn < 10000 && n == 0; turn++) {
		ssize_t k = off < PROTO_HDR + body ? write(sv[1], b + off, PROTO_HDR + body - off) : 0;

		if (k > 0)
			off += (size_t)k;
		w = chan_fill(&c);
		if (w < 0)
			break;
		n = chan_frame(&c, &p, &len);
	}
	CU_ASSERT_EQUAL(w, 0);
	CU_ASSERT_EQUAL(n, (long)(PROTO_HDR + body));
	CU_ASSERT_EQUAL(len, body);
	CU_ASSERT(p && p[0] == 'y' && p[body - 1] == 'y');
	CU_ASSERT(c.rcap > 65536);
	chan_drop(&c, (size_t)n);
	chan_trim(&c);
	CU_ASSERT(c.rcap <= 65536);   /* what one big frame needed is given back */
	chan_free(&c);
	free(b);
	close(sv[0]);
	close(sv[1]);
}

static void test_eof_after_frames(void)
{
	struct chan c;
	const char *p;
	size_t len;
	long n;
	int sv[2];

	CU_ASSERT_FATAL(pair(sv) == 0);
	chan_init(&c, sv[0], 1 << 20);
	CU_ASSERT_FATAL(put_frame(sv[1], 10) == 0);
	CU_ASSERT_FATAL(put_frame(sv[1], 20) == 0);
	shutdown(sv[1], SHUT_WR);
	/* The frames first; the end of stream by the next fill at the latest. */
	int r = chan_fill(&c);

	CU_ASSERT(r == 0 || r == -EPIPE);
	n = chan_frame(&c, &p, &len);
	CU_ASSERT_EQUAL(len, 10);
	chan_drop(&c, (size_t)n);
	n = chan_frame(&c, &p, &len);
	CU_ASSERT_EQUAL(len, 20);
	chan_drop(&c, (size_t)n);
	CU_ASSERT_EQUAL(chan_frame(&c, &p, &len), 0);
	if (r == 0)
		r = chan_fill(&c);
	CU_ASSERT_EQUAL(r, -EPIPE);
	chan_free(&c);
	close(sv[0]);
	close(sv[1]);
}

struct seen {
	uint32_t ev;
	int calls;
};

static void on_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct seen *s = ud;

	(void)l;
	(void)fd;
	s->ev |= ev;
	s->calls++;
}

static void on_stop(struct loop *l, void *ud)
{
	(void)ud;
	loop_stop(l);
}

/* Events delivered in one short turn of the loop. */
static uint32_t turn(struct loop *l, struct seen *s)
{
	s->ev = 0;
	s->calls = 0;
	loop_timer_add(l, 0.02, on_stop, NULL);
	loop_run(l);
	return s->ev;
}

static void test_mod_tracks_interest(void)
{
	struct loop *l = loop_new();
	struct seen s = { 0, 0 };
	int sv[2];

	CU_ASSERT_FATAL(l != NULL);
	CU_ASSERT_FATAL(pair(sv) == 0);
	/* sv[0] is writable and has nothing to read. */
	CU_ASSERT_EQUAL(loop_add(l, sv[0], EPOLLIN, on_io, &s), 0);
	CU_ASSERT_EQUAL(turn(l, &s) & (EPOLLIN | EPOLLOUT), 0);
	CU_ASSERT_EQUAL(loop_mod(l, sv[0], EPOLLIN | EPOLLOUT), 0);
	CU_ASSERT(turn(l, &s) & EPOLLOUT);
	/* Back, and restated: the restatement must not leave EPOLLOUT armed. */
	CU_ASSERT_EQUAL(loop_mod(l, sv[0], EPOLLIN), 0);
	CU_ASSERT_EQUAL(loop_mod(l, sv[0], EPOLLIN), 0);
	CU_ASSERT_EQUAL(turn(l, &s) & EPOLLOUT, 0);
	CU_ASSERT_EQUAL(loop_mod(l, sv[0], EPOLLOUT), 0);
	CU_ASSERT(turn(l, &s) & EPOLLOUT);
	/* A descriptor number reused after loop_del starts from what it is added with. */
	CU_ASSERT_EQUAL(loop_del(l, sv[0]), 0);
	CU_ASSERT_EQUAL(loop_add(l, sv[0], EPOLLIN, on_io, &s), 0);
	CU_ASSERT_EQUAL(turn(l, &s) & EPOLLOUT, 0);
	CU_ASSERT_EQUAL(loop_mod(l, sv[0], EPOLLOUT), 0);
	CU_ASSERT(turn(l, &s) & EPOLLOUT);
	CU_ASSERT_EQUAL(loop_mod(l, 1000, EPOLLIN), -EBADF);
	loop_free(l);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return CU_get_error();
	s = CU_add_suite("loop", NULL, NULL);
	CU_add_test(s, "a small frame keeps the read buffer", test_small_frame_keeps_buffer);
	CU_add_test(s, "a big frame grows it, trim gives it back", test_big_frame_grows_and_trims);
	CU_add_test(s, "end of stream after the frames", test_eof_after_frames);
	CU_add_test(s, "loop_mod tracks the interest set", test_mod_tracks_interest);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
