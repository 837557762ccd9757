/* frame.h — the host⇄guest channel's frame format (docs/vm.md "Channel protocol"): many
 * connections multiplexed over one virtio-serial byte stream. Pure: encode and decode only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* Header, 20 bytes, big-endian:
 *   0 magic "LV"   2 version (1)   3 type   4 connection id   8 payload length
 *  12 CRC-32 of the payload   16 CRC-32 of bytes 0..15
 * The two CRCs let a receiver that joins mid-stream (a supervisor reconnecting to QEMU's socket,
 * an agent restarting) find the next frame boundary: bytes that do not start a valid frame are
 * skipped, one at a time, and counted. */
#define VM_FRAME_MAGIC 0x4c56u
#define VM_FRAME_VERSION 1
#define VM_FRAME_HEADER 20
#define VM_FRAME_MAX_PAYLOAD (64 * 1024)

enum vm_frame_type {
    VM_FRAME_HELLO = 1, /* conn 0, JSON: each side's facts; a HELLO resets every connection */
    VM_FRAME_OPEN = 2, /* host → guest, JSON request: {"kind": "mgmt"} or {"kind": "exec", ...} */
    VM_FRAME_DATA = 3, /* bytes: socket data, stdin, stdout */
    VM_FRAME_STDERR = 4, /* bytes: an exec's stderr (guest → host) */
    VM_FRAME_EOF = 5,    /* the sender will send no more DATA on this connection */
    VM_FRAME_CLOSE = 6,  /* the connection is gone; optional JSON {"error": "..."} */
    VM_FRAME_EXIT = 7,   /* exec: JSON {"code": N} or {"signal": N}; follows all output */
    VM_FRAME_WINDOW = 8, /* 4-byte credit increment: the receiver drained that many bytes */
    VM_FRAME_EVENT = 9,  /* conn 0, JSON notification ({"event": "shutdown"}, ...) */
    VM_FRAME_PING = 10,  /* conn 0, answered by PONG with the same payload */
    VM_FRAME_PONG = 11,
    VM_FRAME_RESIZE = 12, /* exec with a tty: 4 bytes rows(2) cols(2) */
    VM_FRAME_TYPE_MAX = 12,
};

/* Credit each direction of a connection starts with; DATA and STDERR spend it, WINDOW refills. */
#define VM_FRAME_WINDOW_INITIAL (256 * 1024)

struct vm_frame {
    uint8_t type;
    uint32_t conn;
    const uint8_t *payload; /* points into the decoded buffer */
    uint32_t len;
};

const char *vm_frame_type_name(int type);

/* Append one frame to out. -EINVAL for an unknown type, -E2BIG for a payload over the maximum. */
int vm_frame_encode(struct lbuf *out, uint8_t type, uint32_t conn, const void *payload, size_t len);
int vm_frame_encode_window(struct lbuf *out, uint32_t conn, uint32_t credit);

/* Look for one frame at the start of buf[0..len).
 * Returns 1 with *ret set (pointing into buf) and *ret_used = bytes the frame spans, plus any
 * garbage before it; 0 when more bytes are needed (*ret_used = garbage that may be dropped now).
 * Never fails: malformed input is skipped and counted in *ret_skipped (may be NULL). */
int vm_frame_decode(const uint8_t *buf, size_t len, struct vm_frame *ret, size_t *ret_used,
                    size_t *ret_skipped);

/* A WINDOW frame's credit; -EINVAL when the payload is not 4 bytes or the credit is 0. */
int vm_frame_window_credit(const struct vm_frame *f, uint32_t *ret);
