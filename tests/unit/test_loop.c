/*
 * test_loop.c - the event loop's interest set: loop_mod, which callers
 * restate after every event, skips epoll_ctl when nothing changed and
 * still arms and disarms exactly what it is asked for.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"

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
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
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
	CU_add_test(s, "loop_mod tracks the interest set", test_mod_tracks_interest);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
