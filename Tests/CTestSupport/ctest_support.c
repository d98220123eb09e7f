#define _GNU_SOURCE
#include "CTestSupport.h"
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <string.h>

int ctest_thread_id(void) { return (int)gettid(); }

#include "CUVShims.h"
#include <pthread.h>
#include <time.h>

struct policy_watch {
    int thread_id, wanted, timeout_ms, release_fd;
    int last;
};

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *watch_policy(void *argument) {
    struct policy_watch *watch = argument;
    long long deadline = now_ms() + watch->timeout_ms;
    do {
        watch->last = sched_getscheduler(watch->thread_id);
        if (watch->last >= 0 && (watch->last & ~CTEST_SCHED_RESET_ON_FORK) == watch->wanted) break;
        struct timespec pause = { 0, 100000 };   // 0.1 ms
        nanosleep(&pause, NULL);
    } while (now_ms() < deadline);
    // Always let the child go on: the spawning thread waits for its execve.
    char byte = 1;
    while (write(watch->release_fd, &byte, 1) < 0) {}
    return NULL;
}

ctest_spawn_policies ctest_spawn_watching_policy(int child_runs_first, int wanted, int timeout_ms) {
    ctest_spawn_policies result = { -1, -1, -1 };
    int hold[2];
    if (pipe2(hold, O_CLOEXEC) != 0) return result;
    struct policy_watch watch = { (int)gettid(), wanted, timeout_ms, hold[1], -1 };
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_policy, &watch) != 0) {
        close(hold[0]);
        close(hold[1]);
        return result;
    }
    char *argv[] = { "true", NULL };
    char *envp[] = { NULL };
    cuvs_spawn_options options;
    memset(&options, 0, sizeof options);
    options.file = "/bin/true";
    options.argv = argv;
    options.envp = envp;
    options.stdio_fds[0] = options.stdio_fds[1] = options.stdio_fds[2] = -1;
    options.child_runs_first = child_runs_first;
    options.pause_before_exec_fd = hold[0];
    int pidfd = -1;
    result.spawned = cuvs_spawn(&options, &pidfd, NULL);
    result.after = sched_getscheduler(0);
    pthread_join(watcher, NULL);
    result.during = watch.last;
    if (result.spawned > 0) cuvs_reap_child(result.spawned);
    if (pidfd >= 0) close(pidfd);
    close(hold[0]);
    close(hold[1]);
    return result;
}
