/* Framing of mdlmap Envelopes over a byte stream: 4-byte little-endian length,
 * then that many bytes of protobuf. Shared by hostd, the guest library and
 * host clients. The reader is incremental and bounded: a declared length of 0
 * or above the maximum is an error after which the stream must be closed. */
#pragma once
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdlmap.pb-c.h"
#include "ntstatus.h" /* whoever reads envelopes prints their status */

struct usock_fds;

#define MDLMAP_PROTO_VERSION 1u
#define MDLMAP_FRAME_HDR 4u
#define MDLMAP_MAX_FRAME (1u << 20)
#define MDLMAP_MAX_IO_CHUNK (512u * 1024u) /* read/write request payload limit */

typedef Mdlmap__V1__Envelope mdl_envelope;

struct frame_reader {
    uint8_t *buf;
    size_t len;       /* bytes held */
    size_t cap;
    size_t consumed;  /* bytes of buf already returned as frames */
    size_t max_frame;
};

void frame_reader_init(struct frame_reader *r, size_t max_frame);
void frame_reader_free(struct frame_reader *r);
/* Bytes the reader can take now without holding more than one maximal frame
 * plus its header (callers use this for flow control). */
size_t frame_reader_room(const struct frame_reader *r);
/* The buffer capacity the reader will have after feeding len more bytes
 * (callers that account memory charge this before feeding). */
size_t frame_reader_cap_after(const struct frame_reader *r, size_t len);
/* Append stream bytes. 0, -ENOMEM, or -ENOBUFS when len > frame_reader_room(). */
int frame_reader_feed(struct frame_reader *r, const void *data, size_t len);
/* 1: *payload and *plen point at the next complete frame (valid until the next
 * feed/next call); 0: need more bytes; -EMSGSIZE: bad length (close the stream). */
int frame_reader_next(struct frame_reader *r, const uint8_t **payload, size_t *plen);
/* Zero-copy feeding, for a reader that read()s straight into the buffer:
 * *p and *room are where the next bytes go. Drops the frames already handed
 * out (compacts) and grows the buffer to hold at least one more byte, or the
 * whole frame whose header is held, never past one maximal frame plus its
 * header. 0, -ENOMEM, -EMSGSIZE (the held header declares a bad length),
 * -ENOBUFS (a whole maximal frame is held already: take it out first). */
int frame_reader_space(struct frame_reader *r, uint8_t **p, size_t *room);
/* Account n bytes written at frame_reader_space()'s pointer (n <= room). */
void frame_reader_commit(struct frame_reader *r, size_t n);
/* True while the reader holds the beginning of a frame that is not complete
 * (callers time out peers that stop in the middle of one). */
bool frame_reader_partial(const struct frame_reader *r);

/* Serialize env as one frame into a new buffer (free() it). 0, -ENOMEM, -EMSGSIZE. */
int frame_encode(const mdl_envelope *env, uint8_t **out, size_t *out_len);
/* The same into caller storage: 0 and *out_len = the frame length;
 * -ENOBUFS with *out_len = the length needed when cap is too small;
 * -EMSGSIZE. Nothing is allocated. */
int frame_encode_to(const mdl_envelope *env, uint8_t *buf, size_t cap, size_t *out_len);
/* Unpack and validate one frame payload: -EBADMSG when protobuf-c rejects it,
 * -EPROTO when the envelope has no body. Free with frame_envelope_free(). */
int frame_decode(const uint8_t *payload, size_t len, mdl_envelope **out);
void frame_envelope_free(mdl_envelope *env);
/* frame_decode() with protobuf-c allocating through a (NULL: malloc). The
 * envelope is then a's to release (an arena just resets). */
int frame_decode_with(const uint8_t *payload, size_t len, ProtobufCAllocator *a, mdl_envelope **out);

/* Blocking helpers for stream fds (sockets): whole frame or error.
 * frame_read_fd returns 0, -ECONNRESET on EOF, -EMSGSIZE, -EBADMSG, -errno. */
int frame_write_fd(int fd, const mdl_envelope *env);
int frame_read_fd(int fd, mdl_envelope **out);
/* Same on a Unix socket, collecting fds passed with the frame (SCM_RIGHTS)
 * into fds (see usock.h); fds NULL: any passed fds are closed. */
int frame_read_fd_fds(int fd, mdl_envelope **out, struct usock_fds *fds);

/* A PhysRead reply read in place: the data of each range points into the
 * frame payload (valid while the payload is), nothing is allocated or
 * copied. Built for whole-guest reads, where protobuf-c's unpack would copy
 * every data field once more. */
struct frame_range_view {
    int32_t status;
    const uint8_t *data;
    size_t len;
};
struct frame_phys_read_view {
    uint32_t version;
    uint64_t request_id;
    int32_t status;
    const char *detail; /* not NUL-terminated: detail_len bytes */
    size_t detail_len;
    size_t n_ranges;    /* ranges filled: at most the caller's max */
};
/* Decode payload (one frame, as frame_decode takes it) when it is an
 * Envelope whose body is a PhysReadResponse with at most max ranges.
 * 0: *v and r[0 .. v->n_ranges) filled; -ENOMSG: valid or not, the frame is
 * something this reader does not take (another body, more ranges than max,
 * a field repeated that protobuf would merge): decode it with frame_decode;
 * -EBADMSG: malformed (a length past the end, a bad varint or wire type). */
int frame_view_phys_read(const uint8_t *payload, size_t len, struct frame_phys_read_view *v,
                         struct frame_range_view *r, size_t max);
/* Read one frame's payload from a blocking stream fd into *buf (grown with
 * realloc as needed, capacity *cap; the caller frees it): a client that
 * reads many large replies reuses one buffer. 0 and *len, -ECONNRESET on
 * EOF, -EMSGSIZE, -ENOMEM, -errno. */
int frame_read_fd_buf(int fd, uint8_t **buf, size_t *cap, size_t *len);
