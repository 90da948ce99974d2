/* Host API access control: the options naming who may read, write, register
 * a consumer name or always get a connection, and the peer credentials they
 * are matched against. The socket's mode (0660) decides who can connect at
 * all; these rules decide what a connected peer may do. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host_api.h"
#include "host_api_int.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux >= 4.13; older kernels answer ENOPROTOOPT */
#endif

/* A number, or a user/group name looked up now (options are parsed once, at
 * startup: a later rename does not change who the rule names). */
static int who_id(bool group, const char *s, uint32_t *id)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s >= '0' && *s <= '9' && !errno && !*end && v < UINT32_MAX) {
        *id = (uint32_t)v;
        return 0;
    }
    if (group) {
        const struct group *g = getgrnam(s);
        if (!g)
            return -ENOENT;
        *id = g->gr_gid;
    } else {
        const struct passwd *p = getpwnam(s);
        if (!p)
            return -ENOENT;
        *id = p->pw_uid;
    }
    return 0;
}

int host_api_who_parse(struct api_who_list *l, const char *arg, char *err, size_t errlen)
{
    char *dup = strdup(arg ? arg : "");
    int rc = dup ? 0 : -ENOMEM;
    char *save = NULL;
    if (rc == 0 && !*dup) {
        snprintf(err, errlen, "empty list (expected user:NAME|UID or group:NAME|GID)");
        rc = -EINVAL;
    }
    for (char *w = dup && rc == 0 ? strtok_r(dup, ",", &save) : NULL; w && rc == 0;
         w = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(w, ':');
        bool group = colon && colon - w == 5 && strncmp(w, "group", 5) == 0;
        bool user = colon && colon - w == 4 && strncmp(w, "user", 4) == 0;
        uint32_t id;
        if (!group && !user) {
            snprintf(err, errlen, "'%s': expected user:NAME|UID or group:NAME|GID", w);
            rc = -EINVAL;
        } else if (who_id(group, colon + 1, &id) < 0) {
            snprintf(err, errlen, "'%s': no such %s", w, group ? "group" : "user");
            rc = -EINVAL;
        } else if (l->n >= HOST_API_MAX_WHO) {
            snprintf(err, errlen, "more than %u users/groups in one list", HOST_API_MAX_WHO);
            rc = -EINVAL;
        } else {
            l->v[l->n++] = (struct api_who){ .group = group, .id = id };
        }
    }
    free(dup);
    return rc == -ENOMEM ? -EINVAL : rc;
}

int host_api_consumer_rule_parse(struct host_api_config *cfg, const char *arg, char *err, size_t errlen)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : 0;
    static const char name_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    if (n == 0 || n > 63 || strspn(arg, name_chars) != n) {
        snprintf(err, errlen, "expected NAME=WHO[,WHO...] with NAME 1..63 of [A-Za-z0-9._-]");
        return -EINVAL;
    }
    struct api_consumer_rule *r = NULL;
    for (unsigned i = 0; i < cfg->nconsumers && !r; i++)
        if (strlen(cfg->consumers[i].name) == n && strncmp(cfg->consumers[i].name, arg, n) == 0)
            r = &cfg->consumers[i]; /* the same name again: more users/groups */
    if (!r && cfg->nconsumers >= HOST_API_MAX_CONSUMER_RULES) {
        snprintf(err, errlen, "more than %u consumer names", HOST_API_MAX_CONSUMER_RULES);
        return -EINVAL;
    }
    struct api_consumer_rule tmp = { 0 };
    if (r)
        tmp = *r;
    else
        memcpy(tmp.name, arg, n);
    int rc = host_api_who_parse(&tmp.who, eq + 1, err, errlen);
    if (rc < 0)
        return rc;
    if (!r)
        r = &cfg->consumers[cfg->nconsumers++];
    *r = tmp;
    return 0;
}

static bool in_groups(gid_t g, const gid_t *gids, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (gids[i] == g)
            return true;
    return false;
}

static bool matches(const struct api_who_list *l, uid_t uid, const gid_t *gids, unsigned ngids)
{
    for (unsigned i = 0; i < l->n; i++)
        if (l->v[i].group ? in_groups(l->v[i].id, gids, ngids) : l->v[i].id == uid)
            return true;
    return false;
}

/* The peer's groups: primary first, then the supplementary ones the kernel
 * reports (SO_PEERGROUPS). Without them (old kernel) only the primary group
 * counts. Returns the count; *out is malloc()ed (free it). */
static unsigned peer_groups(int fd, gid_t primary, gid_t **out)
{
    socklen_t len = 64 * sizeof(gid_t);
    gid_t *g = NULL;
    for (int tries = 0; tries < 2; tries++) {
        free(g);
        g = malloc(sizeof(gid_t) + len);
        if (!g)
            break;
        g[0] = primary;
        socklen_t got = len;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g + 1, &got) == 0) {
            *out = g;
            return 1 + got / sizeof(gid_t);
        }
        /* ERANGE: got says how much is needed (bounded by NGROUPS_MAX) */
        if (errno != ERANGE || got <= len || got > NGROUPS_MAX * sizeof(gid_t))
            break;
        len = got;
    }
    if (g) {
        g[0] = primary;
        *out = g;
        return 1;
    }
    *out = NULL;
    return 0;
}

int api_peer_rights(const struct host_api *api, int fd, struct api_peer *p)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return -errno;
    memset(p, 0, sizeof(*p));
    p->uid = cr.uid;
    p->pid = cr.pid;
    gid_t *gids = NULL;
    unsigned ng = peer_groups(fd, cr.gid, &gids);
    const struct host_api_config *c = &api->cfg;
    p->privileged = cr.uid == 0 || cr.uid == geteuid() || matches(&c->admin, cr.uid, gids, ng);
    p->can_write = p->privileged || matches(&c->write, cr.uid, gids, ng);
    p->can_read = p->can_write || matches(&c->read, cr.uid, gids, ng);
    for (unsigned i = 0; i < c->nconsumers; i++)
        if (matches(&c->consumers[i].who, cr.uid, gids, ng))
            p->consumer_rules |= 1ull << i;
    free(gids);
    return 0;
}

bool api_peer_may_register(const struct host_api *api, const struct api_peer *p, const char *name)
{
    if (p->privileged)
        return true;
    for (unsigned i = 0; name && i < api->cfg.nconsumers; i++)
        if (strcmp(api->cfg.consumers[i].name, name) == 0)
            return (p->consumer_rules >> i) & 1;
    return false;
}
