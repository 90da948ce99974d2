/* mdlmap-libvirt's domain XML part (hostd/cli/lv_xml.c): the metadata
 * element, preparing and unpreparing a definition, inspecting a live one. */
#include <stdlib.h>
#include <string.h>

#include "lv_xml.h"
#include "tap.h"

static int meta(const char *xml, struct lvx_meta *m)
{
    char err[160];
    return lvx_parse_meta(xml, strlen(xml), m, err, sizeof(err));
}

static void test_meta(void)
{
    struct lvx_meta m;
    /* as virDomainGetMetadata returns it: no namespace */
    CHECK_EQ(meta("<vsock cid=\"5\"/>", &m), 0);
    CHECK_EQ(m.cid, 5);
    CHECK(m.name[0] == '\0' && !m.qmp && !m.introspect);
    /* as written in the domain */
    CHECK_EQ(meta("<mdlmap:vsock xmlns:mdlmap=\"" LVX_NS "\" cid=\"4294967294\" name=\"a.b_c-1\" qmp=\"on\" "
                  "introspect=\"yes\"/>",
                  &m),
             0);
    CHECK_EQ(m.cid, 4294967294ll);
    CHECK(!strcmp(m.name, "a.b_c-1") && m.qmp && m.introspect);
    /* refused: each with a reason */
    const char *bad[] = {
        "<vsock/>",                                    /* no cid */
        "<vsock cid=\"2\"/>",                          /* reserved CIDs */
        "<vsock cid=\"4294967295\"/>",
        "<vsock cid=\"-5\"/>", "<vsock cid=\"5x\"/>", "<vsock cid=\"\"/>",
        "<vsock cid=\"99999999999999999999999\"/>",
        "<vsock cid=\"5\" name=\"a b\"/>",              /* not a hostd VM name */
        "<vsock cid=\"5\" name=\"\"/>",
        "<vsock cid=\"5\" qmp=\"maybe\"/>",
        "<vsock cid=\"5\" cdi=\"6\"/>",                /* a typo is not ignored */
        "<x:vsock xmlns:x=\"urn:other\" cid=\"5\"/>",  /* another namespace */
        "<vsockx cid=\"5\"/>",
        "<vsock cid=\"5\"",                            /* not well-formed */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[160] = "";
        int rc = lvx_parse_meta(bad[i], strlen(bad[i]), &m, err, sizeof(err));
        tap_check(rc < 0 && err[0], "metadata refused: %s (%s)", bad[i], err);
    }
    char name[70];
    memset(name, 'a', 64);
    name[64] = '\0';
    CHECK(!lvx_valid_name(name));
    name[63] = '\0';
    CHECK(lvx_valid_name(name));
}

static const char *domain_plain =
    "<domain type='qemu'>\n"
    "  <name>d</name>\n"
    "  <metadata><mdlmap:vsock xmlns:mdlmap='" LVX_NS "' cid='5'/></metadata>\n"
    "  <memory unit='KiB'>524288</memory>\n"
    "  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>\n"
    "  <devices><serial type='pty'/></devices>\n"
    "</domain>\n";

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_prepare(void)
{
    char err[160];
    char *out = NULL, *out2 = NULL, *out3 = NULL;
    struct lvx_dev dev = { .socket = "/run/mdlmap/libvirt/u.sock" };
    CHECK_EQ(lvx_prepare(domain_plain, strlen(domain_plain), &dev, &out, err, sizeof(err)), 1);
    CHECK(out && strstr(out, "<source type=\"memfd\"/>") && strstr(out, "<access mode=\"shared\"/>"));
    CHECK(out && strstr(out, "xmlns:qemu=\"" LVX_QEMU_NS "\""));
    CHECK(out && strstr(out, "value=\"socket,id=mdlmap-vsock,path=/run/mdlmap/libvirt/u.sock\""));
    CHECK(out && strstr(out, "value=\"vhost-user-vsock-pci,chardev=mdlmap-vsock,id=mdlmap-vsock\""));
    CHECK(out && strstr(out, "<mdlmap:vsock") && strstr(out, "<serial type=\"pty\"/>"));
    CHECK_EQ(out ? count(out, "<qemu:arg ") : -1, 4);
    /* prepared once is prepared: no second redefinition */
    CHECK_EQ(out ? lvx_prepare(out, strlen(out), &dev, &out2, err, sizeof(err)) : -1, 0);
    CHECK(out2 == NULL);
    struct lvx_live l;
    CHECK_EQ(out ? lvx_inspect(out, strlen(out), &l, err, sizeof(err)) : -1, 0);
    CHECK(l.mem_shared && l.cold_plugged && l.q35);
    /* a new socket and a QMP socket: ours replaced, not added to */
    struct lvx_dev dev2 = { .socket = "/s/v.sock", .qmp = "/s/v.qmp", .reconnect = 2 };
    CHECK_EQ(out ? lvx_prepare(out, strlen(out), &dev2, &out2, err, sizeof(err)) : -1, 1);
    CHECK(out2 && strstr(out2, "path=/s/v.sock,reconnect=2") && !strstr(out2, "u.sock"));
    CHECK(out2 && strstr(out2, "socket,id=mdlmap-qmp,path=/s/v.qmp,server=on,wait=off") &&
          strstr(out2, "chardev=mdlmap-qmp,mode=control"));
    CHECK_EQ(out2 ? count(out2, "<qemu:arg ") : -1, 8);
    /* unprepared: mdlmap's arguments go, with the element they leave empty */
    CHECK_EQ(out2 ? lvx_prepare(out2, strlen(out2), NULL, &out3, err, sizeof(err)) : -1, 1);
    CHECK(out3 && !strstr(out3, "mdlmap-") && !strstr(out3, "qemu:commandline"));
    free(out);
    free(out2);
    free(out3);

    /* Somebody else's arguments and memory backing are kept. */
    const char *other =
        "<domain type='kvm' xmlns:qemu='" LVX_QEMU_NS "'>\n"
        "  <name>o</name>\n"
        "  <memoryBacking><hugepages/><source type='file'/><access mode='private'/></memoryBacking>\n"
        "  <qemu:commandline><qemu:arg value='-S'/><qemu:arg value='-chardev'/>"
        "<qemu:arg value='socket,id=mdlmap-vsockX,path=/x'/><qemu:env name='A' value='1'/></qemu:commandline>\n"
        "</domain>\n";
    CHECK_EQ(lvx_prepare(other, strlen(other), &dev, &out, err, sizeof(err)), 1);
    CHECK(out && strstr(out, "<hugepages/>") && strstr(out, "<source type=\"file\"/>") &&
          strstr(out, "<access mode=\"shared\"/>"));
    CHECK(out && strstr(out, "value=\"-S\"") && strstr(out, "id=mdlmap-vsockX") && strstr(out, "name=\"A\""));
    CHECK_EQ(out ? count(out, "<qemu:arg ") : -1, 7);
    CHECK_EQ(out ? lvx_prepare(out, strlen(out), NULL, &out2, err, sizeof(err)) : -1, 1);
    CHECK(out2 && strstr(out2, "qemu:commandline") && strstr(out2, "id=mdlmap-vsockX") &&
          !strstr(out2, "vhost-user-vsock-pci"));
    free(out);
    free(out2);
    out = out2 = NULL;
    /* nothing of ours, nothing asked: unchanged */
    CHECK_EQ(lvx_prepare(other, strlen(other), NULL, &out, err, sizeof(err)), 0);
    CHECK(out == NULL);

    /* refused */
    struct lvx_dev comma = { .socket = "/a,b.sock" };
    CHECK(lvx_prepare(domain_plain, strlen(domain_plain), &comma, &out, err, sizeof(err)) < 0 && out == NULL);
    struct lvx_dev rel = { .socket = "a.sock" };
    CHECK(lvx_prepare(domain_plain, strlen(domain_plain), &rel, &out, err, sizeof(err)) < 0);
    CHECK(lvx_prepare("<network/>", 10, &dev, &out, err, sizeof(err)) < 0);
    CHECK(lvx_prepare("<domain>", 8, &dev, &out, err, sizeof(err)) < 0);
    /* An undeclared prefix (xmlns misspelt): libxml2 still builds a tree,
     * but the prepared text would mean something else once our xmlns:qemu
     * declares the prefix, so the definition is refused, not rewritten. */
    const char *undeclared = "<domain xmns:qemu='" LVX_QEMU_NS "'><qemu:commandline>"
                             "<qemu:arg value='-S'/></qemu:commandline></domain>";
    err[0] = '\0';
    CHECK(lvx_prepare(undeclared, strlen(undeclared), &dev, &out, err, sizeof(err)) < 0 && out == NULL &&
          strstr(err, "namespace"));
    CHECK(lvx_inspect(undeclared, strlen(undeclared), &l, err, sizeof(err)) < 0);
    /* bytes no encoding accepts: refused with a reason (and nothing on stderr) */
    const char *badenc = "<?xml version='1.0' encoding='UTF-16'?>\x17";
    err[0] = '\0';
    CHECK(lvx_prepare(badenc, strlen(badenc), &dev, &out, err, sizeof(err)) < 0 && out == NULL && err[0]);
}

static void test_inspect(void)
{
    char err[160];
    struct lvx_live l;
    /* libvirt's live XML of a q35 domain: root ports 1 and 2, a device on bus 1 */
    const char *live =
        "<domain type='qemu' id='3'>\n"
        "  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n"
        "  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>\n"
        "  <devices>\n"
        "    <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>\n"
        "    <controller type='pci' index='1' model='pcie-root-port'><alias name='pci.1'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></controller>\n"
        "    <controller type='pci' index='2' model='pcie-root-port'><alias name='pci.2'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></controller>\n"
        "    <disk type='file'><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></disk>\n"
        "  </devices>\n"
        "</domain>\n";
    CHECK_EQ(lvx_inspect(live, strlen(live), &l, err, sizeof(err)), 0);
    CHECK(l.mem_shared && !l.cold_plugged && l.q35);
    CHECK_EQ(l.free_port, 2);
    const char *full =
        "<domain><os><type machine='pc-i440fx-7.2'>hvm</type></os><memoryBacking><access mode='shared'/>"
        "</memoryBacking><devices><controller type='pci' index='1' model='pcie-root-port'/>"
        "<interface><address type='pci' bus='1'/></interface></devices></domain>";
    CHECK_EQ(lvx_inspect(full, strlen(full), &l, err, sizeof(err)), 0);
    CHECK(!l.mem_shared && !l.q35);
    CHECK_EQ(l.free_port, -1);
    CHECK(lvx_inspect("<domain", 7, &l, err, sizeof(err)) < 0);
}

int main(void)
{
    test_meta();
    test_prepare();
    test_inspect();
    return tap_done();
}
