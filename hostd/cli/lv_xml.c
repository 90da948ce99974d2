/* libvirt domain XML for mdlmap-libvirt (see lv_xml.h). */
#include "lv_xml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

/* A domain definition is a few KiB; libvirt itself refuses far less than this. */
#define LVX_MAX_XML (16u << 20)
/* mdlmap's arguments: at most -chardev, -device, -chardev, -mon with values. */
#define LVX_MAX_ARGS 8

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* libxml2 reports some errors (encoding conversion) through its per-thread
 * generic handler even with XML_PARSE_NOERROR; a bad definition is reported
 * through err, never on the companion's stderr. */
static void quiet(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

static xmlDocPtr parse(const char *xml, size_t len, char *err, size_t errlen)
{
    if (!xml || len == 0 || len > LVX_MAX_XML) {
        fail(err, errlen, 0, "XML of %zu bytes (1..%u)", len, LVX_MAX_XML);
        return NULL;
    }
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        fail(err, errlen, 0, "out of memory");
        return NULL;
    }
    xmlGenericErrorFunc old = xmlGenericError;
    void *old_ctx = xmlGenericErrorContext;
    xmlSetGenericErrorFunc(NULL, quiet);
    /* No network, no entity substitution, no DTD loading: only the text. */
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, xml, (int)len, "domain.xml", NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlSetGenericErrorFunc(old_ctx, old);
    /* A namespace error (an undeclared prefix) still yields a document, with
     * "qemu:commandline" an element of no namespace; once a prepared
     * definition declares the prefix, that text means something else when
     * read again. libvirt refuses such XML; so do we. */
    if (doc && !ctxt->nsWellFormed) {
        xmlFreeDoc(doc);
        doc = NULL;
        fail(err, errlen, 0, "XML namespace error (undeclared prefix?)");
    } else if (!doc) {
        fail(err, errlen, 0, "not well-formed XML");
    }
    xmlFreeParserCtxt(ctxt);
    return doc;
}

static bool is_elem(xmlNodePtr n, const char *name, const char *ns)
{
    if (!n || n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, name))
        return false;
    if (!ns)
        return n->ns == NULL;
    return n->ns && n->ns->href && !strcmp((const char *)n->ns->href, ns);
}

static xmlNodePtr child(xmlNodePtr parent, const char *name, const char *ns)
{
    for (xmlNodePtr n = parent ? parent->children : NULL; n; n = n->next)
        if (is_elem(n, name, ns))
            return n;
    return NULL;
}

/* An attribute's value (without namespace), or NULL; the pointer lives as long as the node. */
static const char *attr(xmlNodePtr n, const char *name)
{
    for (xmlAttrPtr a = n ? n->properties : NULL; a; a = a->next)
        if (!a->ns && !strcmp((const char *)a->name, name) && a->children && a->children->type == XML_TEXT_NODE)
            return (const char *)a->children->content;
    return NULL;
}

bool lvx_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > LVX_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static int parse_onoff(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no")) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

int lvx_parse_meta(const char *xml, size_t len, struct lvx_meta *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    xmlDocPtr doc = parse(xml, len, err, errlen);
    if (!doc)
        return -EINVAL;
    int rc = 0;
    bool have_cid = false;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    /* virDomainGetMetadata hands the element back without its namespace. */
    if (!is_elem(root, LVX_ELEMENT, LVX_NS) && !is_elem(root, LVX_ELEMENT, NULL)) {
        rc = fail(err, errlen, -EINVAL, "the metadata element must be <" LVX_ELEMENT "> in namespace " LVX_NS);
        goto out;
    }
    for (xmlAttrPtr a = root->properties; a && rc == 0; a = a->next) {
        const char *k = (const char *)a->name;
        const char *v = a->children && a->children->type == XML_TEXT_NODE ? (const char *)a->children->content : "";
        if (a->ns) {
            rc = fail(err, errlen, -EINVAL, "attribute %s: no namespaced attributes", k);
        } else if (!strcmp(k, "cid")) {
            char *end = NULL;
            errno = 0;
            unsigned long long c = strtoull(v, &end, 10);
            if (!*v || *v == '-' || *v == '+' || errno || *end || c < 3 || c > 4294967294ull)
                rc = fail(err, errlen, -EINVAL, "bad cid '%.32s' (3..4294967294)", v);
            m->cid = c;
            have_cid = true;
        } else if (!strcmp(k, "name")) {
            if (!lvx_valid_name(v))
                rc = fail(err, errlen, -EINVAL, "bad name '%.80s' (1..63 of A-Z a-z 0-9 . _ -)", v);
            else
                snprintf(m->name, sizeof(m->name), "%s", v);
        } else if (!strcmp(k, "qmp")) {
            if (parse_onoff(v, &m->qmp))
                rc = fail(err, errlen, -EINVAL, "bad qmp '%.32s' (on|off)", v);
        } else if (!strcmp(k, "introspect")) {
            if (parse_onoff(v, &m->introspect))
                rc = fail(err, errlen, -EINVAL, "bad introspect '%.32s' (on|off)", v);
        } else {
            rc = fail(err, errlen, -EINVAL, "unknown attribute '%.32s' (cid, name, qmp, introspect)", k);
        }
    }
    if (rc == 0 && !have_cid)
        rc = fail(err, errlen, -EINVAL, "cid is required");
out:
    xmlFreeDoc(doc);
    return rc;
}

/* Is this argument value one of mdlmap's (names one of its QEMU ids)? */
static bool ours(const char *v)
{
    static const char *const ids[] = { "id=" LVX_DEV_ID, "chardev=" LVX_DEV_ID, "id=" LVX_QMP_ID,
                                       "chardev=" LVX_QMP_ID };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        const char *p = strstr(v, ids[i]);
        size_t n = strlen(ids[i]);
        /* a whole option: starts the value or follows a comma, ends it or a comma follows */
        while (p) {
            if ((p == v || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
                return true;
            p = strstr(p + 1, ids[i]);
        }
    }
    return false;
}

/* mdlmap's argument nodes in <qemu:commandline>: each value of ours and the
 * option before it. Returns how many (at most max; more counts as a change). */
static size_t our_args(xmlNodePtr cmdline, xmlNodePtr *nodes, size_t max, bool *too_many)
{
    size_t n = 0;
    xmlNodePtr prev = NULL;
    *too_many = false;
    for (xmlNodePtr a = cmdline ? cmdline->children : NULL; a; a = a->next) {
        if (!is_elem(a, "arg", LVX_QEMU_NS))
            continue;
        const char *v = attr(a, "value");
        if (v && ours(v)) {
            const char *pv = prev ? attr(prev, "value") : NULL;
            if (n + 2 > max) {
                *too_many = true;
                break;
            }
            if (pv && pv[0] == '-' && !ours(pv))
                nodes[n++] = prev;
            nodes[n++] = a;
        }
        prev = a;
    }
    return n;
}

static void unlink_free(xmlNodePtr n)
{
    xmlUnlinkNode(n);
    xmlFreeNode(n);
}

/* Ensure parent/<name type|mode=value>, value among the accepted ones. */
static int ensure_attr_child(xmlNodePtr parent, const char *name, const char *key, const char *value,
                             const char *also_ok)
{
    xmlNodePtr n = child(parent, name, NULL);
    if (!n)
        n = xmlNewChild(parent, NULL, BAD_CAST name, NULL);
    if (!n)
        return -ENOMEM;
    const char *v = attr(n, key);
    if (v && (!strcmp(v, value) || (also_ok && !strcmp(v, also_ok))))
        return 0;
    if (!xmlSetProp(n, BAD_CAST key, BAD_CAST value))
        return -ENOMEM;
    return 1;
}

static int dump(xmlDocPtr doc, char **out)
{
    xmlChar *buf = NULL;
    int n = 0;
    xmlDocDumpMemory(doc, &buf, &n);
    if (!buf)
        return -ENOMEM;
    *out = strndup((const char *)buf, (size_t)n);
    xmlFree(buf);
    return *out ? 0 : -ENOMEM;
}

int lvx_prepare(const char *domxml, size_t len, const struct lvx_dev *dev, char **out, char *err, size_t errlen)
{
    *out = NULL;
    char want[LVX_MAX_ARGS][512];
    size_t nwant = 0;
    if (dev) {
        if (!dev->socket || dev->socket[0] != '/' || strchr(dev->socket, ',') ||
            (dev->qmp && (dev->qmp[0] != '/' || strchr(dev->qmp, ','))))
            return fail(err, errlen, -EINVAL, "socket paths must be absolute and without commas");
        snprintf(want[nwant++], sizeof(want[0]), "-chardev");
        if (dev->reconnect)
            snprintf(want[nwant++], sizeof(want[0]), "socket,id=%s,path=%s,reconnect=%u", LVX_DEV_ID, dev->socket,
                     dev->reconnect);
        else
            snprintf(want[nwant++], sizeof(want[0]), "socket,id=%s,path=%s", LVX_DEV_ID, dev->socket);
        snprintf(want[nwant++], sizeof(want[0]), "-device");
        snprintf(want[nwant++], sizeof(want[0]), "vhost-user-vsock-pci,chardev=%s,id=%s", LVX_DEV_ID, LVX_DEV_ID);
        if (dev->qmp) {
            snprintf(want[nwant++], sizeof(want[0]), "-chardev");
            snprintf(want[nwant++], sizeof(want[0]), "socket,id=%s,path=%s,server=on,wait=off", LVX_QMP_ID,
                     dev->qmp);
            snprintf(want[nwant++], sizeof(want[0]), "-mon");
            snprintf(want[nwant++], sizeof(want[0]), "chardev=%s,mode=control", LVX_QMP_ID);
        }
        for (size_t i = 0; i < nwant; i++)
            if (strlen(want[i]) >= sizeof(want[0]) - 1)
                return fail(err, errlen, -ENAMETOOLONG, "socket path too long");
    }
    xmlDocPtr doc = parse(domxml, len, err, errlen);
    if (!doc)
        return -EINVAL;
    int rc = 0;
    bool changed = false;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!is_elem(root, "domain", NULL)) {
        rc = fail(err, errlen, -EINVAL, "not a <domain>");
        goto out;
    }
    if (dev) {
        /* vhost-user needs guest RAM in a file hostd can map: a shared memfd. */
        xmlNodePtr mb = child(root, "memoryBacking", NULL);
        if (!mb && !(mb = xmlNewChild(root, NULL, BAD_CAST "memoryBacking", NULL))) {
            rc = -ENOMEM;
            goto out;
        }
        int r1 = ensure_attr_child(mb, "source", "type", "memfd", "file");
        int r2 = r1 < 0 ? r1 : ensure_attr_child(mb, "access", "mode", "shared", NULL);
        if (r1 < 0 || r2 < 0) {
            rc = fail(err, errlen, -ENOMEM, "out of memory");
            goto out;
        }
        changed = r1 > 0 || r2 > 0;
    }
    xmlNodePtr cl = child(root, "commandline", LVX_QEMU_NS);
    xmlNodePtr have[LVX_MAX_ARGS * 2];
    bool too_many = false;
    size_t nhave = our_args(cl, have, LVX_MAX_ARGS * 2, &too_many);
    bool same = !too_many && nhave == nwant;
    for (size_t i = 0; same && i < nhave; i++)
        same = !strcmp(attr(have[i], "value") ? attr(have[i], "value") : "", want[i]);
    if (!same) {
        changed = true;
        /* Removed in passes so that more than LVX_MAX_ARGS*2 of ours all go. */
        do {
            for (size_t i = 0; i < nhave; i++)
                unlink_free(have[i]);
            nhave = our_args(cl, have, LVX_MAX_ARGS * 2, &too_many);
        } while (nhave);
        if (nwant) {
            xmlNsPtr ns = xmlSearchNsByHref(doc, root, BAD_CAST LVX_QEMU_NS);
            if (!ns)
                ns = xmlNewNs(root, BAD_CAST LVX_QEMU_NS, BAD_CAST "qemu");
            if (!cl && ns)
                cl = xmlNewChild(root, ns, BAD_CAST "commandline", NULL);
            if (!ns || !cl) {
                rc = fail(err, errlen, -ENOMEM, "out of memory");
                goto out;
            }
            for (size_t i = 0; i < nwant; i++) {
                xmlNodePtr a = xmlNewChild(cl, ns, BAD_CAST "arg", NULL);
                if (!a || !xmlSetProp(a, BAD_CAST "value", BAD_CAST want[i])) {
                    rc = fail(err, errlen, -ENOMEM, "out of memory");
                    goto out;
                }
            }
        } else if (cl) {
            /* Nothing else in it (only blanks): the element goes too. */
            bool empty = true;
            for (xmlNodePtr n = cl->children; n && empty; n = n->next)
                empty = n->type != XML_ELEMENT_NODE;
            if (empty)
                unlink_free(cl);
        }
    }
    if (changed)
        rc = dump(doc, out) == 0 ? 1 : fail(err, errlen, -ENOMEM, "out of memory");
out:
    xmlFreeDoc(doc);
    return rc;
}

/* Mark the PCI buses devices sit on (any element's <address type='pci' bus=...>). */
static void mark_buses(xmlNodePtr n, unsigned char used[256], unsigned depth)
{
    if (depth > 8)
        return;
    for (; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (is_elem(n, "address", NULL)) {
            const char *t = attr(n, "type"), *b = attr(n, "bus");
            if (t && b && !strcmp(t, "pci")) {
                char *end = NULL;
                unsigned long v = strtoul(b, &end, 0);
                if (end != b && !*end && v < 256)
                    used[v] = 1;
            }
        }
        mark_buses(n->children, used, depth + 1);
    }
}

int lvx_inspect(const char *domxml, size_t len, struct lvx_live *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof(*l));
    l->free_port = -1;
    xmlDocPtr doc = parse(domxml, len, err, errlen);
    if (!doc)
        return -EINVAL;
    int rc = 0;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!is_elem(root, "domain", NULL)) {
        rc = fail(err, errlen, -EINVAL, "not a <domain>");
        goto out;
    }
    xmlNodePtr mb = child(root, "memoryBacking", NULL);
    const char *src = attr(child(mb, "source", NULL), "type");
    const char *acc = attr(child(mb, "access", NULL), "mode");
    l->mem_shared = src && acc && (!strcmp(src, "memfd") || !strcmp(src, "file")) && !strcmp(acc, "shared");
    xmlNodePtr cl = child(root, "commandline", LVX_QEMU_NS);
    for (xmlNodePtr a = cl ? cl->children : NULL; a; a = a->next) {
        const char *v = is_elem(a, "arg", LVX_QEMU_NS) ? attr(a, "value") : NULL;
        if (v && ours(v) && strstr(v, "id=" LVX_DEV_ID))
            l->cold_plugged = true;
    }
    const char *machine = attr(child(child(root, "os", NULL), "type", NULL), "machine");
    l->q35 = machine && strstr(machine, "q35");
    xmlNodePtr devs = child(root, "devices", NULL);
    unsigned char used[256] = { 0 };
    mark_buses(devs ? devs->children : NULL, used, 0);
    for (xmlNodePtr c = devs ? devs->children : NULL; c; c = c->next) {
        const char *t = is_elem(c, "controller", NULL) ? attr(c, "type") : NULL;
        const char *model = attr(c, "model"), *idx = attr(c, "index");
        if (!t || strcmp(t, "pci") || !model || strcmp(model, "pcie-root-port") || !idx)
            continue;
        char *end = NULL;
        unsigned long v = strtoul(idx, &end, 10);
        if (end == idx || *end || v == 0 || v > 255 || used[v])
            continue;
        if (l->free_port < 0 || (int)v < l->free_port)
            l->free_port = (int)v;
    }
out:
    xmlFreeDoc(doc);
    return rc;
}
