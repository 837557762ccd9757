/* tcp.h — listening TCP sockets from "HOST:PORT" text (IPv4, or [IPv6]:PORT), and whether an
 * address is loopback (the dashboard serves plain HTTP only there). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Split "127.0.0.1:8484" or "[::1]:8484" into a numeric host and a port (1..65535). -EINVAL
 * for anything else (host names included: a listener binds an address). */
int net_hostport_parse(const char *text, char *host, size_t host_size, int *ret_port);
/* Is host (numeric, as net_hostport_parse gives it) a loopback address? */
bool net_host_is_loopback(const char *host);
/* Bind and listen on text (SO_REUSEADDR, non-blocking, close-on-exec); the fd or -errno. */
int net_tcp_listen(const char *text, int backlog);
