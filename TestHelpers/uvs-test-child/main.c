// A helper the tests spawn: small, fast to start, and exact about what it sees.
//   fds                    print each open descriptor number, one per line
//   exit N                 exit with status N
//   ignore-term            ignore SIGTERM, print "ready", then sleep until killed
//   sleep SECONDS          sleep, then exit 0
//   grandchildren N        fork N children that sleep 60 s, print their pids, then wait
//   env NAME               print the value of NAME (or "<unset>")
//   cwd                    print the working directory
//   stamp FILE             append CLOCK_MONOTONIC nanoseconds to FILE, then sleep 60 s
//   flood BYTES            write BYTES bytes without a newline, then exit 0
//   abort                  abort()
//   signals                print the SigBlk, SigIgn and SigCgt lines of /proc/self/status
//   trim-pages DIR         check cuvs_release_clean_file_pages (single-threaded, as it requires):
//                          of two private mappings of a file of "A"s in DIR, the clean one's pages
//                          go and come back with the file's bytes, the written one (read-only
//                          since, like relocated data) keeps its "B"; prints what it saw, exits 0
//                          only if all held
//   sched TID              print "spawner:P self:Q nice:N", read first thing: P the scheduling
//                          policy of thread TID of the parent (the thread that spawned this
//                          child), Q this process's (SCHED_RESET_ON_FORK included), N its nice
//                          value
//   stdio                  print "N:TARGET:MODE" for descriptors 0, 1 and 2 (MODE r, w or rw)
//   spawn-in-place         make fd 5 a close-on-exec copy of stdout, cuvs_spawn this helper in
//                          "fds" mode with 3 and 4 as gaps and 5 passed as itself (already in
//                          its place), and exit with its status
//   posix-spawn-stdin-closed FILE
//                          close fd 0, open FILE (it becomes fd 0), posix_spawn (the Dispatch
//                          runtime's spawn) `echo hello` with stdin /dev/null and stdout FILE,
//                          and exit with the child's status
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "CUVShims.h"

// The resident kilobytes of this process's mapping that starts at `address`, or -1.
static long resident_kb(const void *address) {
    char wanted[32];
    snprintf(wanted, sizeof wanted, "%lx-", (unsigned long)address);
    FILE *smaps = fopen("/proc/self/smaps", "re");
    if (smaps == NULL) return -1;
    char line[512];
    int in_mapping = 0;
    long found = -1;
    while (fgets(line, sizeof line, smaps) != NULL) {
        if (strncmp(line, wanted, strlen(wanted)) == 0) in_mapping = 1;
        else if (in_mapping && strncmp(line, "Rss:", 4) == 0) { found = strtol(line + 4, NULL, 10); break; }
    }
    fclose(smaps);
    return found;
}

static int trim_pages(const char *directory) {
    char path[4096];
    snprintf(path, sizeof path, "%s/pages", directory);
    const size_t size = 16 * 1024;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { perror("open"); return 2; }
    char bytes[16 * 1024];
    memset(bytes, 'A', sizeof bytes);
    if (write(fd, bytes, size) != (ssize_t)size) { perror("write"); return 2; }
    volatile char *clean = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    char *written = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink(path);
    if (clean == MAP_FAILED || written == MAP_FAILED) { perror("mmap"); return 2; }
    int sum = 0;
    for (size_t offset = 0; offset < size; offset += 4096) sum += clean[offset];
    written[0] = 'B';
    mprotect(written, size, PROT_READ);
    long before = resident_kb((const void *)clean);
    long released = cuvs_release_clean_file_pages();
    long after = resident_kb((const void *)clean);
    char kept = written[0];
    char again = clean[4096];
    long back = resident_kb((const void *)clean);
    printf("read %d, clean mapping %ld KiB resident before, %ld after, %ld after a read; released %ld KiB; written page '%c', clean page '%c'\n",
           sum, before, after, back, released, kept, again);
    return (sum == 4 * 'A' && before >= 4 && released > 0 && after == 0 && back > 0 && kept == 'B' && again == 'A') ? 0 : 1;
}

static int list_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return 2;
    int self = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (atoi(e->d_name) == self) continue;
        printf("%s\n", e->d_name);
    }
    closedir(dir);
    return 0;
}

static int posix_spawn_stdin_closed(const char *path) {
    close(0);
    int file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (file != 0) { fprintf(stderr, "expected the file at fd 0, got %d\n", file); return 70; }
    char *argv[] = { "/bin/sh", "-c", "echo hello", NULL };
    char *envp[] = { "PATH=/usr/bin:/bin", NULL };
    cuvs_spawn_options options;
    memset(&options, 0, sizeof options);
    options.file = "/bin/sh";
    options.argv = argv;
    options.envp = envp;
    options.stdio_fds[0] = -1;     // /dev/null
    options.stdio_fds[1] = file;   // fd 0 in this process
    options.stdio_fds[2] = 2;
    int pidfd = -1;
    int pid = cuvs_posix_spawn(&options, &pidfd);
    if (pid < 0) { fprintf(stderr, "spawn: %s\n", strerror(-pid)); return 71; }
    int status = 0;
    waitpid(pid, &status, 0);
    if (pidfd >= 0) close(pidfd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: uvs-test-child MODE [ARG]\n"); return 64; }
    const char *mode = argv[1];
    if (strcmp(mode, "posix-spawn-stdin-closed") == 0 && argc > 2) return posix_spawn_stdin_closed(argv[2]);
    const char *arg = argc > 2 ? argv[2] : NULL;
    if (!strcmp(mode, "sched") && arg) {
        int spawner = sched_getscheduler(atoi(arg));
        int self = sched_getscheduler(0);
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, 0);
        printf("spawner:%d self:%d nice:%d\n", spawner, self, errno ? -100 : nice);
        return 0;
    }
    if (!strcmp(mode, "stdio")) {
        // Gathered first: stdout may be one of the three.
        char lines[3][300];
        for (int fd = 0; fd < 3; fd++) {
            char link[32], target[256];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t length = readlink(link, target, sizeof target - 1);
            target[length < 0 ? 0 : length] = 0;
            int flags = fcntl(fd, F_GETFL);
            int access = flags < 0 ? -1 : (flags & O_ACCMODE);
            const char *shown = access == O_RDONLY ? "r" : access == O_WRONLY ? "w" : access == O_RDWR ? "rw" : "closed";
            snprintf(lines[fd], sizeof lines[fd], "%d:%s:%s", fd, target, shown);
        }
        for (int fd = 0; fd < 3; fd++) printf("%s\n", lines[fd]);
        return 0;
    }
    if (!strcmp(mode, "spawn-in-place")) {
        // Here only 0, 1 and 2 are open (a pidfd spawn gives nothing else), so 5 is free.
        if (fcntl(1, F_DUPFD_CLOEXEC, 5) != 5) return 70;
        extern char **environ;
        char *args[] = { argv[0], "fds", NULL };
        int extra[] = { -1, -1, 5 };
        cuvs_spawn_options options;
        memset(&options, 0, sizeof options);
        options.file = argv[0];
        options.argv = args;
        options.envp = environ;
        options.stdio_fds[0] = 0;
        options.stdio_fds[1] = 1;
        options.stdio_fds[2] = 2;
        options.extra_fds = extra;
        options.extra_count = 3;
        int pidfd = -1;
        int pid = cuvs_spawn(&options, &pidfd, NULL);
        if (pid < 0) { fprintf(stderr, "spawn: %s\n", strerror(-pid)); return 71; }
        int status = 0;
        waitpid(pid, &status, 0);
        if (pidfd >= 0) close(pidfd);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (!strcmp(mode, "fds")) return list_fds();
    if (!strcmp(mode, "trim-pages") && arg) return trim_pages(arg);
    if (!strcmp(mode, "exit")) return arg ? atoi(arg) : 0;
    if (!strcmp(mode, "ignore-term")) {
        signal(SIGTERM, SIG_IGN);
        printf("ready\n"); fflush(stdout);
        for (;;) pause();
    }
    if (!strcmp(mode, "sleep")) { sleep(arg ? (unsigned)atoi(arg) : 60); return 0; }
    if (!strcmp(mode, "grandchildren")) {
        int n = arg ? atoi(arg) : 2;
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) { sleep(60); _exit(0); }
            printf("%d\n", (int)pid);
        }
        fflush(stdout);
        while (wait(NULL) > 0) {}
        return 0;
    }
    if (!strcmp(mode, "env")) { const char *v = arg ? getenv(arg) : NULL; printf("%s\n", v ? v : "<unset>"); return 0; }
    if (!strcmp(mode, "cwd")) { char buf[4096]; if (!getcwd(buf, sizeof buf)) return 2; printf("%s\n", buf); return 0; }
    if (!strcmp(mode, "stamp")) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        int fd = open(arg, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd < 0) return 2;
        dprintf(fd, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        close(fd);
        sleep(60);
        return 0;
    }
    if (!strcmp(mode, "flood")) {
        long n = arg ? atol(arg) : 1 << 20;
        char chunk[4096]; memset(chunk, 'x', sizeof chunk);
        while (n > 0) { long k = n < (long)sizeof chunk ? n : (long)sizeof chunk; if (write(1, chunk, (size_t)k) < 0) return 3; n -= k; }
        return 0;
    }
    if (!strcmp(mode, "abort")) abort();
    if (!strcmp(mode, "signals")) {
        FILE *status = fopen("/proc/self/status", "r");
        if (!status) return 2;
        char line[256];
        while (fgets(line, sizeof line, status)) {
            if (!strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7) || !strncmp(line, "SigCgt:", 7)) fputs(line, stdout);
        }
        fclose(status);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 64;
}
