/*
 * The smallest HTTP client chorusctl needs: one GET per connection
 * ("Connection: close"), the reply read up to its Content-Length (or the
 * close), bounded in size and time.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/error.h"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const struct cluster_addr *ctl_admin_addr(const struct cluster_node *node)
{
    return node->admin.port != 0 ? &node->admin : &node->gateway;
}

/* Waits for fd to become ready for `events` until the deadline. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return CH_ETIMEOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int rv = poll(&p, 1, (int)left);
        if (rv > 0)
            return 0;
        if (rv < 0 && errno != EINTR)
            return CH_EIO;
    }
}

/* Finds "\r\n\r\n"; returns the header length including it, or 0. */
static size_t header_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
            return i + 1;
    return 0;
}

int ctl_http_get(const struct cluster_addr *addr, const char *path, const char *token,
                 int timeout_ms, int *status, char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    long long deadline = now_ms() + timeout_ms;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(addr->port);
    if (inet_pton(AF_INET, addr->host, &sa.sin_addr) != 1)
        return CH_EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return CH_EIO;
    int rv = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return CH_EUNAVAILABLE;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if ((rv = wait_fd(fd, POLLOUT, deadline)) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            close(fd);
            return rv == CH_ETIMEOUT ? CH_ETIMEOUT : CH_EUNAVAILABLE;
        }
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\n%s%s%sConnection: close\r\n"
                     "Accept: application/json\r\n\r\n",
                     path, addr->host, addr->port, token[0] ? "Authorization: Bearer " : "",
                     token, token[0] ? "\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof req) {
        close(fd);
        return CH_EINVAL;
    }
    for (int off = 0; off < n;) {
        ssize_t w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w > 0) {
            off += (int)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if ((rv = wait_fd(fd, POLLOUT, deadline)) != 0)
                break;
        } else {
            rv = CH_EIO;
            break;
        }
    }
    size_t cap = 8192, got = 0, hdr = 0, want = (size_t)-1;
    char *buf = rv == 0 ? malloc(cap + 1) : NULL;
    if (rv == 0 && buf == NULL)
        rv = CH_ENOMEM;
    while (rv == 0 && (hdr == 0 || want == (size_t)-1 || got < hdr + want)) {
        if (got == cap) {
            if (cap >= CTL_HTTP_MAX_BODY + 8192) {
                rv = CH_EMALFORMED;
                break;
            }
            char *p = realloc(buf, cap * 2 + 1);
            if (p == NULL) {
                rv = CH_ENOMEM;
                break;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            if (hdr == 0 || want != (size_t)-1)
                rv = CH_EIO; /* closed before the whole reply */
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            rv = wait_fd(fd, POLLIN, deadline);
            continue;
        } else {
            rv = CH_EIO;
            break;
        }
        if (hdr == 0 && (hdr = header_end(buf, got)) != 0) {
            buf[hdr - 1] = 0;
            if (sscanf(buf, "HTTP/1.%*c %d", status) != 1) {
                rv = CH_EMALFORMED;
                break;
            }
            for (char *line = strstr(buf, "\r\n"); line != NULL;
                 line = strstr(line + 2, "\r\n")) {
                if (strncasecmp(line + 2, "content-length:", 15) == 0) {
                    unsigned long v = strtoul(line + 17, NULL, 10);
                    if (v > CTL_HTTP_MAX_BODY) {
                        rv = CH_EMALFORMED;
                        break;
                    }
                    want = v;
                }
            }
        }
    }
    close(fd);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    size_t blen = got - hdr;
    if (want != (size_t)-1 && blen > want)
        blen = want;
    memmove(buf, buf + hdr, blen);
    buf[blen] = 0;
    *body = buf;
    *len = blen;
    return 0;
}
