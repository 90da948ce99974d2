/* The agent daemon: serves unprivileged guest programs on a Unix socket.
 *
 * Protocol: the same length-prefixed Envelopes as hostd. A program sends
 * Hello, then LockRequest with its memfd attached (SCM_RIGHTS), pfns empty and
 * memfd_offset = offset of the buffer's first page in that memfd; the daemon
 * mmaps the range, pins it (io_uring), reads the frames from pagemap, forwards
 * the LockRequest to hostd and answers with the mdl_handle and the pfns. Map,
 * Unmap and Unlock are forwarded after checking that the handles belong to the
 * same client. Each client has its own hostd connection; when the client's
 * Unix connection closes, the daemon unmaps and unlocks everything it still
 * holds for it, then unpins and unmaps the memfd pages. */
#pragma once

/* Serve forever (until SIGTERM/SIGINT). 0 on a clean stop, negative errno. */
int agent_daemon_run(const char *socket_path);
