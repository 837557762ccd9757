/* tcp.c — listening TCP sockets from "HOST:PORT" text (net/tcp.h). */
#include "net/tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/str.h"

int net_hostport_parse(const char *text, char *host, size_t host_size, int *ret_port)
{
    if (!text)
        return -EINVAL;
    const char *colon, *h = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -EINVAL;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= host_size || hlen >= INET6_ADDRSTRLEN)
        return -EINVAL;
    char buf[INET6_ADDRSTRLEN];
    memcpy(buf, h, hlen);
    buf[hlen] = 0;
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(text[0] == '[' ? AF_INET6 : AF_INET, buf, addr) != 1)
        return -EINVAL;
    unsigned long long port;
    if (lstr_to_u64(colon + 1, &port) < 0 || port < 1 || port > 65535)
        return -EINVAL;
    memcpy(host, buf, hlen + 1);
    *ret_port = (int)port;
    return 0;
}

bool net_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int net_tcp_listen(const char *text, int backlog)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    if (net_hostport_parse(text, host, sizeof(host), &port) < 0)
        return -EINVAL;
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int family;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        family = s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        family = s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof(*s6);
    } else
        return -EINVAL;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
