/* Building blocks of a hostile front-end, for the hardening and load tests:
 * a vhost-user connection to a VM past the handshake, with REPLY_ACK answers
 * awaited, on which a test then sends what QEMU never would. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vu_guest.h"

/* Connect to sock as VM cid's front-end, acknowledge version 1 and protocol
 * features; false (reported as a failed check, named what) when it fails. */
bool hostile_front_end(struct guest *g, const char *sock, uint64_t cid, const char *what);
/* SET_MEM_TABLE with one 16 MiB region at GPA 0 backed by fd; 0 when acked,
 * -EREMOTEIO when refused. */
int hostile_mem_table_one(struct guest *g, int fd);
/* A process's user+system CPU time in clock ticks; -1 on error. */
long proc_cpu_ticks(pid_t pid);
