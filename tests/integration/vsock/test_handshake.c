/* 1. handshake: what QEMU 7.2's vhost-user-vsock needs from the backend. */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <endian.h>

#include "harness.h"

#define BIT(n) (1ull << (n))

static void raw_handshake(const struct hd_proc *p, unsigned vm)
{
    struct vu_fe fe;
    uint64_t cid = p->vm[vm].cid;
    if (!tap_check(vu_fe_connect(&fe, p->vm[vm].sock, 3000) == 0, "cid %llu: connect to vhost-user socket",
                   (unsigned long long)cid)) {
        tap_diag("  %s", fe.err);
        return;
    }
    uint64_t f = 0, pf = 0;
    int rc = vu_fe_get_u64(&fe, VHOST_USER_GET_FEATURES, &f);
    tap_check(rc == 0, "GET_FEATURES answered with flags 0x5 and 8 bytes%s%s", rc ? ": " : "", rc ? fe.err : "");
    tap_diag("features offered: 0x%llx", (unsigned long long)f);
    tap_check(f & BIT(VIRTIO_F_VERSION_1), "VERSION_1 offered");
    tap_check(f & BIT(VIRTIO_RING_F_EVENT_IDX), "EVENT_IDX offered");
    tap_check(f & BIT(VIRTIO_RING_F_INDIRECT_DESC), "INDIRECT_DESC offered");
    tap_check(f & BIT(VHOST_USER_F_PROTOCOL_FEATURES), "PROTOCOL_FEATURES (bit 30) offered");
    tap_check(!(f & BIT(40)), "RING_RESET (bit 40) not offered");
    if (f & BIT(VIRTIO_VSOCK_F_SEQPACKET))
        tap_diag("SEQPACKET feature offered");
    rc = vu_fe_get_u64(&fe, VHOST_USER_GET_PROTOCOL_FEATURES, &pf);
    tap_check(rc == 0, "GET_PROTOCOL_FEATURES answered%s%s", rc ? ": " : "", rc ? fe.err : "");
    tap_diag("protocol features offered: 0x%llx", (unsigned long long)pf);
    tap_check(pf & BIT(VHOST_USER_PROTOCOL_F_CONFIG), "protocol feature CONFIG offered");
    tap_check(pf & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK), "protocol feature REPLY_ACK offered");
    if (!(pf & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)))
        tap_diag("CONFIGURE_MEM_SLOTS not offered");

    uint64_t ack = pf & (BIT(VHOST_USER_PROTOCOL_F_CONFIG) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                         BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
    rc = vu_fe_set_u64(&fe, VHOST_USER_SET_PROTOCOL_FEATURES, ack);
    tap_check(rc == 0, "SET_PROTOCOL_FEATURES accepted");
    fe.need_reply = true;
    if (pf & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
        uint64_t slots = 0;
        rc = vu_fe_get_u64(&fe, VHOST_USER_GET_MAX_MEM_SLOTS, &slots);
        tap_check(rc == 0 && slots >= 8, "GET_MAX_MEM_SLOTS answered %llu (>= 8)", (unsigned long long)slots);
    }
    rc = vu_fe_req(&fe, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0);
    tap_check(rc == 0 && fe.last_ack == 0, "SET_OWNER with NEED_REPLY acked with status 0%s%s",
              rc ? ": " : "", rc ? fe.err : "");
    /* NEED_REPLY on a request that has its own reply: only that reply comes back */
    uint64_t f2 = 0;
    rc = vu_fe_send_raw(&fe, VHOST_USER_GET_FEATURES, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, 0,
                        NULL, 0, NULL, 0);
    struct vu_msg_hdr h;
    rc = rc ? rc : vu_fe_recv(&fe, &h, &f2, 8, 3000);
    tap_check(rc == 0 && h.request == VHOST_USER_GET_FEATURES && h.flags == 0x5 && f2 == f,
              "GET_FEATURES with NEED_REPLY: one normal reply");
    uint64_t pf2 = 0;
    rc = vu_fe_get_u64(&fe, VHOST_USER_GET_PROTOCOL_FEATURES, &pf2);
    tap_check(rc == 0 && pf2 == pf, "no extra ack after it (next reply matches the next request)%s%s",
              rc ? ": " : "", rc ? fe.err : "");
    uint64_t got = 0;
    rc = vu_fe_get_config(&fe, 0, 8, &got);
    got = le64toh(got); /* config space is little-endian */
    tap_check(rc == 0 && got == cid, "GET_CONFIG(0, 8) gives guest_cid %llu (got %llu)%s%s",
              (unsigned long long)cid, (unsigned long long)got, rc ? ": " : "", rc ? fe.err : "");
    /* SET_FEATURES with NEED_REPLY */
    rc = vu_fe_set_u64(&fe, VHOST_USER_SET_FEATURES,
                       f & (BIT(VIRTIO_F_VERSION_1) | BIT(VHOST_USER_F_PROTOCOL_FEATURES)));
    tap_check(rc == 0, "SET_FEATURES with NEED_REPLY acked 0%s%s", rc ? ": " : "", rc ? fe.err : "");
    vu_fe_close(&fe);
}

/* The vhost-user socket is a byte stream: messages may arrive coalesced or in pieces. */
static void stream_framing(const struct hd_proc *p)
{
    struct vu_fe fe;
    if (!tap_check(vu_fe_connect(&fe, p->vm[0].sock, 3000) == 0, "framing: connect"))
        return;
    /* two requests in one write */
    struct vu_msg_hdr two[2] = { { VHOST_USER_GET_FEATURES, 1, 0 }, { VHOST_USER_GET_PROTOCOL_FEATURES, 1, 0 } };
    bool ok = write(fe.fd, two, sizeof(two)) == (ssize_t)sizeof(two);
    struct vu_msg_hdr h1, h2;
    uint64_t v1 = 0, v2 = 0;
    ok = ok && vu_fe_recv(&fe, &h1, &v1, 8, 2000) == 0 && vu_fe_recv(&fe, &h2, &v2, 8, 2000) == 0;
    tap_check(ok && h1.request == VHOST_USER_GET_FEATURES && h2.request == VHOST_USER_GET_PROTOCOL_FEATURES,
              "framing: two requests in one write get two replies in order");
    /* one request dribbled byte by byte */
    uint8_t b[12];
    struct vu_msg_hdr h = { VHOST_USER_GET_FEATURES, 1, 0 };
    memcpy(b, &h, 12);
    ok = true;
    for (int i = 0; i < 12 && ok; i++) {
        ok = write(fe.fd, b + i, 1) == 1;
        usleep(5000);
    }
    ok = ok && vu_fe_recv(&fe, &h1, &v1, 8, 2000) == 0 && h1.request == VHOST_USER_GET_FEATURES;
    tap_check(ok, "framing: a header written one byte at a time is understood");
    /* header now, payload 100 ms later (SET_PROTOCOL_FEATURES, then REPLY_ACK on SET_OWNER) */
    uint64_t pf = v2 & ((1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG));
    h = (struct vu_msg_hdr){ VHOST_USER_SET_PROTOCOL_FEATURES, 1, 8 };
    ok = write(fe.fd, &h, 12) == 12;
    usleep(100000);
    ok = ok && write(fe.fd, &pf, 8) == 8;
    fe.need_reply = true;
    int rc = vu_fe_req(&fe, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0);
    tap_check(ok && rc == 0, "framing: payload arriving 100 ms after its header%s%s", rc ? ": " : "", rc ? fe.err : "");
    /* GET_CONFIG header and payload in two writes */
    uint8_t cfg[12 + 12 + 8];
    memset(cfg, 0, sizeof(cfg));
    h = (struct vu_msg_hdr){ VHOST_USER_GET_CONFIG, 1, 20 };
    memcpy(cfg, &h, 12);
    struct vu_config c = { 0, 8, 0 };
    memcpy(cfg + 12, &c, 12);
    ok = write(fe.fd, cfg, 15) == 15;
    usleep(50000);
    ok = ok && write(fe.fd, cfg + 15, sizeof(cfg) - 15) == (ssize_t)(sizeof(cfg) - 15);
    uint8_t rep[20];
    ok = ok && vu_fe_recv(&fe, &h1, rep, sizeof(rep), 2000) == 0 && h1.request == VHOST_USER_GET_CONFIG &&
         h1.size == 20;
    uint64_t cid = 0;
    memcpy(&cid, rep + 12, 8);
    tap_check(ok && cid == p->vm[0].cid, "framing: GET_CONFIG split mid-payload answered (cid %llu)",
              (unsigned long long)cid);
    vu_fe_close(&fe);
}

static void bringup_variant(const struct hd_proc *p, const char *what, bool mem_slots, bool reply_ack,
                            bool event_idx, int rxl)
{
    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_slots = mem_slots;
    o.reply_ack = reply_ack;
    o.event_idx = event_idx;
    o.rx_layout = rxl;
    if (up_or_report(d, p, 0, &o, what)) {
        char why[256] = "";
        int rc = vdev_echo_check(d, 10000, 5000, why, sizeof(why));
        tap_check(rc == 0 && d->errors == 0, "%s: echo of 10000 bytes works%s%s", what, rc ? ": " : "", why);
        if (mem_slots)
            tap_diag("  (CONFIGURE_MEM_SLOTS %s)", d->g.fe.proto_acked & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)
                                                  ? "acked: ADD_MEM_REG used" : "not offered: SET_MEM_TABLE used");
    }
    vdev_down(d);
    free(d);
}

/* hostd must refuse configurations a VM could never use */
static void cli_refusals(const char *bin)
{
    struct { unsigned n; uint64_t cids[2]; const char *what; } c[] = {
        { 1, { 2, 0 }, "--vm with the host CID 2" },
        { 1, { 1, 0 }, "--vm with the reserved CID 1" },
        { 1, { 0xffffffffull, 0 }, "--vm with the reserved CID 0xffffffff" },
        { 2, { 7, 7 }, "two --vm with the same CID" },
    };
    for (unsigned i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct hd_proc p;
        tap_diag("expecting hostd to refuse %s (a startup failure report follows)", c[i].what);
        int rc = hd_start(&p, bin, c[i].n, c[i].cids, NULL);
        if (rc == 0) {
            hd_kill(&p);
            tap_check(false, "hostd refuses %s (it started)", c[i].what);
        } else {
            char b[64];
            tap_check(p.reaped && WIFEXITED(p.status) && WEXITSTATUS(p.status) != 0,
                      "hostd refuses %s (%s)", c[i].what, hd_describe_exit(&p, b, sizeof(b)));
        }
    }
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    cli_refusals(bin);
    struct hd_proc p;
    uint64_t cids[2] = { 3, 1234567 };
    start_or_die(&p, bin, 2, cids, NULL);

    raw_handshake(&p, 0);
    raw_handshake(&p, 1);
    stream_framing(&p);
    bringup_variant(&p, "SET_MEM_TABLE + REPLY_ACK + EVENT_IDX", false, true, true, RXL_ONE);
    bringup_variant(&p, "ADD_MEM_REG + REPLY_ACK", true, true, true, RXL_ONE);
    bringup_variant(&p, "no REPLY_ACK, no EVENT_IDX, rx hdr|4K", false, false, false, RXL_TWO);
    bringup_variant(&p, "small rx buffers (44+256)", false, true, true, RXL_SMALL);

    tap_check(hd_alive(&p), "hostd still running");
    stop_and_check(&p);
    return tap_done();
}
