/*
 * server.h - the Unix-socket front: accepts clients of the owning user,
 * decodes their requests strictly and answers each by its id.
 */
#ifndef OMNI_SERVER_H
#define OMNI_SERVER_H

#include <stddef.h>
#include "core.h"

struct server;

struct server_ctx {                /* all borrowed; must outlive the server */
	struct loop *loop;
	struct core *core;
	const char *sock_path;
	void (*on_shutdown)(void *ud); /* a client asked the daemon to stop */
	void *ud;
	int max_clients;               /* connections served at once; 0: 1024 */
	int listen_fd;                 /* > 0: a listening socket at sock_path made by
	                                  another process (socket activation), taken
	                                  by the server; 0: the server binds its own */
};

/* Binds and listens on ctx->sock_path (which must not exist) under umask
 * 077, or serves ctx->listen_fd, after raising the descriptor limit
 * (server_raise_nofile).  NULL with a reason in err.  Connections over
 * max_clients, and those that arrive when descriptors run out, are
 * accepted and closed at once. */
struct server *server_new(const struct server_ctx *ctx, char *err, size_t errlen);
/* Stops accepting and unlinks the socket, unless it was inherited (its
 * maker keeps it, and connections made meanwhile wait in it for the next
 * daemon); pending replies are still written by server_drain. */
void server_stop_listening(struct server *s);
/* Writes queued replies for up to `seconds`, blocking; for shutdown. */
void server_drain(struct server *s, double seconds);
/* The core is freed: closing connections no longer tells it. */
void server_core_gone(struct server *s);
void server_free(struct server *s);   /* stops listening, closes every connection */
int server_clients(const struct server *s);

/* Raises the soft RLIMIT_NOFILE to the hard limit.  The new soft limit, or
 * -errno.  server_new calls it; it is exported for a caller that must do
 * so earlier. */
int server_raise_nofile(void);

#endif
