/*
 * contiv-cni, the executable a container runtime runs: a small C program that forwards
 * the call to netplugin, where the CNI logic (drivers/cni/main.py) runs already loaded.
 *
 * Why.  A runtime executes the plugin for every command: podman four times per
 * `run --rm` (VERSION, ADD, VERSION, DEL).  As a Python program each run paid its
 * start-up before any work: ~8 ms for VERSION (answered from a table), ~20 ms for ADD
 * and DEL (interpreter 7 + json/re 7 + typing/decimal/shapes 5 ms), against 2.6 ms for
 * the reference `bridge` plugin (a Go binary).  With the lean Python launcher podman
 * through contiv-cni was 1.31x `bridge` (+61 ms per container; the target, issue 8
 * item 4, is <= 1.1x, ~+20 ms), while netplugin's own work is ~16 ms for ADD and
 * ~24 ms for DEL (the kernel's veth delete, which `bridge` pays too).  So the
 * decision: the program a runtime executes is this shim (libc only, a millisecond);
 * the CNI logic stays the Python of drivers/cni/main.py, run inside netplugin by its
 * `POST /v1/cni` route (contiv_sdn/agent/cni_route.py): one implementation, two ways
 * in, the same answer byte for byte.
 *
 * What it does.  A runtime's usual VERSION query (podman asks twice per container, always
 * with libcni's stdin {"cniVersion":"X"}) it answers itself from the table of
 * drivers/cni/versions.py (the versions are compiled in from there: CNI_VERSIONS), as
 * the Python launcher does: that query names no socket, so forwarding it would go to
 * the default socket.  Otherwise it reads stdin (at most MAX_STDIN bytes), takes the environment's CNI_*
 * variables (all of them: the Python side decides what they mean), finds netplugin's
 * socket (the network configuration's top-level "socket", else DEFAULT_SOCKET), and
 * sends  POST /v1/cni  with the body  NAME=VALUE\0 ... \0 <stdin bytes>  (names and
 * values cannot hold a NUL, so the framing is exact; stdin may hold anything).  The
 * reply's body is the plugin's stdout, its X-CNI-Exit header the exit status.
 *
 * What it does not do: guess.  Whenever it cannot give the answer for certain --
 * stdin over the bound or unreadable, the configuration not a plain JSON object, the
 * "socket" key spelled with escapes, in another case, twice, or not a plain absolute
 * path, no netplugin on the socket (ENOENT, ECONNREFUSED, EACCES, ...), an answer
 * that is not this route's (an older netplugin: 404), a timeout -- it execs the Python
 * plugin (FALLBACK, the lean launcher written next to it) with the same argv and
 * environment and the stdin it read given back, so every answer the shim cannot give
 * is exactly the Python plugin's (e.g. code 11 "netplugin is not running").
 *
 * Build: python -m drivers.cni.launcher --native DEST  (cc -O2, -DFALLBACK=DEST.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef FALLBACK
#error "build with -DFALLBACK='\"/path/of/the/python/launcher\"' (python -m drivers.cni.launcher --native DEST)"
#endif
#ifndef CNI_VERSIONS
#error "build with -DCNI_VERSIONS='\"0.3.0\",...' (drivers/cni/versions.py SUPPORTED)"
#endif
#ifndef DEFAULT_SOCKET
#define DEFAULT_SOCKET "/run/contiv/netplugin.sock" /* drivers/cni/main.py DEFAULT_SOCKET */
#endif

#define MAX_STDIN ((size_t)4 << 20)  /* a network configuration is a few KiB */
#define MAX_REPLY ((size_t)16 << 20) /* the plugin's stdout: a CNI result or error */
#define MAX_DEPTH 512                /* deeper JSON: not scanned, the fallback parses it */
/* One deadline for the whole exchange: drivers/cni/netplugin.py TIMEOUT (an ADD may
 * take seconds: veth, the netmaster's address, OVS) plus a margin for the plugin's
 * own work around its calls. */
#define TIMEOUT_MS 150000

extern char **environ;

static char *in;         /* stdin as read */
static size_t in_len;
static int in_touched;   /* something was read from fd 0: give it back before exec */
static int in_eof;       /* stdin was read to its end */

static void fallback(char **argv) __attribute__((noreturn));

/* -- stdin ---------------------------------------------------------------------- */

/* 0: all of stdin read (at most MAX_STDIN); -1: over the bound or unreadable. */
static int read_stdin(void)
{
    size_t cap = 0;
    if (isatty(0)) { /* as the Python plugin: a terminal is no configuration */
        in_eof = 1;
        return 0;
    }
    for (;;) {
        if (in_len == cap) {
            if (cap > MAX_STDIN)
                return -1;
            size_t grow = cap ? cap * 2 : 16384;
            char *more = realloc(in, grow);
            if (more == NULL)
                return -1;
            in = more;
            cap = grow;
        }
        ssize_t n = read(0, in + in_len, cap - in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n > 0)
            in_touched = 1;
        if (n == 0) {
            in_eof = 1;
            return in_len > MAX_STDIN ? -1 : 0;
        }
        in_len += (size_t)n;
    }
}

/* -- the top-level "socket" of the network configuration ----------------------- */

static const char *p, *end;

static void blanks(void)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
}

/* A JSON string at p ('"'); its raw bytes in *s, *n; *esc: it holds a backslash. */
static int string(const char **s, size_t *n, int *esc)
{
    *esc = 0;
    p++;
    *s = p;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *n = (size_t)(p - *s);
            p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            *esc = 1;
            p += 2;
            continue;
        }
        p++;
    }
    return -1;
}

/* Skip one value (any JSON value: nesting and strings tracked, scalars not checked --
 * the Python side parses strictly; here only the top level's keys matter). */
static int skip_value(void)
{
    char stack[MAX_DEPTH];
    int depth = 0;
    blanks();
    if (p >= end)
        return -1;
    for (;;) {
        if (p >= end)
            return -1;
        char c = *p;
        if (c == '"') {
            const char *s;
            size_t n;
            int esc;
            if (string(&s, &n, &esc) < 0)
                return -1;
        } else if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH)
                return -1;
            stack[depth++] = c == '{' ? '}' : ']';
            p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return 0; /* the end of the object holding this value */
            if (stack[--depth] != c)
                return -1;
            p++;
        } else if (c == ',' && depth == 0) {
            return 0;
        } else {
            p++;
        }
    }
}

/* Folds (as Go's json does: any case, U+017F for s, U+212A for k) to "socket"? A key
 * with non-ASCII bytes short enough to be such a spelling counts as one. */
static int maybe_socket(const char *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] >= 0x80)
            return n <= 18;
    return n == 6 && strncasecmp(k, "socket", 6) == 0;
}

/* 1: found, in *sock (NUL-terminated copy); 0: no such key; -1: in doubt. */
static int find_socket(char *sock, size_t size)
{
    int found = 0;
    p = in;
    end = in + in_len;
    blanks();
    if (p >= end || *p != '{')
        return -1;
    p++;
    blanks();
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *k, *v;
            size_t kn, vn;
            int esc;
            blanks();
            if (p >= end || *p != '"' || string(&k, &kn, &esc) < 0 || esc)
                return -1; /* a key spelled with escapes may be "socket": no guessing */
            blanks();
            if (p >= end || *p != ':')
                return -1;
            p++;
            blanks();
            if (maybe_socket(k, kn)) {
                if (found || kn != 6 || memcmp(k, "socket", 6) != 0)
                    return -1; /* twice, or another spelling of it */
                if (p >= end || *p != '"' || string(&v, &vn, &esc) < 0 || esc)
                    return -1;
                if (vn == 0 || vn >= size || v[0] != '/' || memchr(v, '\0', vn))
                    return -1;
                memcpy(sock, v, vn);
                sock[vn] = '\0';
                found = 1;
            } else if (skip_value() < 0) {
                return -1;
            }
            blanks();
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return -1;
        }
    }
    blanks();
    return p == end ? found : -1;
}

/* -- a runtime's usual VERSION query: drivers/cni/versions.py's table, in C ------- */

static const char *const versions[] = {CNI_VERSIONS};
#define NVERSIONS (sizeof versions / sizeof versions[0])

/* Exits with the answer if stdin is {"cniVersion":"V"} or {"cniVersion": "V"} (JSON
 * blanks around) for a V we speak, exactly as versions.canned_version_answer. */
static void canned_version(void)
{
    const char *s = in, *e = in + in_len;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    static const char key[] = "{\"cniVersion\":";
    size_t n = (size_t)(e - s), kn = sizeof key - 1;
    if (n < kn + 4 || memcmp(s, key, kn) != 0 || memcmp(e - 2, "\"}", 2) != 0)
        return;
    s += kn;
    if (*s == ' ')
        s++;
    if (*s != '"')
        return;
    s++;
    e -= 2;
    for (size_t i = 0; i < NVERSIONS; i++) {
        size_t vn = strlen(versions[i]);
        if ((size_t)(e - s) != vn || memcmp(s, versions[i], vn) != 0)
            continue;
        char out[1024];
        size_t w = (size_t)snprintf(out, sizeof out, "{\"cniVersion\": \"%s\", "
                                    "\"supportedVersions\": [", versions[i]);
        for (size_t j = 0; j < NVERSIONS && w < sizeof out; j++)
            w += (size_t)snprintf(out + w, sizeof out - w, "%s\"%s\"", j ? ", " : "",
                                  versions[j]);
        if (w + 3 >= sizeof out)
            return; /* cannot happen with a sane table; the fallback answers */
        memcpy(out + w, "]}\n", 3);
        w += 3;
        signal(SIGPIPE, SIG_IGN);
        const char *b = out;
        while (w > 0) {
            ssize_t k = write(1, b, w);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                _exit(1);
            b += k;
            w -= (size_t)k;
        }
        _exit(0);
    }
}

/* -- the exchange with netplugin ---------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to be ready for events before the deadline: 0 ready, -1 not. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {fd, events, 0};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        return r > 0 ? 0 : -1;
    }
}

static int send_all(int fd, const char *buf, size_t len, long long deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0)
                return -1;
            continue;
        }
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The request: head, then each CNI_* variable as NAME=VALUE\0, an empty entry, stdin. */
static char *request(size_t *len)
{
    size_t body = 1 + in_len;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CNI_", 4) == 0 && strchr(*e, '='))
            body += strlen(*e) + 1;
    char head[200];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/cni HTTP/1.0\r\nHost: netplugin\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n",
                      body);
    if (hn < 0 || (size_t)hn >= sizeof head)
        return NULL;
    char *buf = malloc((size_t)hn + body);
    if (buf == NULL)
        return NULL;
    char *w = buf;
    memcpy(w, head, (size_t)hn);
    w += hn;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CNI_", 4) == 0 && strchr(*e, '=')) {
            size_t n = strlen(*e) + 1; /* with its NUL */
            memcpy(w, *e, n);
            w += n;
        }
    *w++ = '\0';
    if (in_len)
        memcpy(w, in, in_len);
    *len = (size_t)hn + body;
    return buf;
}

/* The value of header `name` (case-insensitive) in head[0:n], or NULL; *vn its length. */
static const char *header(const char *head, size_t n, const char *name, size_t *vn)
{
    size_t nl = strlen(name);
    const char *line = memchr(head, '\n', n);
    const char *stop = head + n;
    while (line != NULL && line + 1 < stop) {
        const char *s = line + 1;
        const char *e = memchr(s, '\n', (size_t)(stop - s));
        if (e == NULL)
            e = stop;
        size_t len = (size_t)(e - s);
        if (len > 0 && s[len - 1] == '\r')
            len--;
        if (len > nl && strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            const char *v = s + nl + 1;
            const char *ve = s + len;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vn = (size_t)(ve - v);
            return v;
        }
        line = e < stop ? e : NULL;
    }
    return NULL;
}

/* A decimal number of at most `digits` digits, or -1. */
static long number(const char *s, size_t n, size_t digits)
{
    long v = 0;
    if (n == 0 || n > digits)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Ask netplugin on `path`; writes its answer and exits, or returns (then: fallback). */
static void forward(const char *path)
{
    long long deadline = now_ms() + TIMEOUT_MS;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (errno != EINPROGRESS)
            goto out; /* ENOENT, ECONNREFUSED, EACCES, EAGAIN (backlog full), ...: the
                       * Python plugin says so, or waits its turn */
        if (wait_fd(fd, POLLOUT, deadline) < 0)
            goto out;
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0)
            goto out;
    }
    size_t len;
    char *req = request(&len);
    if (req == NULL)
        goto out;
    int sent = send_all(fd, req, len, deadline);
    free(req);
    if (sent < 0)
        goto out;

    size_t cap = 65536, got = 0;
    char *reply = malloc(cap);
    if (reply == NULL)
        goto out;
    for (;;) {
        if (got == cap) {
            if (cap > MAX_REPLY)
                goto drop;
            char *more = realloc(reply, cap * 2);
            if (more == NULL)
                goto drop;
            reply = more;
            cap *= 2;
        }
        ssize_t n = recv(fd, reply + got, cap - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN, deadline) < 0)
                goto drop;
            continue;
        }
        if (n < 0)
            goto drop;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    fd = -1;

    /* "HTTP/1.x 200 ...", a Content-Length equal to the body's, an X-CNI-Exit: else
     * this is not the route's answer (404 of an older netplugin, 400, a stranger) */
    const char *sep = NULL;
    for (size_t i = 0; i + 3 < got; i++)
        if (memcmp(reply + i, "\r\n\r\n", 4) == 0) {
            sep = reply + i;
            break;
        }
    if (sep == NULL || got < 12 || memcmp(reply, "HTTP/1.", 7) != 0
        || memcmp(reply + 8, " 200", 4) != 0)
        goto drop;
    size_t hn = (size_t)(sep - reply), vn;
    const char *body = sep + 4;
    size_t blen = got - hn - 4;
    const char *v = header(reply, hn, "X-CNI-Exit", &vn);
    long status = v ? number(v, vn, 3) : -1;
    v = header(reply, hn, "Content-Length", &vn);
    long clen = v ? number(v, vn, 9) : -1;
    if (status < 0 || status > 255 || clen < 0 || (size_t)clen != blen)
        goto drop;

    /* the answer: the plugin's stdout and status (a closed stdout: exit 1, as Python) */
    signal(SIGPIPE, SIG_IGN);
    while (blen > 0) {
        ssize_t n = write(1, body, blen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(status ? (int)status : 1);
        body += n;
        blen -= (size_t)n;
    }
    _exit((int)status);
drop:
    free(reply);
out:
    if (fd >= 0)
        close(fd);
}

/* -- the fallback: the Python plugin, with the stdin read here given back -------- */

static int write_fd(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void fail(const char *what, int err) __attribute__((noreturn));
static void fail(const char *what, int err)
{
    /* CNI error JSON (the runtime shows msg); what and strerror hold no '"' or '\' */
    printf("{\"cniVersion\": \"1.1.0\", \"code\": 999, \"msg\": \"contiv-cni: %s: %s\", "
           "\"details\": \"write the plugin again: python -m drivers.cni.launcher --native "
           "<this file>\"}\n", what, strerror(err));
    fflush(stdout);
    _exit(1);
}

static void fallback(char **argv)
{
    if (in_touched) {
        int fd = memfd_create("contiv-cni-stdin", MFD_CLOEXEC);
#ifdef O_TMPFILE
        if (fd < 0)
            fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
        if (fd < 0)
            fail("cannot keep stdin for " FALLBACK, errno);
        if (write_fd(fd, in, in_len) < 0)
            fail("cannot keep stdin for " FALLBACK, errno);
        if (!in_eof) { /* over the bound: the rest is still in fd 0 */
            char buf[65536];
            for (;;) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    break; /* an error: the Python plugin gets what there was */
                if (write_fd(fd, buf, (size_t)n) < 0)
                    fail("cannot keep stdin for " FALLBACK, errno);
            }
        }
        if (lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0)
            fail("cannot give stdin to " FALLBACK, errno);
        close(fd);
    }
    signal(SIGPIPE, SIG_DFL);
    execv(FALLBACK, argv);
    fail("cannot run " FALLBACK, errno);
}

int main(int argc, char **argv)
{
    static char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
    (void)argc;
    if (read_stdin() < 0)
        fallback(argv);
    const char *command = getenv("CNI_COMMAND");
    if (command != NULL && strcmp(command, "VERSION") == 0)
        canned_version();
    int found = find_socket(sock, sizeof sock);
    if (found < 0)
        fallback(argv);
    forward(found ? sock : DEFAULT_SOCKET);
    fallback(argv);
}
