/* Fuzz mdlmap-libvirt's domain XML part (hostd/cli/lv_xml.c) on text built of
 * domain XML tokens (fuzz_text.h): the metadata element, inspecting a live
 * definition, preparing and unpreparing one. Properties: every call returns 0
 * or a negative errno (prepare: 0 or 1) with a reason on failure; a prepared
 * definition is prepared (a second prepare changes nothing) and inspects as
 * cold-plugged with shared memory; unpreparing it leaves none of ours. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_text.h"
#include "lv_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tokens[] = {
    "<domain>", "</domain>", "<domain xmlns:qemu='" LVX_QEMU_NS "'>", "<vsock", "<m:vsock xmlns:m='" LVX_NS "'",
    " cid='5'", " cid='2'", " cid='-1'", " name='n'", " name='a b'", " qmp='on'", " introspect='off'", " x='1'",
    "/>", ">", "</vsock>", "<memoryBacking>", "</memoryBacking>", "<source type='memfd'/>",
    "<source type='anonymous'/>", "<access mode='shared'/>", "<access mode='private'/>", "<qemu:commandline>",
    "</qemu:commandline>", "<qemu:arg value='-chardev'/>", "<qemu:arg value='socket,id=mdlmap-vsock,path=/x'/>",
    "<qemu:arg value='-device'/>", "<qemu:arg value='chardev=mdlmap-qmp'/>", "<qemu:env name='A'/>",
    "<os><type machine='q35'>hvm</type></os>", "<devices>", "</devices>",
    "<controller type='pci' index='1' model='pcie-root-port'/>", "<address type='pci' bus='0x01'/>",
    "<address type='pci' bus='9999'/>", "<disk>", "</disk>", "&amp;", "&x;", "<!--", "-->", "<![CDATA[", "]]>",
    "\"", "'", " ", "<", "=",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    size_t len;
    char *text = fuzz_text(data, size, tokens, sizeof(tokens) / sizeof(tokens[0]), &len);
    if (!text)
        return 0;
    char err[160];
    struct lvx_meta m;
    err[0] = '\0';
    int rc = lvx_parse_meta(text, len, &m, err, sizeof(err));
    if (rc > 0 || (rc < 0 && !err[0]) || (rc == 0 && (m.cid < 3 || m.cid > 4294967294ull)))
        __builtin_trap();
    struct lvx_live l;
    rc = lvx_inspect(text, len, &l, err, sizeof(err));
    if (rc > 0 || l.free_port > 255)
        __builtin_trap();
    struct lvx_dev dev = { .socket = "/run/mdlmap/libvirt/u.sock", .qmp = (size & 1) ? "/run/q.qmp" : NULL };
    char *out = NULL, *again = NULL, *un = NULL;
    rc = lvx_prepare(text, len, &dev, &out, err, sizeof(err));
    if (rc > 1 || (rc == 1) != (out != NULL))
        __builtin_trap();
    const char *prepared = rc == 1 ? out : rc == 0 ? text : NULL;
    size_t plen = rc == 1 ? strlen(out) : len;
    if (prepared) {
        if (lvx_prepare(prepared, plen, &dev, &again, err, sizeof(err)) != 0 || again)
            __builtin_trap();
        if (lvx_inspect(prepared, plen, &l, err, sizeof(err)) != 0 || !l.cold_plugged || !l.mem_shared)
            __builtin_trap();
        rc = lvx_prepare(prepared, plen, NULL, &un, err, sizeof(err));
        if (rc != 1 || !un || lvx_inspect(un, strlen(un), &l, err, sizeof(err)) != 0 || l.cold_plugged)
            __builtin_trap();
    }
    free(out);
    free(again);
    free(un);
    free(text);
    return 0;
}
