/* The guest side: a virtio-vsock driver's view of the two split virtqueues
 * (rx = 0, tx = 1) in guest RAM, plus the QEMU-side bring-up sequence.
 *
 * Layout of guest RAM (32 MiB, two regions, see gm_create):
 *   low  region  GPA 0         : rx ring at 64 KiB, rx buffers from 1 MiB
 *   high region  GPA 4 GiB     : tx ring at +15 MiB, tx packet slots from 0
 * Rings are read/written through gm_ptr() every time, never cached, so the RAM
 * can be re-laid-out (gm_relayout) under a running device.
 */
#pragma once
#include <endian.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio_ring.h"
#include "vu_frontend.h"

#define GVQ_NUM 256          /* queue size the harness uses */
#define GVQ_RX 0
#define GVQ_TX 1

#define VSOCK_HDR_LEN 44u
#define RXBUF_PAYLOAD 4096u  /* Linux: 4 KiB + header per rx buffer */
#define RX_NBUF 256
#define RX_STRIDE 8192u
#define TX_NSLOT 64
#define TX_SLOT_SIZE (72u * 1024u)      /* header + up to 64 KiB payload + indirect table */
#define TX_SLOT_TABLE (68u * 1024u)     /* offset of the slot's indirect table */
#define TX_MAX_PAYLOAD 65536u

struct gseg {
    uint64_t gpa;
    uint32_t len;
    bool write;   /* device-writable */
};

/* One split virtqueue, driver side. */
struct gvq {
    struct guest_mem *gm;
    unsigned index;
    uint16_t num;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    int kick_fd, call_fd;
    bool event_idx;
    uint16_t avail_idx;     /* next avail idx we will publish */
    uint16_t kicked_idx;    /* avail idx at our last kick decision */
    uint16_t last_used;     /* next used entry to read */
    uint16_t free_head, nfree;
    uint16_t link[GVQ_NUM];     /* our copy of the chain / free list */
    uint16_t chain_n[GVQ_NUM];  /* descriptors in the chain at head */
    bool busy[GVQ_NUM];         /* head is outstanding */
    uint64_t cookie[GVQ_NUM];
    unsigned kicks, kicks_suppressed, calls;
    unsigned bad_used;          /* used entries naming a head that is not outstanding */
};

/* Descriptor / ring access for raw (hostile) tests. The fields behind these
 * pointers are little-endian (virtio 1.x): write them with htole*, read them
 * with le*toh, or build descriptors with gvq_desc_le. */
struct vring_desc *gvq_desc(struct gvq *q, unsigned i);
volatile uint16_t *gvq_avail_idx_p(struct gvq *q);
volatile uint16_t *gvq_avail_ring_p(struct gvq *q, unsigned i);
volatile uint16_t *gvq_used_idx_p(struct gvq *q);
/* A descriptor in its guest-memory (little-endian) form. */
static inline struct vring_desc gvq_desc_le(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    return (struct vring_desc){ htole64(addr), htole32(len), htole16(flags), htole16(next) };
}

/* Lay out an empty ring at ring_gpa; indices start at `start` (SET_VRING_BASE start). */
void gvq_reset(struct gvq *q, struct guest_mem *gm, unsigned index, uint64_t ring_gpa, bool event_idx,
               uint16_t start);
/* Add a chain; returns head (>= 0) or -ENOSPC. Not yet visible to the device. */
int gvq_add(struct gvq *q, const struct gseg *s, unsigned n, uint64_t cookie);
/* Add one INDIRECT descriptor whose table (at table_gpa in guest RAM) holds s[]. */
int gvq_add_indirect(struct gvq *q, uint64_t table_gpa, const struct gseg *s, unsigned n, uint64_t cookie);
/* Make head visible (avail ring + idx, with barriers). */
void gvq_publish(struct gvq *q, uint16_t head);
/* Raw: write head into the next avail slot and bump idx, no checks. */
void gvq_publish_raw(struct gvq *q, uint16_t head);
/* Notify the device if it wants it (EVENT_IDX avail_event / NO_NOTIFY); force: always. */
void gvq_kick(struct gvq *q, bool force);
/* Pop one used entry: 1 (cookie/len set), 0 none, -EPROTO bogus id from the device. */
int gvq_pop_used(struct gvq *q, uint64_t *cookie, uint32_t *len);
/* Re-arm interrupts (used_event or flags); returns true if used entries are pending. */
bool gvq_enable_cb(struct gvq *q);
bool gvq_has_used(struct gvq *q);
/* Drain the call eventfd; returns true if it was signalled. */
bool gvq_drain_call(struct gvq *q);

enum rx_layout { RXL_ONE = 0, RXL_TWO, RXL_SMALL };  /* hdr+4K in 1 desc; hdr | 4K; hdr+256 */
enum tx_layout { TXL_ONE = 0, TXL_SPLIT, TXL_MANY, TXL_INDIRECT, TXL_INDIRECT_MANY, TXL_COUNT };
const char *tx_layout_name(int l);

struct guest_opts {
    bool event_idx;       /* ack VIRTIO_RING_F_EVENT_IDX (if offered) */
    bool indirect;        /* ack INDIRECT_DESC (if offered) */
    bool mem_slots;       /* use ADD_MEM_REG (if CONFIGURE_MEM_SLOTS offered) */
    bool reply_ack;       /* ack REPLY_ACK and set NEED_REPLY everywhere */
    int rx_layout;
    size_t mem_size;      /* default 32 MiB */
    uint16_t start_idx;   /* ring indices start here (tests 16-bit wrap-around) */
    unsigned rx_limit;    /* post at most this many rx buffers (0: fill the ring) */
};
void guest_default_opts(struct guest_opts *o);

struct guest {
    struct vu_fe fe;
    struct guest_mem gm;
    struct gvq q[2];
    struct guest_opts o;
    uint64_t cid;
    char sock[160];
    uint64_t acked_features;
    uint64_t ring_gpa[2];
    bool running;
    /* rx buffers */
    bool rx_busy[RX_NBUF];
    /* tx slots */
    bool tx_busy[TX_NSLOT];
    unsigned tx_inflight;
    unsigned rx_pkts, tx_pkts;
    unsigned proto_errors;
    char err[256];
};

/* Connect and do the init handshake up to GET_CONFIG (checks the CID). */
int guest_connect(struct guest *g, const char *sock, uint64_t cid, const struct guest_opts *o);
/* "Driver OK": SET_FEATURES, memory, both rings, enable; posts rx buffers. */
int guest_start(struct guest *g);
/* Rings only (after features + memory were sent by the caller). */
int guest_rings_start(struct guest *g);
/* connect + start */
int guest_up(struct guest *g, const char *sock, uint64_t cid, const struct guest_opts *o);
/* Stop rings: SET_VRING_ENABLE 0 + GET_VRING_BASE; bases[] gets the answers (may be NULL). */
int guest_stop(struct guest *g, uint32_t bases[2]);
/* Fresh rings (like a guest reboot; optionally at another place) and start again. */
int guest_restart(struct guest *g, bool move_rings);
/* Close the vhost-user socket and free everything. */
void guest_close(struct guest *g);

/* Post rx buffers until the ring is full; kicks. */
void guest_post_rx(struct guest *g);
/* Send one packet (44-byte wire header + payload) with the chosen chain layout.
 * 0, or -EAGAIN when no tx slot / descriptors are free (reap and retry). */
int guest_tx(struct guest *g, int layout, const uint8_t *hdr, const void *payload, uint32_t len);
/* Reap tx completions; returns how many. */
int guest_reap_tx(struct guest *g);
/* Reap one rx packet: 1 and fills wire (>= 44+4096 bytes) and *len; 0 none; <0 device error.
 * The buffer is reposted by guest_post_rx. */
int guest_reap_rx(struct guest *g, uint8_t *wire, uint32_t *len);
