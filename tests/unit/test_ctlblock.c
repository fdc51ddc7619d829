/*
 * test_ctlblock.c - control blocks (omnipkg.h, client_ctl.c): the layout,
 * the seqlock's states, recovery of a writer that died (a pid that is
 * gone, a zombie, a reused pid, a real SIGKILL mid-write) by a waiter and
 * by the daemon's registry (shm_recover_writer), and writers in several
 * processes losing no update while readers never see a torn record.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_ctl.h"
#include "omnipkg.h"
#include "shm.h"

#define LEN (OMNI_CTL_HEADER_SIZE + 256)

static void *map_block(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CU_ASSERT_FATAL(p != MAP_FAILED);
	return p;
}

static uint64_t held_by(pid_t pid, uint64_t counter)
{
	return ((uint64_t)pid << OMNI_CTL_PID_SHIFT) | counter;
}

/* A pid that names no process: a child that exited and was reaped. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();

	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return pid;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_layout(void)
{
	unsigned char *p = map_block(LEN);
	omni_ctl_header *h = (omni_ctl_header *)p;

	CU_ASSERT_EQUAL(sizeof(omni_ctl_header), 128);
	CU_ASSERT_EQUAL(offsetof(omni_ctl_header, magic), 0);
	CU_ASSERT_EQUAL(offsetof(omni_ctl_header, version), 8);
	CU_ASSERT_EQUAL(offsetof(omni_ctl_header, flags), 12);
	CU_ASSERT_EQUAL(offsetof(omni_ctl_header, record_size), 16);
	CU_ASSERT_EQUAL(omni_ctl_check(p, LEN), -EAGAIN);          /* all zero: not yet */
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	if (*(const uint16_t *)"\x01\x00" == 1)                    /* little-endian dump */
		CU_ASSERT_EQUAL(memcmp(p, "OMNICTL1", 8), 0);
	CU_ASSERT_EQUAL(h->version, OMNI_CTL_VERSION);
	CU_ASSERT_EQUAL(h->record_size, 256);
	CU_ASSERT_EQUAL(h->seq, 0);
	CU_ASSERT_EQUAL(omni_ctl_check(p, LEN), 0);
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 1);             /* already */
	CU_ASSERT_EQUAL(omni_ctl_check(p, LEN - 1), -EINVAL);       /* record past len */
	CU_ASSERT_PTR_EQUAL(omni_ctl_record(p), p + 128);
	CU_ASSERT_EQUAL(omni_ctl_format(p + 4, LEN - 8, 0), -EINVAL);   /* unaligned */
	CU_ASSERT_EQUAL(omni_ctl_format(p, 127, 0), -EINVAL);
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0x80), -EINVAL);
	h->magic = 0x1234;
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), -EPROTO);
	CU_ASSERT_EQUAL(omni_ctl_check(p, LEN), -EPROTO);
	h->magic = OMNI_CTL_MAGIC_INIT;
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), -EAGAIN);
	h->magic = OMNI_CTL_MAGIC;
	h->version = 2;
	CU_ASSERT_EQUAL(omni_ctl_check(p, LEN), -EPROTO);
	munmap(p, LEN);
}

static void test_write_and_read(void)
{
	void *p = map_block(LEN);
	omni_ctl_header *h = p;
	omni_ctl_ticket t, t2;
	omni_ctl_snapshot snap;
	uint64_t start;
	char buf[8];

	CU_ASSERT_EQUAL_FATAL(omni_ctl_format(p, LEN, 0), 0);
	CU_ASSERT_EQUAL(omni_ctl_proc_start(getpid(), &start), 0);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 0, &t), 0);
	CU_ASSERT_EQUAL(t.word, held_by(getpid(), 1));
	CU_ASSERT_EQUAL(h->seq, t.word);
	CU_ASSERT_EQUAL(h->owner_pid, (uint64_t)getpid());
	CU_ASSERT_EQUAL(h->owner_start, start);
	CU_ASSERT_EQUAL(t.prev_torn, 0);
	memcpy(omni_ctl_record(p), "abcdefgh", 8);
	/* held by a live writer: nobody waits past their timeout */
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, buf, 8, 0, &snap), -EAGAIN);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 0, &t2), -EAGAIN);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 30, &t2), -ETIMEDOUT);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, buf, 8, 30, &snap), -ETIMEDOUT);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, 0, 0, &t2), -ESTALE);
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, 0, 0), 0);        /* alive: left alone */
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), 0);
	CU_ASSERT_EQUAL(h->seq, 2);
	CU_ASSERT_EQUAL(h->owner_pid, 0);
	CU_ASSERT_EQUAL(h->generation, 1);
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), -EOWNERDEAD);       /* not held any more */
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, buf, 8, 0, &snap), 0);
	CU_ASSERT_EQUAL(memcmp(buf, "abcdefgh", 8), 0);
	CU_ASSERT_EQUAL(snap.seq, 2);
	CU_ASSERT_EQUAL(snap.generation, 1);
	CU_ASSERT_EQUAL(snap.torn, 0);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 250, buf, 8, 0, &snap), -ERANGE);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 257, buf, 0, 0, &snap), -ERANGE);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 256, buf, 0, 0, &snap), 0);

	/* optimistic: claim only what was read */
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, 4, 0, &t), -ESTALE);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, 2, 0, &t), 0);
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, OMNI_CTL_TORN), 0);     /* gave up mid-write */
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 0, &snap), 0);
	CU_ASSERT_EQUAL(snap.seq, 4);
	CU_ASSERT_EQUAL(snap.torn, 1);
	CU_ASSERT_EQUAL(snap.torn_count, 1);
	CU_ASSERT_EQUAL(snap.generation, 1);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, -1, &t), 0);
	CU_ASSERT_EQUAL(t.prev_torn, 1);
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), 0);                 /* a whole write clears it */
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 0, &snap), 0);
	CU_ASSERT_EQUAL(snap.torn, 0);
	CU_ASSERT_EQUAL(snap.torn_count, 1);
	CU_ASSERT_EQUAL(snap.generation, 2);

	/* bad tickets and flags */
	t.word = 2;
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), -EINVAL);
	CU_ASSERT_EQUAL(omni_ctl_end(p, NULL, 0), -EINVAL);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 0, NULL), -EINVAL);
	munmap(p, LEN);
}

static void test_filelock_block_refused(void)
{
	void *p = map_block(LEN);
	omni_ctl_ticket t;

	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, OMNI_CTL_FILELOCK), 0);
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 0, &t), -EOPNOTSUPP);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 0, NULL), -EOPNOTSUPP);
	munmap(p, LEN);
}

static void test_seq_wraps(void)
{
	void *p = map_block(LEN);
	omni_ctl_header *h = p;
	omni_ctl_ticket t;

	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	h->seq = OMNI_CTL_SEQ_MASK - 1;
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 0, &t), 0);
	CU_ASSERT_EQUAL(t.word & OMNI_CTL_SEQ_MASK, OMNI_CTL_SEQ_MASK);
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), 0);
	CU_ASSERT_EQUAL(h->seq, 0);
	munmap(p, LEN);
}

/* A claim by a pid that is gone: the next writer takes it over. */
static void test_recover_gone_pid(void)
{
	void *p = map_block(LEN);
	omni_ctl_header *h = p;
	omni_ctl_ticket t;
	omni_ctl_snapshot snap;
	pid_t dead = dead_pid();
	double t0;

	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	h->seq = held_by(dead, 7);
	h->owner_pid = (uint64_t)dead;
	h->owner_start = 12345;
	t0 = now_s();
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 5000, &t), 0);
	CU_ASSERT(now_s() - t0 < 5.0);
	CU_ASSERT_EQUAL(t.prev_torn, 1);
	CU_ASSERT_EQUAL(t.word, held_by(getpid(), 11));   /* 7 -> 9 (taken over) -> 10 -> 11 */
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, 0), 0);
	CU_ASSERT_EQUAL(h->torn_count, 1);

	/* a reader that waits recovers too, and sees the record torn */
	h->seq = held_by(dead, 13);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 5000, &snap), 0);
	CU_ASSERT_EQUAL(snap.seq, 16);
	CU_ASSERT_EQUAL(snap.torn, 1);
	CU_ASSERT_EQUAL(snap.torn_count, 2);
	/* ... but not through a mapping it may not write */
	h->seq = held_by(dead, 17);
	CU_ASSERT_EQUAL(client_ctl_read(p, LEN, 0, NULL, 0, 20, 0, &snap), -ETIMEDOUT);
	/* an optimistic writer recovers it and reports the conflict */
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, 16, 0, &t), -ESTALE);
	CU_ASSERT_EQUAL(h->seq, 20);
	/* a claim with no pid in it is nobody's */
	h->seq = 21;
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, 0, 0), 1);
	CU_ASSERT_EQUAL(h->seq, 24);
	munmap(p, LEN);
}

/* The pid of the claim is alive, but it is another process than the one
 * that claimed (its start time differs): the claim is a dead one's. */
static void test_recover_reused_pid(void)
{
	void *p = map_block(LEN);
	omni_ctl_header *h = p;
	omni_ctl_ticket t;
	uint64_t start;

	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	CU_ASSERT_EQUAL_FATAL(omni_ctl_proc_start(getpid(), &start), 0);
	h->seq = held_by(getpid(), 1);
	h->owner_pid = (uint64_t)getpid();
	h->owner_start = start + 1;
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, getpid(), start), 0);    /* not that process */
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, getpid(), start + 1), 1);
	CU_ASSERT_EQUAL(h->seq, 4);
	CU_ASSERT_EQUAL(h->torn, 1);
	/* a live holder that has not written its start time yet is waited for */
	h->seq = held_by(getpid(), 5);
	h->owner_pid = 0;
	h->owner_start = 0;
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 20, &t), -ETIMEDOUT);
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, 0, 0), 0);
	munmap(p, LEN);
}

/* A zombie (dead, not yet reaped) holds no claim. */
static void test_recover_zombie(void)
{
	void *p = map_block(LEN);
	omni_ctl_header *h = p;
	omni_ctl_snapshot snap;
	uint64_t start;
	pid_t z = fork();

	CU_ASSERT_FATAL(z >= 0);
	if (z == 0)
		_exit(0);
	for (int i = 0; i < 5000 && omni_ctl_proc_start(z, &start) == 0; i++)
		usleep(1000);
	CU_ASSERT_EQUAL(omni_ctl_proc_start(z, &start), -ESRCH);
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	h->seq = held_by(z, 1);
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, z + 1, 0), 0);    /* another pid's blocks only */
	CU_ASSERT_EQUAL(omni_ctl_recover(p, LEN, z, 0), 1);
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 0, &snap), 0);
	CU_ASSERT_EQUAL(snap.torn, 1);
	waitpid(z, NULL, 0);
	munmap(p, LEN);
}

/* A child claims, writes half a record and is SIGKILLed: the parent's
 * next claim goes through within the bound, and readers see it torn. */
static void test_sigkill_mid_write(void)
{
	void *p = map_block(LEN);
	omni_ctl_ticket t;
	omni_ctl_snapshot snap;
	int fds[2];
	char c;
	pid_t pid;
	double t0;

	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	CU_ASSERT_FATAL(pipe(fds) == 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		if (omni_ctl_begin(p, LEN, OMNI_CTL_ANY, -1, &t) == 0) {
			memset(omni_ctl_record(p), 'x', 100);
			(void)write(fds[1], "k", 1);
			for (;;)
				pause();
		}
		_exit(1);
	}
	close(fds[1]);
	CU_ASSERT_EQUAL_FATAL(read(fds[0], &c, 1), 1);
	close(fds[0]);
	kill(pid, SIGKILL);
	t0 = now_s();
	CU_ASSERT_EQUAL(omni_ctl_begin(p, LEN, OMNI_CTL_ANY, 10000, &t), 0);
	CU_ASSERT(now_s() - t0 < 10.0);
	CU_ASSERT_EQUAL(t.prev_torn, 1);
	CU_ASSERT_EQUAL(omni_ctl_end(p, &t, OMNI_CTL_TORN), 0);   /* keep it marked */
	CU_ASSERT_EQUAL(omni_ctl_read(p, LEN, 0, NULL, 0, 0, &snap), 0);
	CU_ASSERT_EQUAL(snap.torn, 1);
	CU_ASSERT_EQUAL(snap.torn_count, 2);
	waitpid(pid, NULL, 0);
	munmap(p, LEN);
}

/* The record: a counter and a checksum of the rest, rewritten whole. */
struct rec {
	uint64_t count;
	uint64_t fill[14];
	uint64_t sum;
};

static uint64_t rec_sum(const struct rec *r)
{
	uint64_t s = r->count * 0x9E3779B97F4A7C15ULL;

	for (int i = 0; i < 14; i++)
		s = (s ^ r->fill[i]) * 0x100000001B3ULL;
	return s;
}

#define WRITERS 4
#define WRITES 20000

static void test_writers_and_readers(void)
{
	void *p = map_block(OMNI_CTL_HEADER_SIZE + sizeof(struct rec));
	size_t len = OMNI_CTL_HEADER_SIZE + sizeof(struct rec);
	pid_t pids[WRITERS + 1];
	struct rec r;
	omni_ctl_snapshot snap;
	int st, bad = 0;

	CU_ASSERT_EQUAL_FATAL(omni_ctl_format(p, len, 0), 0);
	for (int i = 0; i <= WRITERS; i++) {
		pids[i] = fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] > 0)
			continue;
		if (i == WRITERS) {      /* the reader: every snapshot whole */
			uint64_t last = 0;
			int torn = 0;

			while (last < (uint64_t)WRITERS * WRITES) {
				if (omni_ctl_read(p, len, 0, &r, sizeof r, -1, &snap) < 0)
					_exit(2);
				if (rec_sum(&r) != r.sum || r.count < last || snap.torn)
					torn++;
				last = r.count;
			}
			_exit(torn ? 3 : 0);
		}
		for (int k = 0; k < WRITES; k++) {
			omni_ctl_ticket t;
			struct rec *w = omni_ctl_record(p);

			if (omni_ctl_begin(p, len, OMNI_CTL_ANY, -1, &t) < 0)
				_exit(2);
			w->count++;
			for (int j = 0; j < 14; j++)
				w->fill[j] = w->count * (uint64_t)(j + 1) + (uint64_t)i;
			w->sum = rec_sum(w);
			if (omni_ctl_end(p, &t, 0) < 0)
				_exit(2);
		}
		_exit(0);
	}
	for (int i = 0; i <= WRITERS; i++) {
		CU_ASSERT_EQUAL(waitpid(pids[i], &st, 0), pids[i]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(omni_ctl_read(p, len, 0, &r, sizeof r, 0, &snap), 0);
	CU_ASSERT_EQUAL(r.count, (uint64_t)WRITERS * WRITES);
	CU_ASSERT_EQUAL(snap.generation, (uint64_t)WRITERS * WRITES);
	CU_ASSERT_EQUAL(snap.seq, 2ULL * WRITERS * WRITES);
	CU_ASSERT_EQUAL(snap.torn_count, 0);
	munmap(p, len);
}

/* The daemon's side: every block a dead process held, found by scanning
 * the registry's segments. */
static void test_registry_recovers_writer(void)
{
	char dir[] = "/tmp/omni-ctl-XXXXXX", err[256], path[SHM_PATH_MAX];
	struct shm *s;
	void *p, *q;
	omni_ctl_header *h, *g;
	pid_t dead = dead_pid();
	int fd;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	s = shm_new(dir, 1 << 20, err, sizeof err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(shm_create(s, "blk", LEN), 0);
	CU_ASSERT_EQUAL(shm_create(s, "other", LEN), 0);
	CU_ASSERT_EQUAL(shm_create(s, "small", 16), 0);
	CU_ASSERT_EQUAL(shm_path(s, "blk", path, sizeof path), 0);
	fd = open(path, O_RDWR);
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	CU_ASSERT_EQUAL(shm_path(s, "other", path, sizeof path), 0);
	fd = open(path, O_RDWR);
	q = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	CU_ASSERT_FATAL(p != MAP_FAILED && q != MAP_FAILED);
	h = p;
	g = q;
	CU_ASSERT_EQUAL(omni_ctl_format(p, LEN, 0), 0);
	CU_ASSERT_EQUAL(omni_ctl_format(q, LEN, 0), 0);
	h->seq = held_by(dead, 5);
	g->seq = held_by(getpid(), 5);       /* a live writer's: kept */
	CU_ASSERT_EQUAL(shm_recover_writer(s, getpid(), 0), 0);
	CU_ASSERT_EQUAL(shm_recover_writer(s, dead, 0), 1);
	CU_ASSERT_EQUAL(h->seq, 8);
	CU_ASSERT_EQUAL(h->torn, 1);
	CU_ASSERT_EQUAL(g->seq, held_by(getpid(), 5));
	CU_ASSERT_EQUAL(shm_recover_writer(s, dead, 0), 0);  /* nothing left */
	munmap(p, LEN);
	munmap(q, LEN);
	shm_free(s);
	rmdir(dir);
}

static void test_parse_stat(void)
{
	const char *ok = "4242 (py (x) y) S 1 4242 4242 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 1 0 "
			 "987654321 1000 100 18446744073709551615\n";
	char state = 0;
	uint64_t start = 0;

	CU_ASSERT_EQUAL(client_ctl_parse_stat(ok, strlen(ok), &state, &start), 0);
	CU_ASSERT_EQUAL(state, 'S');
	CU_ASSERT_EQUAL(start, 987654321);
	/* cut short of field 22 */
	CU_ASSERT_EQUAL(client_ctl_parse_stat(ok, strlen(ok) - 50, &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a) S", 7, &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("no paren", 8, &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a)  S", 8, &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a) SS 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 7", 46,
					      &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a) Z 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 7", 45,
					      &state, &start), 0);
	CU_ASSERT_EQUAL(state, 'Z');
	CU_ASSERT_EQUAL(start, 7);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a) S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 -7", 46,
					      &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(client_ctl_parse_stat("1 (a) S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 "
					      "99999999999999999999", 64, &state, &start), -EINVAL);
	CU_ASSERT_EQUAL(omni_ctl_proc_start(0, &start), -EINVAL);
	CU_ASSERT_EQUAL(omni_ctl_proc_start(dead_pid(), &start), -ESRCH);
}

int main(void)
{
	CU_pSuite s;
	int failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	s = CU_add_suite("ctlblock", NULL, NULL);
	CU_add_test(s, "layout and format", test_layout);
	CU_add_test(s, "write, read, optimistic claim, torn", test_write_and_read);
	CU_add_test(s, "file-lock blocks refused", test_filelock_block_refused);
	CU_add_test(s, "seq wraps at 2^40", test_seq_wraps);
	CU_add_test(s, "recover a claim of a pid that is gone", test_recover_gone_pid);
	CU_add_test(s, "recover a claim of a reused pid", test_recover_reused_pid);
	CU_add_test(s, "recover a zombie's claim", test_recover_zombie);
	CU_add_test(s, "SIGKILL mid-write", test_sigkill_mid_write);
	CU_add_test(s, "writers lose no update, readers see no torn record",
		    test_writers_and_readers);
	CU_add_test(s, "the registry recovers a dead writer's blocks", test_registry_recovers_writer);
	CU_add_test(s, "/proc/<pid>/stat", test_parse_stat);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
		 CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
