// The child process of the process benchmarks (all sides spawn this same program).
//   pulse FILE   append "S <monotonic ns>" when main starts, sleep 50 ms, append "E <ns>", exit 0
//   exit         exit 0 at once
//   sleep        sleep for an hour
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long long started = now_ns();
    if (argc < 2) return 64;
    if (!strcmp(argv[1], "exit")) return 0;
    if (!strcmp(argv[1], "sleep")) { sleep(3600); return 0; }
    if (!strcmp(argv[1], "pulse") && argc > 2) {
        int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return 2;
        dprintf(fd, "S %lld\n", started);
        struct timespec pause = { 0, 50 * 1000 * 1000 };
        nanosleep(&pause, NULL);
        dprintf(fd, "E %lld\n", now_ns());
        close(fd);
        return 0;
    }
    return 64;
}
