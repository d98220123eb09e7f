#define _GNU_SOURCE
#include "CUVShims.h"

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
#include <spawn.h>
#include <sched.h>

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

extern char **environ;
char **cuvs_environ(void) { return environ; }

// The child half of cuvs_spawn. It runs in the parent's memory (CLONE_VM) on a stack of its
// own until execve, so it makes raw system calls only: no libc wrapper that a sanitizer or the
// dynamic linker might intercept, no allocation, no locks. It writes nothing but `*child_errno`.

struct cuvs_kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

struct spawn_context {
    const cuvs_spawn_options *options;
    pid_t parent;
    volatile int child_errno;
    int report_fd;   // fork fallback: the child writes its errno here (-1 with shared memory)
    // Signals with a handler and ignored signals (bit n-1 for signal n), read by the parent;
    // `dispositions_known` is 0 when they could not be read, and the child then asks the
    // kernel about every signal.
    int dispositions_known;
    unsigned long long caught;
    unsigned long long ignored;
};

static void child_fail(struct spawn_context *ctx, int err) {
    ctx->child_errno = err;
    if (ctx->report_fd >= 0) syscall(SYS_write, ctx->report_fd, &err, sizeof err);
    syscall(SYS_exit_group, 127);
}

#define CHILD_FAIL(ctx, err) child_fail((ctx), (err))

// ThreadSanitizer's runtime, when present in the process (its interceptors apply to this file
// even though it is not instrumented itself).
extern void __tsan_init(void) __attribute__((weak));


__attribute__((no_sanitize("address", "thread", "undefined")))
static int spawn_child(void *argument) {
    struct spawn_context *ctx = argument;
    const cuvs_spawn_options *o = ctx->options;
    long r;
    // The parent's handlers must not run here: reset every caught signal to the default,
    // keep ignored ones ignored (except SIGPIPE, which a program expects at its default).
    struct cuvs_kernel_sigaction dfl = { (void *)SIG_DFL, 0, NULL, 0 };
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        if (ctx->dispositions_known) {
            // Known from the parent: only the signals that need a change cost a system call.
            unsigned long long bit = 1ULL << (sig - 1);
            int reset = (ctx->caught & bit) || (sig == SIGPIPE && (ctx->ignored & bit));
            if (reset) syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
            continue;
        }
        struct cuvs_kernel_sigaction old;
        if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8) != 0) continue;
        if (old.handler == (void *)SIG_DFL) continue;
        if (old.handler == (void *)SIG_IGN && sig != SIGPIPE) continue;
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    }
    if (ctx->report_fd >= 0 && ctx->report_fd < 3 + 64) {
        // Keep the report descriptor out of the range the targets are installed into.
        long moved = syscall(SYS_fcntl, ctx->report_fd, F_DUPFD_CLOEXEC, 3 + 64);
        if (moved >= 0) ctx->report_fd = (int)moved;
    }
    if (o->new_session && syscall(SYS_setsid) < 0) CHILD_FAIL(ctx, errno);
    if (o->parent_death_signal > 0) {
        if (syscall(SYS_prctl, PR_SET_PDEATHSIG, o->parent_death_signal, 0, 0, 0) != 0) CHILD_FAIL(ctx, errno);
        // The parent may have died before prctl took effect.
        if (syscall(SYS_getppid) != ctx->parent) CHILD_FAIL(ctx, ESRCH);
    }
    // Install 0, 1, 2 and the extra descriptors at 3.. . Every source is first copied above
    // the target range, so installing one target cannot clobber another source.
    int total = 3 + o->extra_count;
    int sources[3 + 64];
    if (o->extra_count < 0 || o->extra_count > 64) CHILD_FAIL(ctx, EINVAL);
    for (int i = 0; i < total; i++) {
        int fd = i < 3 ? o->stdio_fds[i] : o->extra_fds[i - 3];
        if (fd < 0) {
            r = syscall(SYS_openat, AT_FDCWD, "/dev/null", i == 0 ? O_RDONLY : O_RDWR);
            if (r < 0) CHILD_FAIL(ctx, errno);
            fd = (int)r;
        }
        r = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, total);
        if (r < 0) CHILD_FAIL(ctx, errno);
        sources[i] = (int)r;
    }
    for (int i = 0; i < total; i++) {
        // dup2 semantics (clears FD_CLOEXEC on the target); dup3 refuses equal descriptors,
        // which cannot happen here since every source is >= total.
        if (syscall(SYS_dup3, sources[i], i, 0) < 0) CHILD_FAIL(ctx, errno);
    }
    // Nothing else reaches the program, not even a descriptor another thread opened without
    // O_CLOEXEC a moment ago (the copies above go too): everything above the targets is marked
    // close-on-exec, so the error report (fork fallback) still works until execve.
    if (syscall(SYS_close_range, (unsigned)total, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        for (int fd = total; fd < 4096; fd++) {
            if (fd != ctx->report_fd) syscall(SYS_close, fd);
        }
    }
    if (o->cwd != NULL && syscall(SYS_chdir, o->cwd) != 0) CHILD_FAIL(ctx, errno);
    if (o->set_gid) {
        if (syscall(SYS_setgroups, 0, NULL) != 0) CHILD_FAIL(ctx, errno);
        if (syscall(SYS_setgid, o->gid) != 0) CHILD_FAIL(ctx, errno);
    }
    if (o->set_uid && syscall(SYS_setuid, o->uid) != 0) CHILD_FAIL(ctx, errno);
    unsigned long empty = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);
    syscall(SYS_execve, o->file, o->argv, o->envp);
    CHILD_FAIL(ctx, errno);
    return 127;
}

// ThreadSanitizer intercepts clone and vfork and cannot follow a child that shares its memory;
// under TSan only, spawn with a plain fork and report exec errors through a close-on-exec pipe.
static int spawn_with_fork(const cuvs_spawn_options *options, int *pidfd_out) {
    *pidfd_out = -1;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    struct spawn_context ctx = { options, getpid(), 0, report[1] };
    pid_t pid = fork();
    if (pid == 0) {
        spawn_child(&ctx);
        _exit(127);
    }
    int fork_errno = errno;
    close(report[1]);
    if (pid < 0) { close(report[0]); return -fork_errno; }
    int child_errno = 0;
    ssize_t got;
    while ((got = read(report[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {}
    close(report[0]);
    if (got == (ssize_t)sizeof child_errno) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -child_errno;
    }
    *pidfd_out = cuvs_pidfd_open(pid);
    return pid;
}
// Reads the process's caught and ignored signal masks (SigCgt and SigIgn in /proc/self/status):
// three system calls, where asking about each signal in the child took 64 while the parent
// waited (glibc's posix_spawn avoids those queries with its own record of handled signals).
// A handler installed by another thread between this read and the clone keeps its setting in
// the child until execve, as with glibc; every signal is blocked there until then.
static int read_signal_dispositions(unsigned long long *caught, unsigned long long *ignored) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[4096];
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    if (length <= 0) return 0;
    text[length] = 0;
    const char *cgt = strstr(text, "\nSigCgt:\t");
    const char *ign = strstr(text, "\nSigIgn:\t");
    if (cgt == NULL || ign == NULL) return 0;
    *caught = strtoull(cgt + 9, NULL, 16);
    *ignored = strtoull(ign + 9, NULL, 16);
    return 1;
}

int cuvs_spawn(const cuvs_spawn_options *options, int *pidfd_out) {
    if (__tsan_init != NULL) return spawn_with_fork(options, pidfd_out);
    *pidfd_out = -1;
    struct spawn_context ctx = { options, getpid(), 0, -1, 0, 0, 0 };
    ctx.dispositions_known = read_signal_dispositions(&ctx.caught, &ctx.ignored);
    // The child runs on a stack of its own, carved out of ours: with CLONE_VFORK this thread
    // is suspended until the child has exec'd or exited, so nothing else uses that memory
    // meanwhile (musl's posix_spawn does the same). A mapping per spawn cost an mmap, a
    // munmap and fresh page faults on every restart.
    char stack_area[32 * 1024] __attribute__((aligned(64)));
    void *stack = stack_area;
    const size_t stack_size = sizeof stack_area;
    // Block every signal so that no handler of ours runs in the child before it resets them.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // CLONE_VFORK: we resume once the child has exec'd (or exited), so ctx is still valid.
    pid_t pid = clone(spawn_child, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &ctx);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return -clone_errno;
    if (ctx.child_errno != 0) {
        // The child failed before exec and has exited: reap it here, nobody else will.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -ctx.child_errno;
    }
    *pidfd_out = cuvs_pidfd_open(pid);
    return pid;
}

int cuvs_posix_spawn(const cuvs_spawn_options *o, int *pidfd_out) {
    *pidfd_out = -1;
    if (o->parent_death_signal != 0 || o->set_uid || o->set_gid) return -ENOTSUP;
    if (o->extra_count < 0 || o->extra_count > 64) return -EINVAL;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return -rc;
    rc = posix_spawnattr_init(&attributes);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return -rc; }
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o->new_session) flags |= POSIX_SPAWN_SETSID;
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &empty);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, flags);
    int total = 3 + o->extra_count;
    for (int i = 0; i < total && rc == 0; i++) {
        int fd = i < 3 ? o->stdio_fds[i] : o->extra_fds[i - 3];
        if (fd < 0) {
            rc = posix_spawn_file_actions_addopen(&actions, i, "/dev/null", i == 0 ? O_RDONLY : O_RDWR, 0);
        } else if (fd == i) {
            // dup2 onto itself keeps FD_CLOEXEC; glibc's posix_spawn clears it for fd == newfd.
            rc = posix_spawn_file_actions_adddup2(&actions, fd, i);
        } else {
            rc = posix_spawn_file_actions_adddup2(&actions, fd, i);
        }
    }
    if (rc == 0 && o->cwd != NULL) rc = posix_spawn_file_actions_addchdir_np(&actions, o->cwd);
    pid_t pid = -1;
    if (rc == 0) rc = posix_spawn(&pid, o->file, &actions, &attributes, o->argv, o->envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (rc != 0) return -rc;
    *pidfd_out = cuvs_pidfd_open(pid);
    if (*pidfd_out < 0) {
        int err = errno;
        kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -err;
    }
    return pid;
}
