/* Split virtqueue layout and flags (virtio 1.x, section 2.7). Every field is
 * little-endian in guest memory; readers and writers convert at each access. */
#pragma once
#include <stdint.h>

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; } __attribute__((packed));
struct vring_avail { uint16_t flags; uint16_t idx; uint16_t ring[]; } __attribute__((packed));
struct vring_used_elem { uint32_t id; uint32_t len; } __attribute__((packed));
struct vring_used { uint16_t flags; uint16_t idx; struct vring_used_elem ring[]; } __attribute__((packed));

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

