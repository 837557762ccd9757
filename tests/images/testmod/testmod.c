/* testmod.c — a tiny, static test module for the system tests (image "ledge-testmod"). Its
 * behaviour comes from the environment:
 *   TESTMOD_PRINT_MS            print a numbered line to stdout every N ms (default 1000)
 *   TESTMOD_EXIT_AFTER_MS       exit after N ms with TESTMOD_EXIT_CODE (default 0)
 *   TESTMOD_UNHEALTHY_AFTER_MS  make the HEALTHCHECK (`testmod health`) fail after N ms
 *   TESTMOD_MARK                a word printed in the first line (to tell instances apart)
 *   TESTMOD_ALLOC_KB            allocate and touch N KiB at the start, held (memory metrics)
 *   TESTMOD_BUSY_MS             spin N ms of CPU at each tick (CPU metrics)
 *   TESTMOD_IO_KB               at each tick write N KiB to /testmod.io, fdatasync it, drop it
 *                               from the page cache and read it back (the module's disk I/O)
 * It also prints the IOTEDGE_* variables it was given, so tests can check the environment. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

extern char **environ;

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static void on_term(int sig)
{
    _exit(0);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "health") == 0)
        return access("/healthy", F_OK) == 0 ? 0 : 1;
    signal(SIGTERM, on_term);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open("/healthy", O_CREAT | O_WRONLY, 0644);
    if (fd >= 0)
        close(fd);
    const char *mark = getenv("TESTMOD_MARK");
    printf("testmod starting%s%s\n", mark ? " " : "", mark ? mark : "");
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "IOTEDGE_", 8) == 0 || strncmp(*e, "RuntimeLogLevel=", 16) == 0)
            printf("env %s\n", *e);
    long print_ms = env_long("TESTMOD_PRINT_MS", 1000);
    long exit_after = env_long("TESTMOD_EXIT_AFTER_MS", -1);
    long unhealthy_after = env_long("TESTMOD_UNHEALTHY_AFTER_MS", -1);
    int code = (int)env_long("TESTMOD_EXIT_CODE", 0);
    long alloc_kb = env_long("TESTMOD_ALLOC_KB", 0);
    long busy_ms = env_long("TESTMOD_BUSY_MS", 0);
    long io_kb = env_long("TESTMOD_IO_KB", 0);
    if (alloc_kb > 0) {
        char *mem = malloc((size_t)alloc_kb * 1024);
        if (mem) {
            memset(mem, 1, (size_t)alloc_kb * 1024);
            printf("allocated %ld KiB at %p\n", alloc_kb, (void *)mem); /* kept: never freed */
        }
    }
    char *io_buf = io_kb > 0 ? malloc((size_t)io_kb * 1024) : NULL;
    if (io_buf)
        memset(io_buf, 'x', (size_t)io_kb * 1024);
    long start = now_ms(), n = 0;
    for (;;) {
        long t = now_ms() - start;
        if (exit_after >= 0 && t >= exit_after) {
            printf("testmod exiting with %d\n", code);
            return code;
        }
        if (unhealthy_after >= 0 && t >= unhealthy_after)
            unlink("/healthy");
        if (busy_ms > 0)
            for (long until = now_ms() + busy_ms; now_ms() < until;)
                ;
        if (io_buf) {
            int io = open("/testmod.io", O_RDWR | O_CREAT | O_TRUNC, 0644);
            size_t len = (size_t)io_kb * 1024;
            if (io < 0 || write(io, io_buf, len) != (ssize_t)len || fdatasync(io) < 0 ||
                posix_fadvise(io, 0, 0, POSIX_FADV_DONTNEED) != 0 ||
                pread(io, io_buf, len, 0) != (ssize_t)len)
                printf("io failed\n");
            if (io >= 0)
                close(io);
        }
        printf("tick %ld\n", n++);
        usleep((useconds_t)(print_ms > 0 ? print_ms : 1000) * 1000);
    }
}
