/*
 * test_chan.c - the framed channel's descriptors (SCM_RIGHTS): they arrive
 * with their own frame however the reads fall, more than a frame may carry
 * are refused and closed, descriptors sent mid-frame belong to no frame,
 * frames queued behind others take their descriptors along, and nothing
 * leaks: every test counts /proc/self/fd before and after.  And the read
 * side as the hot path uses it: a small frame neither grows nor trims the
 * buffer, and the end of stream comes after the frames before it.
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan.h"
#include "proto.h"

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n - 1;   /* the directory's own */
}

static int sp[2];           /* sp[0]: the channel's end; sp[1]: the peer's */
static struct chan ch;
static int fds_before;

static void setup(void)
{
	fds_before = open_fds();
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) == 0);
	chan_init(&ch, sp[0], 1 << 20);
}

static void teardown(void)
{
	chan_free(&ch);
	close(sp[0]);
	close(sp[1]);
	CU_ASSERT_EQUAL(open_fds(), fds_before);
}

/* A frame {"n":k} in buf; its length. */
static size_t mkframe(char *buf, int k)
{
	int n = sprintf(buf + PROTO_HDR, "{\"n\":%d}", k);

	proto_frame_hdr((unsigned char *)buf, (size_t)n);
	return PROTO_HDR + (size_t)n;
}

/* Sends n bytes with nfds descriptors from the peer's end. */
static void peer_send(const char *p, size_t n, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nfds) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	CU_ASSERT_EQUAL_FATAL(sendmsg(sp[1], &mh, MSG_NOSIGNAL), (ssize_t)n);
}

static void peer_frame(int k, const int *fds, int nfds)
{
	char buf[64];

	peer_send(buf, mkframe(buf, k), fds, nfds);
}

static int same_file(int a, int b)
{
	struct stat x, y;

	return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev &&
	       x.st_ino == y.st_ino;
}

/* The next frame's "n", with its descriptors taken into fds (*nfds). */
static int next(int *fds, int *nfds)
{
	const char *p;
	size_t len;
	long n = chan_frame(&ch, &p, &len);
	int k = -1;

	if (n <= 0)
		return -1000 + (int)n;
	CU_ASSERT_EQUAL(sscanf(p, "{\"n\":%d}", &k), 1);
	*nfds = chan_take_fds(&ch, fds, CHAN_MAX_FDS);
	chan_drop(&ch, (size_t)n);
	return k;
}

static void close_all(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

static void test_fds_with_their_frame(void)
{
	int p1[2], p2[2], got[CHAN_MAX_FDS], n;

	setup();
	CU_ASSERT_FATAL(pipe(p1) == 0 && pipe(p2) == 0);
	/* one read returns all three frames: the descriptors still find
	 * theirs, the middle one */
	peer_frame(1, NULL, 0);
	peer_frame(2, (int[]){ p1[0], p2[1] }, 2);
	peer_frame(3, NULL, 0);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(next(got, &n), 1);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(next(got, &n), 2);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT(same_file(got[0], p1[0]));
	CU_ASSERT(same_file(got[1], p2[1]));
	CU_ASSERT(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
	close_all(got, n);
	CU_ASSERT_EQUAL(next(got, &n), 3);
	CU_ASSERT_EQUAL(n, 0);
	close_all(p1, 2);
	close_all(p2, 2);
	teardown();
}

static void test_fds_of_a_split_frame(void)
{
	int p[2], got[CHAN_MAX_FDS], n;
	char buf[64];
	size_t len;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	/* the frame's first bytes (with the descriptor) in one read, the
	 * rest in the next */
	len = mkframe(buf, 7);
	peer_frame(6, NULL, 0);
	peer_send(buf, 3, p, 1);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(next(got, &n), 6);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(next(got, &n), -1000);
	peer_send(buf + 3, len - 3, NULL, 0);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(next(got, &n), 7);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT(same_file(got[0], p[0]));
	close_all(got, n);
	close_all(p, 2);
	teardown();
}

static void test_too_many_refused_and_closed(void)
{
	int p[2], fds[9], got[CHAN_MAX_FDS], n, base;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	base = open_fds();
	for (int i = 0; i < 9; i++)
		fds[i] = p[0];
	peer_frame(1, fds, 9);          /* one past CHAN_MAX_FDS */
	peer_frame(2, fds, 2);          /* two, taken with room for one */
	peer_frame(3, fds, 1);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(next(got, &n), 1);
	CU_ASSERT_EQUAL(n, -ETOOMANYREFS);
	{
		const char *pl;
		size_t len;
		long k = chan_frame(&ch, &pl, &len);

		CU_ASSERT_FATAL(k > 0);
		CU_ASSERT_EQUAL(chan_take_fds(&ch, got, 1), -ETOOMANYREFS);
		CU_ASSERT_EQUAL(chan_take_fds(&ch, got, CHAN_MAX_FDS), -ETOOMANYREFS);
		chan_drop(&ch, (size_t)k);
	}
	CU_ASSERT_EQUAL(open_fds(), base + 1);      /* only frame 3's is here */
	CU_ASSERT_EQUAL(next(got, &n), 3);
	CU_ASSERT_EQUAL(n, 1);
	close_all(got, n);
	CU_ASSERT_EQUAL(open_fds(), base);
	close_all(p, 2);
	teardown();
}

static void test_untaken_closed(void)
{
	int p[2], base;
	const char *pl;
	size_t len;
	long k;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	base = open_fds();
	peer_frame(1, (int[]){ p[0], p[1], p[0] }, 3);
	peer_frame(2, (int[]){ p[0] }, 1);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(open_fds(), base + 4);
	k = chan_frame(&ch, &pl, &len);
	CU_ASSERT_FATAL(k > 0);
	/* asked again (a peek), the frame is the same and so are its fds */
	CU_ASSERT_EQUAL(chan_frame(&ch, &pl, &len), k);
	chan_drop(&ch, (size_t)k);                 /* not taken: closed */
	CU_ASSERT_EQUAL(open_fds(), base + 1);
	/* frame 2's wait in the channel until it goes */
	chan_free(&ch);
	CU_ASSERT_EQUAL(open_fds(), base);
	chan_init(&ch, sp[0], 1 << 20);
	close_all(p, 2);
	teardown();
}

static void test_mid_frame_fds_belong_to_none(void)
{
	int p[2], got[CHAN_MAX_FDS], n, base;
	char buf[64];
	size_t len;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	base = open_fds();
	len = mkframe(buf, 5);
	peer_send(buf, 5, NULL, 0);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	peer_send(buf + 5, len - 5, p, 1);   /* attached mid-frame, read apart */
	peer_frame(8, NULL, 0);
	CU_ASSERT_EQUAL(chan_fill(&ch), 0);
	CU_ASSERT_EQUAL(next(got, &n), 5);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(open_fds(), base);
	CU_ASSERT_EQUAL(next(got, &n), 8);
	CU_ASSERT_EQUAL(n, 0);
	close_all(p, 2);
	teardown();
}

static void test_more_reads_than_the_queue(void)
{
	int p[2], got[CHAN_MAX_FDS], n, k = 0, r;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	for (int i = 0; i < 10; i++)
		peer_frame(i, (int[]){ p[i & 1] }, 1);
	/* the channel stops reading while its queue is full, and goes on
	 * once frames are handled */
	while ((r = chan_fill(&ch)) == 0) {
		int m, before = k;

		while ((m = next(got, &n)) >= 0) {
			CU_ASSERT_EQUAL(m, k);
			CU_ASSERT_EQUAL_FATAL(n, 1);
			CU_ASSERT(same_file(got[0], p[k & 1]));
			close(got[0]);
			k++;
		}
		if (k == before)
			break;
	}
	CU_ASSERT_EQUAL(k, 10);
	close_all(p, 2);
	teardown();
}

static void test_descriptors_no_frame_explains(void)
{
	int p[2];
	char buf[64];

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	/* a frame that never completes, with descriptors on every piece */
	mkframe(buf, 12345);
	for (int i = 0; i < 6; i++)
		peer_send(buf + i, 1, p, 1);
	CU_ASSERT_EQUAL(chan_fill(&ch), -ETOOMANYREFS);
	close_all(p, 2);
	teardown();            /* chan_free closes the ones it holds */
}

static void test_send_queued_behind_others(void)
{
	int p[2], got[CHAN_MAX_FDS], n, base, sz = 4096, k = 0, r;
	cJSON *big = cJSON_CreateObject(), *small = cJSON_CreateObject();
	char *fill = malloc(1 << 20);
	struct chan rx;

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	memset(fill, 'x', (1 << 20) - 1);
	fill[(1 << 20) - 1] = 0;
	cJSON_AddStringToObject(big, "s", fill);
	cJSON_AddNumberToObject(small, "n", 9);
	CU_ASSERT_EQUAL(chan_send(&ch, big), 0);
	CU_ASSERT(chan_pending(&ch) > 0);
	base = open_fds();
	/* behind a megabyte: it goes later, with duplicates of the fds */
	CU_ASSERT_EQUAL(chan_send_fds(&ch, small, p, 2), 0);
	CU_ASSERT_EQUAL(open_fds(), base + 2);
	CU_ASSERT_EQUAL(chan_send_fd(&ch, small, p[0]), 0);
	close_all(p, 2);
	chan_init(&rx, sp[1], 2 << 20);
	for (int spin = 0; spin < 100000 && k < 3; spin++) {
		const char *pl;
		size_t len;
		long m;

		r = chan_flush(&ch);
		CU_ASSERT(r >= 0);
		CU_ASSERT(chan_fill(&rx) == 0);
		while ((m = chan_frame(&rx, &pl, &len)) > 0) {
			n = chan_take_fds(&rx, got, CHAN_MAX_FDS);
			CU_ASSERT_EQUAL(n, k == 0 ? 0 : k == 1 ? 2 : 1);
			if (n > 0) {
				struct stat st;

				CU_ASSERT(fstat(got[0], &st) == 0 && S_ISFIFO(st.st_mode));
				close_all(got, n);
			}
			chan_drop(&rx, (size_t)m);
			k++;
		}
	}
	CU_ASSERT_EQUAL(k, 3);
	CU_ASSERT_EQUAL(chan_pending(&ch), 0);
	chan_free(&rx);
	cJSON_Delete(big);
	cJSON_Delete(small);
	free(fill);
	teardown();
}

static void test_send_limits(void)
{
	int p[2];
	cJSON *m = cJSON_CreateObject();
	int nine[9];

	setup();
	CU_ASSERT_FATAL(pipe(p) == 0);
	for (int i = 0; i < 9; i++)
		nine[i] = p[0];
	CU_ASSERT_EQUAL(chan_send_fds(&ch, m, nine, 9), -EINVAL);
	CU_ASSERT_EQUAL(chan_send_fds(&ch, m, nine, -1), -EINVAL);
	CU_ASSERT_EQUAL(chan_send_fds(&ch, m, (int[]){ 9999 }, 1), -EBADF);
	cJSON_Delete(m);
	close_all(p, 2);
	teardown();
}

/* A small frame must not grow (and then trim) the read buffer: growing
 * on every fill made each hot request fault in and give back 128 KiB. */
static void test_small_frame_keeps_buffer(void)
{
	int got[CHAN_MAX_FDS], n;

	setup();
	for (int i = 0; i < 100; i++) {
		peer_frame(i, NULL, 0);
		CU_ASSERT_EQUAL(chan_fill(&ch), 0);
		CU_ASSERT_EQUAL(next(got, &n), i);
		chan_trim(&ch);
		CU_ASSERT_EQUAL(ch.rcap, 65536);   /* the first size, kept */
	}
	teardown();
}

static void test_big_frame_grows_and_trims(void)
{
	size_t body = 300 * 1024, off = 0;
	char *b = malloc(PROTO_HDR + body);
	const char *p = NULL;
	size_t len = 0;
	long n = 0;
	int r = 0;

	CU_ASSERT_FATAL(b != NULL);
	setup();
	proto_frame_hdr((unsigned char *)b, body);
	memset(b + PROTO_HDR, 'y', body);
	/* More than a socket buffer holds: write and fill in turns. */
	for (int turn = 0; turn < 10000 && n == 0; turn++) {
		ssize_t k = off < PROTO_HDR + body ? write(sp[1], b + off, PROTO_HDR + body - off) : 0;

		if (k > 0)
			off += (size_t)k;
		if ((r = chan_fill(&ch)) < 0)
			break;
		n = chan_frame(&ch, &p, &len);
	}
	CU_ASSERT_EQUAL(r, 0);
	CU_ASSERT_EQUAL(n, (long)(PROTO_HDR + body));
	CU_ASSERT_EQUAL(len, body);
	CU_ASSERT(p && p[0] == 'y' && p[body - 1] == 'y');
	CU_ASSERT(ch.rcap > 65536);
	if (n > 0)
		chan_drop(&ch, (size_t)n);
	chan_trim(&ch);
	CU_ASSERT(ch.rcap <= 65536);   /* what one big frame needed is given back */
	free(b);
	teardown();
}

static void test_eof_after_frames(void)
{
	int got[CHAN_MAX_FDS], n, r;

	setup();
	peer_frame(1, NULL, 0);
	peer_frame(2, NULL, 0);
	shutdown(sp[1], SHUT_WR);
	/* The frames first; the end of stream by the next fill at the latest
	 * (a short read ends a fill without the read that would see it). */
	r = chan_fill(&ch);
	CU_ASSERT(r == 0 || r == -EPIPE);
	CU_ASSERT_EQUAL(next(got, &n), 1);
	CU_ASSERT_EQUAL(next(got, &n), 2);
	CU_ASSERT_EQUAL(next(got, &n), -1000);   /* no frame left */
	if (r == 0)
		r = chan_fill(&ch);
	CU_ASSERT_EQUAL(r, -EPIPE);
	teardown();
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("chan descriptors", NULL, NULL);
	CU_add_test(s, "descriptors arrive with their frame", test_fds_with_their_frame);
	CU_add_test(s, "a frame split across reads", test_fds_of_a_split_frame);
	CU_add_test(s, "too many refused and closed", test_too_many_refused_and_closed);
	CU_add_test(s, "descriptors not taken are closed", test_untaken_closed);
	CU_add_test(s, "descriptors sent mid-frame", test_mid_frame_fds_belong_to_none);
	CU_add_test(s, "more reads with descriptors than the queue", test_more_reads_than_the_queue);
	CU_add_test(s, "descriptors no frame explains", test_descriptors_no_frame_explains);
	CU_add_test(s, "sent behind queued bytes", test_send_queued_behind_others);
	CU_add_test(s, "send limits", test_send_limits);
	s = CU_add_suite("chan reads", NULL, NULL);
	CU_add_test(s, "a small frame keeps the read buffer", test_small_frame_keeps_buffer);
	CU_add_test(s, "a big frame grows it, trim gives it back", test_big_frame_grows_and_trims);
	CU_add_test(s, "end of stream after the frames", test_eof_after_frames);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
