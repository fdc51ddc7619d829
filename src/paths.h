/*
 * paths.h - where omnipkg keeps things.
 *
 * Runtime dir (socket, pid file, log, worker runtime): $OMNIPKG_RUNTIME_DIR,
 * else $XDG_RUNTIME_DIR/omnipkg, else /tmp/omnipkg-$UID.  Always 0700 and
 * owned by the caller; paths_runtime_dir refuses one that is not.
 * Home (bubbles, config): $OMNIPKG_HOME, else $XDG_DATA_HOME/omnipkg,
 * else ~/.local/share/omnipkg.
 */
#ifndef OMNI_PATHS_H
#define OMNI_PATHS_H

#include <stddef.h>

/* Each writes a NUL-terminated path into buf; 0 or -errno (-ENAMETOOLONG). */
int paths_runtime_dir(char *buf, size_t n);
/* Like paths_runtime_dir, and creates the directory 0700 if missing;
 * -EPERM if it exists with another owner or looser mode. */
int paths_runtime_dir_make(char *buf, size_t n);
/* <runtime>/omnipkgd.sock; -ENAMETOOLONG also when it would not fit in
 * sockaddr_un.sun_path. */
int paths_socket(char *buf, size_t n);
int paths_home(char *buf, size_t n);

/* mkdir -p with the given mode for each created component; 0 or -errno. */
int paths_mkdir_p(const char *path, unsigned mode);

#endif
