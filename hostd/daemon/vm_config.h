/* A VM's configuration and its one text form:
 *   name=NAME,cid=CID,socket=PATH[,uid=USER][,group=GROUP][,qmp=PATH][,introspect=on|off]
 * parsed for --vm, the config file and the host API's VmAdd alike. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HOSTD_VM_NAME_MAX 64
#define HOSTD_SOCKET_PATH_MAX 108

struct vm_config {
    char name[HOSTD_VM_NAME_MAX];
    uint64_t cid;
    char socket_path[HOSTD_SOCKET_PATH_MAX];
    char qmp_path[HOSTD_SOCKET_PATH_MAX]; /* QEMU's QMP socket; empty: none */
    bool introspect;                      /* whole-guest access through the host API */
    bool owner_uid_set, owner_gid_set;    /* only this user / group may be its QEMU */
    unsigned owner_uid, owner_gid;
};

/* An unsigned number (decimal, 0x hex or 0 octal) up to max, nothing else
 * on the line: 0 or -EINVAL. Every numeric option and key uses it. */
int config_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* 1..63 chars of [A-Za-z0-9._-]. */
bool vm_name_valid(const char *s);
/* A user or group by name, or by number. 0 or -ENOENT. */
int vm_lookup_uid(const char *s, unsigned *out);
int vm_lookup_gid(const char *s, unsigned *out);
/* Set one key of c from its text value. 0 or a negative errno (err says why). */
int vm_config_set(struct vm_config *c, const char *key, const char *value, char *err, size_t errlen);
/* The keys every VM needs are there. 0 or -EINVAL (err). */
int vm_config_check(const struct vm_config *c, char *err, size_t errlen);
/* Parse the comma-separated text form into c (zeroed first). 0 or a negative
 * errno with err saying why. */
int vm_config_parse(struct vm_config *c, const char *spec, char *err, size_t errlen);
