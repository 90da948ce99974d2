/* vhost-user FRONTEND test harness ("fake QEMU") for mdlmap-hostd.
 *
 * Three pieces live here:
 *  - hd_proc: spawn mdlmap-hostd with --vm specs in a temp dir, wait for
 *    "ready", stop it with SIGTERM and judge its exit status; /proc counters.
 *  - vu_fe: one vhost-user connection (messages, SCM_RIGHTS fds, REPLY_ACK).
 *  - guest_mem: the guest RAM as a memfd, exposed to hostd as regions with
 *    chosen guest-physical addresses (GPA) and fake QEMU addresses (UVA).
 *
 * Nothing here aborts: every function returns an error and leaves a
 * human-readable reason in the object's err[] buffer.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vhost_user_proto.h" /* message numbers and payload structs */
#include "vsock_pkt.h"        /* the virtio-vsock header and feature bits */

/* ------------------------------------------------------------------ hostd */
/* VMs one hd_start may serve (the scale test runs a thousand); up to
 * HD_INLINE_VMS live in hd_proc itself, more in a heap array that hd_stop /
 * hd_kill free. */
#define HD_MAX_VMS 4096
#define HD_INLINE_VMS 8

struct hd_vm {
    char name[32];
    uint64_t cid;
    char sock[160];
};

struct hd_proc {
    pid_t pid;          /* 0 when not running */
    char dir[128];      /* temp dir holding sockets and the log */
    char log[192];      /* hostd's stdout+stderr */
    unsigned nvms;
    struct hd_vm *vm;   /* nvms entries: vm_inline or the heap */
    struct hd_vm vm_inline[HD_INLINE_VMS];
    int status;         /* waitpid status once reaped */
    bool reaped;
};

/* Start hostd (bin) serving nvms VMs with the given CIDs (names vm0, vm1, ...);
 * nvms 0: none on the command line (extra then gives --api or --config).
 * extra: NULL-terminated extra arguments (e.g. "--sibling-routing", "off"), may be NULL.
 * Env MDLMAP_HARNESS_DEBUG=1 adds --log-level debug. Waits (<= 20 s) for "ready". */
int hd_start(struct hd_proc *p, const char *bin, unsigned nvms, const uint64_t *cids,
             const char *const *extra);
/* Start hostd under a wrapper from now on: argv (NULL-terminated, kept by
 * the caller; NULL: none) goes before hostd's own (e.g. the fd-store
 * supervisor "fdstore-sup --pidfile F --"). p->pid is then the wrapper's. */
void hd_set_wrapper(const char *const *argv);
/* The same with options appended to each VM's --vm spec: vm_opts NULL, or
 * nvms entries, each NULL or e.g. "introspect=on". */
int hd_start_opts(struct hd_proc *p, const char *bin, unsigned nvms, const uint64_t *cids,
                  const char *const *vm_opts, const char *const *extra);
/* Is hostd still running? (reaps it if it died; see hd_describe_exit). */
bool hd_alive(struct hd_proc *p);
/* SIGTERM, wait <= 15 s (then SIGKILL). Returns 0 only on a clean exit 0;
 * otherwise prints why and the log tail. Removes the temp dir. */
int hd_stop(struct hd_proc *p);
/* Kill without judging (cleanup after a failed test). */
void hd_kill(struct hd_proc *p);
/* "exited 0", "exited 23", "killed by signal 11", "running". */
const char *hd_describe_exit(struct hd_proc *p, char *buf, size_t len);
/* Lines of hostd's log that contain s. */
unsigned hd_log_count(const struct hd_proc *p, const char *s);
/* Print the last `lines` lines of hostd's log as "# " diagnostics. */
void hd_log_tail(const struct hd_proc *p, int lines);

/* /proc counters for leak checks; -1 on error. */
int proc_count_fds(pid_t pid);
int proc_count_maps(pid_t pid);
/* maps lines whose text contains `needle` (e.g. "memfd:" = guest RAM mappings). */
int proc_count_maps_matching(pid_t pid, const char *needle);
/* Extra maps lines to tolerate: nonzero under AddressSanitizer, whose allocator
 * maps new regions on demand and never gives them back. */
int maps_slack(void);
long proc_rss_kb(pid_t pid);
/* A "Key:  N kB" line of /proc/PID/status (VmRSS, RssAnon, RssShmem...); -1 if absent. */
long proc_status_kb(pid_t pid, const char *key);
/* Extra RSS growth (KiB) to tolerate in memory-bound checks: large when built with
 * AddressSanitizer (its free quarantine grows RSS; LeakSanitizer catches real leaks). */
long rss_slack_kb(void);

/* --------------------------------------------------------------- frontend */
struct vu_fe {
    int fd;                  /* -1 when closed */
    uint64_t features;       /* offered by GET_FEATURES */
    uint64_t proto;          /* offered by GET_PROTOCOL_FEATURES */
    uint64_t proto_acked;    /* what we sent in SET_PROTOCOL_FEATURES */
    bool need_reply;         /* set NEED_REPLY on requests without a reply (REPLY_ACK) */
    int timeout_ms;          /* per reply; default 5000 */
    uint64_t last_ack;       /* last REPLY_ACK status */
    unsigned replies;        /* replies read */
    char err[256];
};

void vu_fe_init(struct vu_fe *fe);
/* Connect to the backend's socket (retries ECONNREFUSED/ENOENT up to timeout_ms). */
int vu_fe_connect(struct vu_fe *fe, const char *path, int timeout_ms);
void vu_fe_close(struct vu_fe *fe);

/* Raw: send one message (header + payload + fds). size is the header's size field;
 * payload_len bytes of payload are actually sent (normally == size). */
int vu_fe_send_raw(struct vu_fe *fe, uint32_t req, uint32_t flags, uint32_t size,
                   const void *payload, size_t payload_len, const int *fds, unsigned nfds);
/* Raw: read one message from the backend. 0, -ETIMEDOUT, -ECONNRESET (EOF), -EPROTO. */
int vu_fe_recv(struct vu_fe *fe, struct vu_msg_hdr *hdr, void *payload, uint32_t max, int timeout_ms);

/* A request with a defined reply (GET_*): sends, reads and checks the reply
 * (same request, flags == 0x5, size == reply_size). */
int vu_fe_call(struct vu_fe *fe, uint32_t req, const void *payload, uint32_t size,
               void *reply, uint32_t reply_size);
/* A request without reply; with fe->need_reply, sets NEED_REPLY and checks the
 * u64 ack: 0 ok, -EREMOTEIO if the backend answered nonzero. */
int vu_fe_req(struct vu_fe *fe, uint32_t req, const void *payload, uint32_t size,
              const int *fds, unsigned nfds);
int vu_fe_get_u64(struct vu_fe *fe, uint32_t req, uint64_t *out);
int vu_fe_set_u64(struct vu_fe *fe, uint32_t req, uint64_t v);
int vu_fe_vring_state(struct vu_fe *fe, uint32_t req, uint32_t index, uint32_t num);
int vu_fe_vring_fd(struct vu_fe *fe, uint32_t req, uint32_t index, int fd); /* fd < 0: NOFD */
int vu_fe_vring_addr(struct vu_fe *fe, uint32_t index, uint64_t desc_uva, uint64_t avail_uva,
                     uint64_t used_uva);
int vu_fe_get_vring_base(struct vu_fe *fe, uint32_t index, uint32_t *num);
int vu_fe_get_config(struct vu_fe *fe, uint32_t offset, uint32_t size, void *out);
/* True if the backend has closed the connection (non-blocking peek). */
bool vu_fe_peer_closed(struct vu_fe *fe);

/* ------------------------------------------------------------ guest RAM */
#define GM_MAX_REGIONS 4
#define GM_UVA_BASE 0x7f0000000000ull  /* fake QEMU address of GPA 0 */
#define GM_HIGH_GPA 0x100000000ull     /* second region starts at 4 GiB */

struct gm_region {
    uint64_t gpa, size, uva;
    uint64_t foff;  /* offset in the memfd */
};

struct guest_mem {
    int fd;          /* memfd */
    uint8_t *base;   /* our mapping of the whole memfd */
    size_t size;
    unsigned n;
    struct gm_region r[GM_MAX_REGIONS];
};

/* size bytes of RAM: low half at GPA 0, high half at GPA 4 GiB (a hole between). */
int gm_create(struct guest_mem *gm, size_t size);
void gm_destroy(struct guest_mem *gm);
/* Our pointer for [gpa, gpa+len); NULL unless wholly inside one region. */
void *gm_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* QEMU UVA for gpa (0 if outside RAM). */
uint64_t gm_uva(const struct guest_mem *gm, uint64_t gpa);
/* Same RAM, different table: the low half split into two regions (3 regions). */
void gm_resplit(struct guest_mem *gm);
/* Same RAM contents and GPAs/UVAs, but a NEW memfd with the halves swapped in the
 * file (different mmap offsets). The old memfd is closed. */
int gm_relayout(struct guest_mem *gm);

/* Register the table with the backend: SET_MEM_TABLE (one fd per region). */
int vu_fe_set_mem_table(struct vu_fe *fe, const struct guest_mem *gm);
/* ADD_MEM_REG for each region (CONFIGURE_MEM_SLOTS). */
int vu_fe_add_mem_regs(struct vu_fe *fe, const struct guest_mem *gm);
