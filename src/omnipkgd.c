/*
 * omnipkgd - the daemon: one event loop serving the socket front (and the
 * filesystem front when mounted) over the worker pool.
 *
 *   $ omnipkgd --foreground            # log to stderr, Ctrl-C stops it
 *   $ omnipkgd --daemon                # returns once the socket accepts
 *   $ omnipkg exec --spec base -c 'print(1)'
 *
 * Under a service manager it serves the socket it is handed (socket
 * activation: LISTEN_FDS, see activate.h) instead of binding its own, and
 * says when it is ready (NOTIFY_SOCKET); deploy/systemd/ has the units.
 *
 * Exit codes: 0 clean stop, 1 another omnipkgd already serves this runtime
 * dir, 100 usage (a handed-over socket it cannot serve included), 111
 * system failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "activate.h"
#include "config.h"
#include "core.h"
#include "fusefs.h"
#include "interp.h"
#include "logx.h"
#include "loop.h"
#include "paths.h"
#include "runtime.h"
#include "server.h"

struct daemon {
	struct loop *loop;
	struct config cfg;
	struct interp_set py;
	struct core *core;
	struct server *srv;
	struct fusefs *fs;
	char rtdir[PATH_MAX], home[PATH_MAX], sock[PATH_MAX], pidfile[PATH_MAX + 16];
	char worker[PATH_MAX + 16], log[PATH_MAX + 16];
	char lname[64], notify[128];   /* the inherited socket's name; NOTIFY_SOCKET */
	int lfd;                       /* the inherited socket, or 0: we bind our own */
	int sigfd, pidfd;
	int stopping;
};

static void usage(FILE *f)
{
	fputs("usage: omnipkgd [--foreground | --daemon] [--mount DIR] [--config FILE] [--log FILE] [--verbose]\n"
	      "\n"
	      "  --foreground   stay attached, log to stderr (the default)\n"
	      "  --daemon       detach; return once the socket accepts (log: <runtime>/omnipkgd.log)\n"
	      "  --mount DIR    serve the control filesystem at DIR (default: config \"mount\")\n"
	      "  --config FILE  settings (default $OMNIPKG_CONFIG or $OMNIPKG_HOME/config.json)\n"
	      "  --log FILE     log file for --daemon\n"
	      "  --verbose      log debug detail\n"
	      "\n"
	      "runtime dir: $OMNIPKG_RUNTIME_DIR, else $XDG_RUNTIME_DIR/omnipkg, else /tmp/omnipkg-$UID\n"
	      "socket activation: LISTEN_PID, LISTEN_FDS=1 (fd 3: a listening socket at\n"
	      "  <runtime dir>/omnipkgd.sock); readiness: NOTIFY_SOCKET (READY=1, STOPPING=1)\n"
	      "exit codes: 0 stopped cleanly, 1 already running, 100 usage, 111 system failure\n", f);
}

/* Is a daemon answering on sock?  Used to tell a live one from a stale socket. */
static int socket_alive(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(sock) >= sizeof sa.sun_path)
		return 0;
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	r = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return r;
}

/* The pid file is locked for the daemon's life: the lock, not the file's
 * presence, says that a daemon runs. */
static int take_pidfile(struct daemon *d)
{
	char buf[32];
	int n;

	d->pidfd = open(d->pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->pidfd < 0)
		return -errno;
	if (flock(d->pidfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		n = (int)read(d->pidfd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		fprintf(stderr, "omnipkgd: already running (pid %s) on %s\n",
			strtok(buf, "\n") ? buf : "?", d->sock);
		close(d->pidfd);
		d->pidfd = -1;
		return e == EWOULDBLOCK ? -EEXIST : -e;
	}
	n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
	if (ftruncate(d->pidfd, 0) < 0 || pwrite(d->pidfd, buf, n, 0) != n)
		return -errno;
	return 0;
}

/* The worker runtime goes to the private runtime dir; d->worker is its entry. */
static int write_worker(struct daemon *d)
{
	char err[PATH_MAX + 128];
	int r = runtime_install(d->rtdir, d->worker, sizeof d->worker, err, sizeof err);

	if (r < 0)
		logx(LOGX_ERR, "%s", err);
	return r;
}

/* Exit code 1 for "already running", also through --daemon's parent. */
static int already_running(int notify)
{
	if (notify >= 0 && write(notify, "1", 1) != 1)
		logx(LOGX_WARN, "could not tell the starting process that another daemon runs");
	return 1;
}

static void on_shutdown(void *ud)
{
	struct daemon *d = ud;

	d->stopping = 1;
	loop_stop(d->loop);
}

static void on_signal(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct daemon *d = ud;
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof si) == sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			core_reap(d->core);
			break;
		case SIGTERM:
		case SIGINT:
			logx(LOGX_INFO, "signal %d: stopping", (int)si.ssi_signo);
			on_shutdown(d);
			break;
		default:
			break;
		}
	}
}

static int setup_signals(struct daemon *d)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->sigfd < 0)
		return -errno;
	return loop_add(d->loop, d->sigfd, EPOLLIN, on_signal, d);
}

/* --daemon: the parent waits on a pipe until the child listens ('R'), or
 * learns that another daemon runs ('1'), and exits with the same code. */
static int detach(const char *log, int *notify_fd)
{
	int p[2], fd;
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			_exit(111);
		_exit(c == 'R' ? 0 : c == '1' ? 1 : 111);
	}
	close(p[0]);
	setsid();
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		close(fd);
	}
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	*notify_fd = p[1];
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "config", required_argument, NULL, 'c' },
		{ "log", required_argument, NULL, 'l' },
		{ "mount", required_argument, NULL, 'm' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct daemon d = { .sigfd = -1, .pidfd = -1 };
	struct server_ctx ctx;
	struct core_ctx cctx;
	const char *config_path = NULL, *log_path = NULL, *mount = NULL;
	char err[1024];
	int daemonize = 0, notify = -1, o, r;

	while ((o = getopt_long(argc, argv, "fdc:l:m:vVh", opts, NULL)) != -1) {
		switch (o) {
		case 'f': daemonize = 0; break;
		case 'd': daemonize = 1; break;
		case 'c': config_path = optarg; break;
		case 'l': log_path = optarg; break;
		case 'm': mount = optarg; break;
		case 'v': logx_level(LOGX_DEBUG); break;
		case 'V': printf("omnipkgd %s\n", OMNI_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 100;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 100;
	}
	if ((r = paths_runtime_dir_make(d.rtdir, sizeof d.rtdir)) < 0) {
		fprintf(stderr, "omnipkgd: runtime dir %s: %s\n", d.rtdir, strerror(-r));
		return 111;
	}
	if (paths_socket(d.sock, sizeof d.sock) < 0 || paths_home(d.home, sizeof d.home) < 0) {
		fprintf(stderr, "omnipkgd: path too long\n");
		return 111;
	}
	/* Taken before any process starts: none may inherit the variables. */
	if ((r = activate_listen(d.sock, &d.lfd, d.lname, sizeof d.lname, err, sizeof err)) < 0) {
		fprintf(stderr, "omnipkgd: socket activation: %s\n", err);
		return 100;
	}
	if (activate_notify_take(d.notify, sizeof d.notify, err, sizeof err) < 0)
		fprintf(stderr, "omnipkgd: not telling a service manager when ready: %s\n", err);
	snprintf(d.pidfile, sizeof d.pidfile, "%s/omnipkgd.pid", d.rtdir);
	snprintf(d.log, sizeof d.log, "%s", log_path ? log_path : "");
	if (!log_path)
		snprintf(d.log, sizeof d.log, "%s/omnipkgd.log", d.rtdir);

	r = config_load(&d.cfg, config_path, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "omnipkgd: config: %s\n", err);
		return 111;
	}
	if (daemonize && detach(d.log, &notify) < 0) {
		fprintf(stderr, "omnipkgd: cannot detach: %s\n", strerror(errno));
		return 111;
	}
	r = take_pidfile(&d);
	if (r == -EEXIST)
		return already_running(notify);
	if (r < 0) {
		logx(LOGX_ERR, "pid file %s: %s", d.pidfile, strerror(-r));
		return 111;
	}
	/* A socket handed over is ours to serve, not a stale one. */
	if (!d.lfd && access(d.sock, F_OK) == 0) {
		if (socket_alive(d.sock)) {
			logx(LOGX_ERR, "another process answers on %s", d.sock);
			return already_running(notify);
		}
		logx(LOGX_INFO, "removing stale socket %s", d.sock);
		unlink(d.sock);
	}
	if ((r = write_worker(&d)) < 0) {
		logx(LOGX_ERR, "cannot write the worker runtime: %s", strerror(-r));
		return 111;
	}
	/* Workers and anything they start must never auto-start a daemon. */
	setenv("OMNIPKG_DAEMON_CHILD", "1", 1);
	/* Zygote-forked workers are re-parented to us, so we see their exits. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);

	r = config_discover_pythons(&d.cfg, &d.py);
	if (r <= 0)
		logx(LOGX_WARN, "no Python interpreter found (PATH, $PYENV_ROOT, config)");
	d.loop = loop_new();
	if (!d.loop || setup_signals(&d) < 0) {
		logx(LOGX_ERR, "cannot set up the event loop: %s", strerror(errno));
		return 111;
	}
	cctx = (struct core_ctx){ .loop = d.loop, .cfg = &d.cfg, .py = &d.py, .home = d.home,
				  .rtdir = d.rtdir, .entry = d.worker };
	d.core = core_new(&cctx, err, sizeof err);
	if (!d.core) {
		logx(LOGX_ERR, "%s", err);
		return 111;
	}
	ctx = (struct server_ctx){ .loop = d.loop, .core = d.core, .sock_path = d.sock,
				   .on_shutdown = on_shutdown, .ud = &d, .listen_fd = d.lfd };
	d.srv = server_new(&ctx, err, sizeof err);
	if (!d.srv) {
		logx(LOGX_ERR, "%s", err);
		core_free(d.core);
		return 111;
	}
	logx(LOGX_INFO, "omnipkgd %s listening on %s%s%s%s (%zu interpreters, home %s)",
	     OMNI_VERSION, d.sock, d.lfd ? ", handed over" : "", *d.lname ? " as " : "", d.lname,
	     d.py.n, d.home);
	if (!mount && d.cfg.mount[0])
		mount = d.cfg.mount;
	if (mount && *mount) {
		d.fs = fusefs_mount(d.core, mount, err, sizeof err);
		if (!d.fs) {
			logx(LOGX_ERR, "cannot mount %s: %s", mount, err);
			server_free(d.srv);
			core_free(d.core);
			return 111;
		}
		logx(LOGX_INFO, "control filesystem mounted at %s", mount);
	}
	if (notify >= 0) {
		if (write(notify, "R", 1) != 1)
			logx(LOGX_WARN, "could not tell the starting process that we are up");
		close(notify);
	}
	if ((r = activate_notify(d.notify, "READY=1")) < 0)
		logx(LOGX_WARN, "could not tell %s that we are up: %s", d.notify, strerror(-r));
	core_prewarm(d.core);

	r = loop_run(d.loop);
	if (r < 0)
		logx(LOGX_ERR, "event loop failed: %s", strerror(-r));

	/* Stop: no new clients, fail what runs, tell the clients, clean up. */
	activate_notify(d.notify, "STOPPING=1");
	server_stop_listening(d.srv);
	core_free(d.core);         /* fails running jobs: their readers get answers */
	server_core_gone(d.srv);
	if (d.fs)
		fusefs_unmount(d.fs);  /* after the core: no job callback reaches it later */
	server_drain(d.srv, 1.0);
	server_free(d.srv);
	unlink(d.pidfile);
	close(d.pidfd);
	runtime_remove(d.rtdir);
	interp_set_free(&d.py);
	loop_free(d.loop);
	logx(LOGX_INFO, "stopped");
	return r < 0 ? 111 : 0;
}
