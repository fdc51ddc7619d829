/*
 * client_ctl.c - control blocks (omnipkg.h): a seqlock over a record in a
 * shared segment, whose writers may die while they hold it.
 *
 * Only libc: the Python extension (src/pyext/omnipkg_atomic.c) compiles
 * this file as it is, so C and Python run the same protocol, and the
 * daemon uses it to recover the blocks of a worker that died (shm.c).
 *
 * Every shared word is accessed with the GCC/Clang __atomic builtins on
 * plain uint64_t fields of the mapping; 64-bit atomics are lock-free on
 * every target we build for, hence address-free, so they work between
 * processes.  The record itself is copied with memcpy while a writer may
 * be changing it: that is the seqlock's bargain, and the second read of
 * seq (after an acquire fence) throws away every copy that overlapped a
 * write.
 */
#include "omnipkg.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_ctl.h"

#define CTL_SPIN_NS 50000L       /* a waiter spins for 50 us (a write of Python's is a few) ... */
#define CTL_YIELD_NS 1000000L    /* ... then yields the CPU until 1 ms ... */
#define CTL_SLEEP_MIN_NS 10000L  /* ... then sleeps, 10 us doubling ... */
#define CTL_SLEEP_MAX_NS 500000L /* ... to 0.5 ms */
#define CTL_CHECK_NS 1000000L    /* a claim held this long has its holder looked at, and again
				    every as long: reading /proc costs microseconds, which a
				    reader of a busy block must not pay per wait */
#define CTL_PID_MAX ((UINT64_C(1) << (64 - OMNI_CTL_PID_SHIFT)) - 1)

static inline uint64_t ctl__ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline uint64_t ctl__ld_acq(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void ctl__st(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline int ctl__cas(uint64_t *p, uint64_t expected, uint64_t desired)
{
	return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}

static inline void ctl__relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static int64_t ctl__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int client_ctl_parse_stat(const char *text, size_t n, char *state, uint64_t *start)
{
	const char *p = NULL, *end = text + n, *f;
	int field = 2;                 /* the last ')' ends field 2, (comm) */

	if (!text || !state || !start)
		return -EINVAL;
	for (const char *q = text; q < end; q++)
		if (*q == ')')
			p = q + 1;     /* comm may itself hold ')' and spaces */
	if (!p)
		return -EINVAL;
	while (p < end && *p != '\n') {
		if (*p != ' ')
			return -EINVAL;
		f = ++p;
		field++;
		while (p < end && *p != ' ' && *p != '\n')
			p++;
		if (p == f)
			return -EINVAL;
		if (field == 3) {
			if (p - f != 1)
				return -EINVAL;
			*state = *f;
		} else if (field == 22) {
			uint64_t v = 0;

			for (; f < p; f++) {
				if (*f < '0' || *f > '9' || v > (UINT64_MAX - 9) / 10)
					return -EINVAL;
				v = v * 10 + (uint64_t)(*f - '0');
			}
			*start = v;
			return 0;
		}
	}
	return -EINVAL;
}

int omni_ctl_proc_start(int pid, uint64_t *start)
{
	char path[32], buf[1024], state = 0;
	ssize_t n;
	int fd, e;

	if (pid <= 0 || !start)
		return -EINVAL;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	do
		n = read(fd, buf, sizeof buf);
	while (n < 0 && errno == EINTR);
	e = errno;
	close(fd);
	if (n < 0)
		return e == ESRCH ? -ESRCH : -e;   /* it exited while we read */
	if (client_ctl_parse_stat(buf, (size_t)n, &state, start) < 0)
		return -EIO;
	return state == 'Z' || state == 'X' || state == 'x' ? -ESRCH : 0;
}

/* This process's pid and start time, cached until a fork changes the pid. */
static int ctl__self(uint64_t *pid, uint64_t *start)
{
	static int cached_pid;
	static uint64_t cached_start;
	int p = (int)getpid();
	uint64_t s = 0;

	if ((uint64_t)p > CTL_PID_MAX)
		return -EOVERFLOW;
	*pid = (uint64_t)p;
	if (__atomic_load_n(&cached_pid, __ATOMIC_ACQUIRE) == p) {
		*start = __atomic_load_n(&cached_start, __ATOMIC_RELAXED);
		return 0;
	}
	if (omni_ctl_proc_start(p, &s) < 0)
		s = 0;                 /* no /proc: the pid alone names us */
	__atomic_store_n(&cached_start, s, __ATOMIC_RELAXED);
	__atomic_store_n(&cached_pid, p, __ATOMIC_RELEASE);
	*start = s;
	return 0;
}

/* Whether the holder of odd word w is gone: no such process, a zombie, or
 * its pid now names a process started at another time than the holder's. */
static int ctl__holder_dead(const omni_ctl_header *h, uint64_t w)
{
	uint64_t pid = w >> OMNI_CTL_PID_SHIFT, opid, ostart, start = 0;
	int r;

	if (pid == 0)
		return 1;              /* held by nobody: nobody would ever publish it */
	opid = ctl__ld_acq(&h->owner_pid);
	ostart = ctl__ld(&h->owner_start);
	r = omni_ctl_proc_start((int)pid, &start);
	if (r == -ESRCH)
		return 1;
	if (r < 0)                     /* /proc hidden from us: the pid alone */
		return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
	/* owner_* are written after the claim and cleared before every
	 * publish, so when they name pid they are this claim's own */
	return opid == pid && ostart && start && ostart != start;
}

/* Takes over the claim w of a dead holder (one CAS: one recoverer wins),
 * marks the record torn and publishes.  1 when done here. */
static int ctl__take_over(omni_ctl_header *h, uint64_t w)
{
	uint64_t me, my_start, mine;

	if (ctl__self(&me, &my_start) < 0)
		return 0;
	mine = (me << OMNI_CTL_PID_SHIFT) | (((w & OMNI_CTL_SEQ_MASK) + 2) & OMNI_CTL_SEQ_MASK);
	if (!ctl__cas(&h->seq, w, mine))
		return 0;
	ctl__st(&h->owner_pid, 0);
	ctl__st(&h->owner_start, 0);
	ctl__st(&h->torn, 1);
	ctl__st(&h->torn_count, ctl__ld(&h->torn_count) + 1);
	__atomic_store_n(&h->seq, ((mine & OMNI_CTL_SEQ_MASK) + 1) & OMNI_CTL_SEQ_MASK,
			 __ATOMIC_RELEASE);
	return 1;
}

struct ctl__wait {
	int timeout_ms;
	unsigned spins;
	long sleep_ns;
	uint64_t word;           /* the claim waited on ... */
	int64_t since;           /* ... seen since then (0: not yet timed) */
	int64_t t0;              /* the wait's start (0: not yet timed) */
};

/* One step of waiting for the holder of odd word w to publish; recovers a
 * dead holder's claim when may_write.  0: look again; -EAGAIN (timeout
 * 0: a pure try, which does not look at the holder) or -ETIMEDOUT: give
 * up. */
static int ctl__wait(struct ctl__wait *wt, omni_ctl_header *h, uint64_t w, int may_write)
{
	int64_t now;

	if (wt->timeout_ms == 0)
		return -EAGAIN;
	if (w != wt->word) {           /* another claim: its holder is busy, not dead */
		wt->word = w;
		wt->since = 0;
	}
	if (wt->spins++ & 31) {        /* the clock every 32 looks */
		ctl__relax();
		return 0;
	}
	now = ctl__now();
	if (!wt->t0)
		wt->t0 = now;
	if (!wt->since) {
		wt->since = now;
	} else if (now - wt->since >= CTL_CHECK_NS) {
		wt->since = now;
		if (may_write && ctl__holder_dead(h, w)) {
			ctl__take_over(h, w);
			return 0;
		}
	}
	if (wt->timeout_ms > 0 && now - wt->t0 >= (int64_t)wt->timeout_ms * 1000000)
		return -ETIMEDOUT;
	if (now - wt->t0 < CTL_SPIN_NS) {
		ctl__relax();
	} else if (now - wt->t0 < CTL_YIELD_NS) {
		sched_yield();
	} else {
		struct timespec ts = { 0, wt->sleep_ns };

		nanosleep(&ts, NULL);
		wt->sleep_ns = wt->sleep_ns * 2 > CTL_SLEEP_MAX_NS ? CTL_SLEEP_MAX_NS
								   : wt->sleep_ns * 2;
	}
	return 0;
}

int omni_ctl_check(const void *base, size_t len)
{
	const omni_ctl_header *h = base;
	uint64_t m;

	if (!base || ((uintptr_t)base & 7) || len < OMNI_CTL_HEADER_SIZE)
		return -EINVAL;
	m = ctl__ld_acq(&h->magic);
	if (m == 0 || m == OMNI_CTL_MAGIC_INIT)
		return -EAGAIN;
	if (m != OMNI_CTL_MAGIC || h->version != OMNI_CTL_VERSION)
		return -EPROTO;
	if (ctl__ld(&h->record_size) > len - OMNI_CTL_HEADER_SIZE)
		return -EINVAL;
	return 0;
}

/* A block the calls below may use. */
static int ctl__usable(const void *base, size_t len)
{
	int r = omni_ctl_check(base, len);

	if (r == 0 && (((const omni_ctl_header *)base)->flags & OMNI_CTL_FILELOCK))
		return -EOPNOTSUPP;
	return r;
}

int omni_ctl_format(void *base, size_t len, uint32_t flags)
{
	omni_ctl_header *h = base;
	uint64_t seen = 0;
	int r;

	if (!base || ((uintptr_t)base & 7) || len < OMNI_CTL_HEADER_SIZE ||
	    (flags & ~(uint32_t)OMNI_CTL_FILELOCK))
		return -EINVAL;
	if (__atomic_compare_exchange_n(&h->magic, &seen, OMNI_CTL_MAGIC_INIT, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		h->version = OMNI_CTL_VERSION;
		h->flags = flags;
		ctl__st(&h->record_size, len - OMNI_CTL_HEADER_SIZE);
		ctl__st(&h->seq, 0);
		ctl__st(&h->owner_pid, 0);
		ctl__st(&h->owner_start, 0);
		ctl__st(&h->generation, 0);
		ctl__st(&h->torn, 0);
		ctl__st(&h->torn_count, 0);
		memset(h->reserved, 0, sizeof h->reserved);
		__atomic_store_n(&h->magic, OMNI_CTL_MAGIC, __ATOMIC_RELEASE);
		return 0;
	}
	if (seen == OMNI_CTL_MAGIC_INIT)
		return -EAGAIN;
	if (seen != OMNI_CTL_MAGIC)
		return -EPROTO;
	r = omni_ctl_check(base, len);
	return r < 0 ? r : 1;
}

void *omni_ctl_record(void *base)
{
	return base ? (char *)base + OMNI_CTL_HEADER_SIZE : NULL;
}

int client_ctl_read(void *base, size_t len, uint64_t off, void *buf, size_t n, int timeout_ms,
		    int may_write, omni_ctl_snapshot *snap)
{
	omni_ctl_header *h = base;
	struct ctl__wait wt = { .timeout_ms = timeout_ms, .sleep_ns = CTL_SLEEP_MIN_NS };
	const char *src;
	uint64_t rs;
	int r;

	if ((r = ctl__usable(base, len)) < 0)
		return r;
	rs = ctl__ld(&h->record_size);
	if (off > rs || n > rs - off)
		return -ERANGE;
	if (n && !buf)
		return -EINVAL;
	src = (const char *)base + OMNI_CTL_HEADER_SIZE + off;
	for (;;) {
		uint64_t s1 = ctl__ld_acq(&h->seq), gen, torn, tc;

		if (!(s1 & 1)) {
			if (n)
				memcpy(buf, src, n);
			gen = ctl__ld(&h->generation);
			torn = ctl__ld(&h->torn);
			tc = ctl__ld(&h->torn_count);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (ctl__ld(&h->seq) == s1) {
				if (snap) {
					snap->seq = s1;
					snap->generation = gen;
					snap->torn_count = tc;
					snap->torn = torn != 0;
				}
				return 0;
			}
			continue;      /* a write overlapped the copy */
		}
		if ((r = ctl__wait(&wt, h, s1, may_write)) < 0)
			return r;
	}
}

int omni_ctl_read(void *base, size_t len, uint64_t off, void *buf, size_t n, int timeout_ms,
		  omni_ctl_snapshot *snap)
{
	return client_ctl_read(base, len, off, buf, n, timeout_ms, 1, snap);
}

int omni_ctl_begin(void *base, size_t len, uint64_t expected, int timeout_ms, omni_ctl_ticket *t)
{
	omni_ctl_header *h = base;
	struct ctl__wait wt = { .timeout_ms = timeout_ms, .sleep_ns = CTL_SLEEP_MIN_NS };
	uint64_t me, my_start;
	int r;

	if (!t)
		return -EINVAL;
	if ((r = ctl__usable(base, len)) < 0 || (r = ctl__self(&me, &my_start)) < 0)
		return r;
	for (;;) {
		uint64_t w = ctl__ld_acq(&h->seq), mine;

		if (w & 1) {
			if (expected != OMNI_CTL_ANY) {
				/* the seq will move on either way */
				if (ctl__holder_dead(h, w))
					ctl__take_over(h, w);
				return -ESTALE;
			}
			if ((r = ctl__wait(&wt, h, w, 1)) < 0)
				return r;
			continue;
		}
		if (expected != OMNI_CTL_ANY && w != expected)
			return -ESTALE;
		mine = (me << OMNI_CTL_PID_SHIFT) | ((w & OMNI_CTL_SEQ_MASK) + 1);
		if (ctl__cas(&h->seq, w, mine)) {
			ctl__st(&h->owner_start, my_start);
			__atomic_store_n(&h->owner_pid, me, __ATOMIC_RELEASE);
			t->word = mine;
			t->prev_torn = ctl__ld(&h->torn) != 0;
			return 0;
		}
		if (expected != OMNI_CTL_ANY)
			return -ESTALE;
		/* another writer got there first: it holds it now, wait for it */
	}
}

int omni_ctl_end(void *base, const omni_ctl_ticket *t, int flags)
{
	omni_ctl_header *h = base;

	if (!base || ((uintptr_t)base & 7) || !t || !(t->word & 1) || (flags & ~OMNI_CTL_TORN))
		return -EINVAL;
	if (ctl__ld(&h->seq) != t->word)
		return -EOWNERDEAD;
	ctl__st(&h->owner_pid, 0);
	ctl__st(&h->owner_start, 0);
	if (flags & OMNI_CTL_TORN) {
		ctl__st(&h->torn, 1);
		ctl__st(&h->torn_count, ctl__ld(&h->torn_count) + 1);
	} else {
		ctl__st(&h->torn, 0);
		ctl__st(&h->generation, ctl__ld(&h->generation) + 1);
	}
	/* release: the record and the fields above are seen before the seq */
	return ctl__cas(&h->seq, t->word, ((t->word & OMNI_CTL_SEQ_MASK) + 1) & OMNI_CTL_SEQ_MASK)
		       ? 0
		       : -EOWNERDEAD;
}

int omni_ctl_recover(void *base, size_t len, int pid, uint64_t start)
{
	omni_ctl_header *h = base;
	uint64_t m, w, holder;

	if (!base || ((uintptr_t)base & 7) || len < OMNI_CTL_HEADER_SIZE || pid < 0)
		return -EINVAL;
	m = ctl__ld_acq(&h->magic);
	if (m == 0 || m == OMNI_CTL_MAGIC_INIT)
		return -EAGAIN;
	if (m != OMNI_CTL_MAGIC || h->version != OMNI_CTL_VERSION)
		return -EPROTO;
	if (h->flags & OMNI_CTL_FILELOCK)
		return 0;      /* the kernel dropped its lock; the next locker sees seq odd */
	w = ctl__ld_acq(&h->seq);
	if (!(w & 1))
		return 0;
	holder = w >> OMNI_CTL_PID_SHIFT;
	if (pid > 0 && holder != (uint64_t)pid)
		return 0;
	if (start && ctl__ld_acq(&h->owner_pid) == holder) {
		uint64_t ostart = ctl__ld(&h->owner_start);

		if (ostart && ostart != start)
			return 0;      /* another process of the same pid number holds it */
	}
	if (!ctl__holder_dead(h, w))
		return 0;
	return ctl__take_over(h, w);
}
