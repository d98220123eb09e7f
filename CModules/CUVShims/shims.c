#define _GNU_SOURCE
#include "CUVShims.h"
#include <uv.h>

#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int cuvs_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int cuvs_pidfd_send_signal(int pidfd, int signal) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}

int cuvs_pidfd_reap(int pidfd, int *exit_code, int *term_signal) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) != 0) return -1;
    if (info.si_pid == 0) return 0;
    *exit_code = 0;
    *term_signal = 0;
    if (info.si_code == CLD_EXITED) *exit_code = info.si_status;
    else *term_signal = info.si_status;
    return 1;
}

int cuvs_set_child_subreaper(int on) {
    return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0);
}

int cuvs_cloexec_from(int lowfd) {
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) return -1;
    int self = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9' || fd < lowfd || fd == self) continue;
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(dir);
    return 0;
}

int cuvs_errno(void) { return errno; }

int cuvs_loop_configure_idle_time(void *loop) {
    return uv_loop_configure((uv_loop_t *)loop, UV_METRICS_IDLE_TIME);
}

extern char **environ;
char **cuvs_environ(void) { return environ; }

// The child half of cuvs_spawn. It runs on the parent's memory (vfork), so it may only
// call async-signal-safe functions and write nothing but `*child_errno`.
static void spawn_child(const cuvs_spawn_options *o, pid_t parent, volatile int *child_errno) {
    // Handlers of the parent must not run in the child; reset every caught signal.
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN && old.sa_handler != SIG_DFL) {
            signal(sig, SIG_DFL);
        }
    }
    // SIGPIPE is ignored by most servers; a child expects the default.
    signal(SIGPIPE, SIG_DFL);
    if (o->new_session && setsid() < 0) goto fail;
    if (o->parent_death_signal > 0) {
        if (prctl(PR_SET_PDEATHSIG, o->parent_death_signal, 0, 0, 0) != 0) goto fail;
        // The parent may have died before prctl took effect.
        if (getppid() != parent) { *child_errno = ESRCH; _exit(127); }
    }
    // Install 0, 1, 2 and the extra descriptors at 3.. . Every source is first copied above
    // the target range, so installing one target cannot clobber another source.
    int total = 3 + o->extra_count;
    int sources[3 + 64];
    if (o->extra_count < 0 || o->extra_count > 64) { *child_errno = EINVAL; _exit(127); }
    for (int i = 0; i < total; i++) {
        int fd = i < 3 ? o->stdio_fds[i] : o->extra_fds[i - 3];
        if (fd < 0) {
            fd = open("/dev/null", i == 0 ? O_RDONLY : O_RDWR);
            if (fd < 0) goto fail;
        }
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, total);
        if (moved < 0) goto fail;
        sources[i] = moved;
    }
    for (int i = 0; i < total; i++) {
        if (dup2(sources[i], i) < 0) goto fail; // dup2 clears FD_CLOEXEC on the target
    }
    // Nothing else reaches the program, not even a descriptor another thread opened without
    // O_CLOEXEC a moment ago (the copies above are closed here too).
    if (syscall(SYS_close_range, (unsigned)total, ~0U, 0) != 0) {
        for (int fd = total; fd < 1024; fd++) close(fd);
    }
    if (o->cwd != NULL && chdir(o->cwd) != 0) goto fail;
    if (o->set_gid && setgid((gid_t)o->gid) != 0) goto fail;
    if (o->set_gid && setgroups(0, NULL) != 0) goto fail;
    if (o->set_uid && setuid((uid_t)o->uid) != 0) goto fail;
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    execve(o->file, o->argv, o->envp);
fail:
    *child_errno = errno;
    _exit(127);
}

int cuvs_spawn(const cuvs_spawn_options *options, int *pidfd_out) {
    *pidfd_out = -1;
    volatile int child_errno = 0;
    pid_t parent = getpid();
    // Block every signal so that no handler of ours runs on the shared stack in the child.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) {
        spawn_child(options, parent, &child_errno);
        _exit(127); // not reached
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return -fork_errno;
    if (child_errno != 0) {
        // The child failed before exec and has exited: reap it here, nobody else will.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -child_errno;
    }
    *pidfd_out = cuvs_pidfd_open(pid);
    return pid;
}
