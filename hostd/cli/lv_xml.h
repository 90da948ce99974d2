/* libvirt domain XML for mdlmap-libvirt: the metadata element a domain asks
 * for mdlmap with, the changes that prepare a domain definition (shared memfd
 * RAM, the vhost-user-vsock device on QEMU's command line), and what the
 * companion needs to know about a running domain. Pure functions over XML
 * text (libxml2), no libvirt calls: unit-tested and fuzzed on their own.
 * Functions return 0 or a negative errno, with a reason in err. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* <mdlmap:vsock xmlns:mdlmap="https://mdlmap.dev/libvirt/1" cid="5"
 *               [name="vm5"] [qmp="on"] [introspect="on"]/> in <metadata>. */
#define LVX_NS "https://mdlmap.dev/libvirt/1"
#define LVX_NS_PREFIX "mdlmap"
#define LVX_ELEMENT "vsock"
#define LVX_QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"
/* QEMU ids of what mdlmap adds; every argument naming one is mdlmap's. */
#define LVX_DEV_ID "mdlmap-vsock"
#define LVX_QMP_ID "mdlmap-qmp"
#define LVX_NAME_MAX 63

struct lvx_meta {
    uint64_t cid;                  /* 3..4294967294 */
    char name[LVX_NAME_MAX + 1];   /* empty: not given (the domain's name is used) */
    bool qmp;                      /* a QMP socket of its own for hostd */
    bool introspect;
};

/* What the device needs: the vhost-user socket hostd listens on, QEMU's
 * QMP socket for hostd (NULL: none), chardev reconnect seconds (0: none). */
struct lvx_dev {
    const char *socket;
    const char *qmp;
    unsigned reconnect;
};

/* A running domain's live XML, as far as hot attach cares. */
struct lvx_live {
    bool mem_shared;    /* RAM is a shared memfd or file: hostd can map it */
    bool cold_plugged;  /* QEMU was started with mdlmap's device on its command line */
    bool q35;           /* PCIe machine: hot plug needs a free pcie-root-port */
    int free_port;      /* index of a pcie-root-port with nothing on its bus, or -1 */
};

/* Parse the metadata element (as virDomainGetMetadata returns it). */
int lvx_parse_meta(const char *xml, size_t len, struct lvx_meta *m, char *err, size_t errlen);
/* Is name acceptable as a hostd VM name (1..63 of [A-Za-z0-9._-])? */
bool lvx_valid_name(const char *name);
/* Make domxml (a domain's inactive definition) carry dev: memoryBacking with
 * a shared memfd source and mdlmap's arguments in <qemu:commandline> (any
 * earlier ones replaced). dev NULL: remove mdlmap's arguments (memory
 * backing is left as it is). Returns 1 with *out (free()) when the definition
 * changes, 0 when it already is so (*out NULL). */
int lvx_prepare(const char *domxml, size_t len, const struct lvx_dev *dev, char **out, char *err, size_t errlen);
/* Inspect a running domain's live XML. */
int lvx_inspect(const char *domxml, size_t len, struct lvx_live *l, char *err, size_t errlen);
