/* A VM's configuration from its text form, the one parser for --vm, the
 * config file and the host API's VmAdd. */
#include "vm_config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vsock.h"

int config_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

bool vm_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= HOSTD_VM_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

int vm_lookup_uid(const char *s, unsigned *out)
{
    uint64_t v;
    struct passwd *pw = getpwnam(s);
    if (pw) {
        *out = pw->pw_uid;
        return 0;
    }
    if (config_parse_u64(s, 0xfffffffeull, &v) < 0)
        return -ENOENT;
    *out = (unsigned)v;
    return 0;
}

int vm_lookup_gid(const char *s, unsigned *out)
{
    uint64_t v;
    struct group *gr = getgrnam(s);
    if (gr) {
        *out = gr->gr_gid;
        return 0;
    }
    if (config_parse_u64(s, 0xfffffffeull, &v) < 0)
        return -ENOENT;
    *out = (unsigned)v;
    return 0;
}

static int set_path(char *dst, size_t cap, const char *key, const char *v, char *err, size_t errlen)
{
    if (!*v || strlen(v) >= cap) {
        snprintf(err, errlen, "%s path empty or longer than %zu bytes", key, cap - 1);
        return -EINVAL;
    }
    snprintf(dst, cap, "%s", v);
    return 0;
}

int vm_config_set(struct vm_config *c, const char *key, const char *v, char *err, size_t errlen)
{
    if (!strcmp(key, "name")) {
        if (!vm_name_valid(v)) {
            snprintf(err, errlen, "bad name '%s' (1-63 chars of [A-Za-z0-9._-])", v);
            return -EINVAL;
        }
        snprintf(c->name, sizeof(c->name), "%s", v);
    } else if (!strcmp(key, "cid")) {
        uint64_t cid;
        /* the spec's field is 64-bit but Linux uses 32-bit CIDs; 0,1,2 and ~0 are reserved */
        if (config_parse_u64(v, 0xfffffffeull, &cid) < 0 || cid <= VSOCK_HOST_CID) {
            snprintf(err, errlen, "bad cid '%s' (3..4294967294)", v);
            return -EINVAL;
        }
        c->cid = cid;
    } else if (!strcmp(key, "socket")) {
        return set_path(c->socket_path, sizeof(c->socket_path), "socket", v, err, errlen);
    } else if (!strcmp(key, "qmp")) {
        return set_path(c->qmp_path, sizeof(c->qmp_path), "qmp", v, err, errlen);
    } else if (!strcmp(key, "introspect")) {
        if (strcmp(v, "on") && strcmp(v, "off")) {
            snprintf(err, errlen, "introspect must be on or off, not '%s'", v);
            return -EINVAL;
        }
        c->introspect = !strcmp(v, "on");
    } else if (!strcmp(key, "uid") || !strcmp(key, "user")) {
        if (vm_lookup_uid(v, &c->owner_uid) < 0) {
            snprintf(err, errlen, "no user '%s'", v);
            return -ENOENT;
        }
        c->owner_uid_set = true;
    } else if (!strcmp(key, "group")) {
        if (vm_lookup_gid(v, &c->owner_gid) < 0) {
            snprintf(err, errlen, "no group '%s'", v);
            return -ENOENT;
        }
        c->owner_gid_set = true;
    } else {
        snprintf(err, errlen, "unknown key '%s'", key);
        return -EINVAL;
    }
    return 0;
}

int vm_config_check(const struct vm_config *c, char *err, size_t errlen)
{
    if (!c->name[0] || !c->cid || !c->socket_path[0]) {
        snprintf(err, errlen, "a VM needs name=, cid= and socket=");
        return -EINVAL;
    }
    return 0;
}

int vm_config_parse(struct vm_config *c, const char *spec, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    char *dup = strdup(spec);
    if (!dup) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int r = 0;
    char *save = NULL;
    for (char *kv = strtok_r(dup, ",", &save); kv && r == 0; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, errlen, "expected key=value, got '%s'", kv);
            r = -EINVAL;
            break;
        }
        *eq = 0;
        r = vm_config_set(c, kv, eq + 1, err, errlen);
    }
    free(dup);
    return r < 0 ? r : vm_config_check(c, err, errlen);
}
