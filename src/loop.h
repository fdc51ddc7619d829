/*
 * loop.h - the daemon's one event loop: epoll for descriptors, a sorted
 * timer list, and nothing else.  Signals arrive as a signalfd watched like
 * any other descriptor.  Callbacks run on the loop's thread and must not
 * block.
 *
 * Lifetimes: a watcher lives until loop_del (call it before close()).  A
 * timer lives until it fires or is cancelled; after either, the pointer is
 * invalid.
 */
#ifndef OMNI_LOOP_H
#define OMNI_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_timer;

typedef void (*loop_io_cb)(struct loop *l, int fd, uint32_t events, void *ud);
typedef void (*loop_timer_cb)(struct loop *l, void *ud);

struct loop *loop_new(void);          /* NULL on failure (errno set) */
void loop_free(struct loop *l);       /* frees pending timers too */

int loop_add(struct loop *l, int fd, uint32_t events, loop_io_cb cb, void *ud);
int loop_mod(struct loop *l, int fd, uint32_t events);
int loop_del(struct loop *l, int fd);

/* Calls cb once, `after` seconds from now.  NULL when out of memory. */
struct loop_timer *loop_timer_add(struct loop *l, double after, loop_timer_cb cb, void *ud);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);   /* t may be NULL */

double loop_now(void);                /* monotonic seconds */
int loop_run(struct loop *l);         /* until loop_stop; 0 or -errno */
void loop_stop(struct loop *l);

#endif
