// The child process of the process benchmarks (all sides spawn this same program).
//   pulse FILE   append "S <monotonic ns>" when main starts, sleep 50 ms, append "E <ns>", exit 0
//   notify-pulse FILE  send READY=1 to $NOTIFY_SOCKET at once, sleep 50 ms, append "E <ns>", exit 0
//   notify-sleep       send READY=1 to $NOTIFY_SOCKET, then sleep for an hour
//   exit         exit 0 at once
//   sleep        sleep for an hour
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

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
    if ((!strcmp(argv[1], "notify-pulse") && argc > 2) || !strcmp(argv[1], "notify-sleep")) {
        const char *name = getenv("NOTIFY_SOCKET");
        if (name == NULL || strlen(name) < 2 || strlen(name) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return 3;
        struct sockaddr_un address;
        memset(&address, 0, sizeof(address));
        address.sun_family = AF_UNIX;
        memcpy(address.sun_path, name, strlen(name));
        if (name[0] == '@') address.sun_path[0] = 0;   // abstract
        int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0) return 4;
        if (sendto(sock, "READY=1", 7, 0, (struct sockaddr *)&address,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))) < 0) return 5;
        close(sock);
        if (!strcmp(argv[1], "notify-sleep")) { sleep(3600); return 0; }
        struct timespec pause = { 0, 50 * 1000 * 1000 };
        nanosleep(&pause, NULL);
        int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return 2;
        dprintf(fd, "E %lld\n", now_ns());
        close(fd);
        return 0;
    }
    return 64;
}
