/*
 * client_shm.h - what client.c shares with client_shm.c (libomnipkg's
 * shared segments and array views) and client_cuda.c (the descriptors an
 * exec carries); not part of omnipkg.h.
 */
#ifndef OMNI_CLIENT_SHM_H
#define OMNI_CLIENT_SHM_H

#include <cjson/cJSON.h>

#include "omnipkg.h"

/* In client.c.  Sends op with the arguments in msg (borrowed; v, id and op
 * are set in it) and waits for its reply: *out, caller frees. */
int client_call_msg(omni_client *c, cJSON *msg, const char *op, omni_reply **out);
/* The reply's parsed object; borrowed, valid until omni_reply_free. */
const cJSON *client_reply_obj(const omni_reply *r);

/* In client_shm.c.  Adds o's arrays and bind to an exec request msg
 * (borrowed).  0, -EINVAL (a view or the bind text not valid) or -ENOMEM. */
int client_shm_exec_args(cJSON *msg, const omni_exec_opts *o);

/* In client_cuda.c.  Adds o's "fds" (one {for, kind, dev, ino} per
 * descriptor, proto.h) to an exec request msg.  0, -EINVAL (too many, or
 * no names), -EBADF (a descriptor not open) or -ENOMEM. */
int client_fds_exec_args(cJSON *msg, const omni_exec_opts *o);

#endif
