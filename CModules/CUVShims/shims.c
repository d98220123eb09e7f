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
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <time.h>

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

int cuvs_pidfd_wait_supported(void) {
    int fd = cuvs_pidfd_open(getpid());
    if (fd < 0) return 0;
    siginfo_t info;
    memset(&info, 0, sizeof info);
    // Our own pidfd is not our child: a kernel that knows P_PIDFD answers ECHILD, one that
    // does not answers EINVAL.
    int result = waitid((idtype_t)P_PIDFD, (id_t)fd, &info, WEXITED | WNOHANG);
    int supported = result == 0 || errno == ECHILD;
    close(fd);
    return supported;
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

void cuvs_reap_child(pid_t pid) {
    siginfo_t info;
    while (waitid(P_PID, (id_t)pid, &info, WEXITED) != 0 && errno == EINTR) {}
}

int cuvs_peek_exited_child(void) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -errno;
    return info.si_pid;
}

int cuvs_sigchld_fd_open(int *was_blocked) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    int rc = pthread_sigmask(SIG_BLOCK, &set, &old);
    if (rc != 0) return -rc;
    *was_blocked = sigismember(&old, SIGCHLD) == 1;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (!*was_blocked) pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return -err;
    }
    return fd;
}

void cuvs_sigchld_unblock(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int cuvs_signalfd_drain(int fd) {
    // One read takes every pending signal that fits; only a full buffer needs another read (a
    // standard signal is pending at most twice, once for the process and once for the thread),
    // so the usual drain is one system call, not a second one that answers EAGAIN.
    struct signalfd_siginfo info[8];
    int count = 0;
    ssize_t got;
    do {
        got = read(fd, info, sizeof info);
        if (got > 0) count += (int)(got / (ssize_t)sizeof info[0]);
    } while (got == (ssize_t)sizeof info);
    return count;
}

int cuvs_exit_set_open(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cuvs_exit_set_arm(int set, int pidfd, uint64_t token, int again) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLONESHOT;
    event.data.u64 = token;
    return epoll_ctl(set, again ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, pidfd, &event) == 0 ? 0 : -errno;
}

int cuvs_exit_set_ready(int set, uint64_t *tokens, int capacity) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count;
    while ((count = epoll_wait(set, events, capacity, 0)) < 0 && errno == EINTR) {}
    if (count < 0) return -errno;
    for (int i = 0; i < count; i++) tokens[i] = events[i].data.u64;
    return count;
}

int cuvs_set_child_subreaper(int on) {
    return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0);
}

int cuvs_errno(void) { return errno; }

int cuvs_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

const char *cuvs_error_name(int error) { return strerrorname_np(error); }

const char *cuvs_error_message(int error, char *buffer, size_t length) {
    return strerror_r(error, buffer, length);   // the GNU variant: returns the message
}

extern char **environ;
char **cuvs_environ(void) { return environ; }

// The child half of cuvs_spawn. It runs in the parent's memory (CLONE_VM), on the parent
// thread's TLS, on a stack of its own until execve, so it makes raw system calls only: no libc
// wrapper (which would write the parent thread's errno, and which a sanitizer or the dynamic
// linker might intercept), no allocation, no locks. It writes nothing of the parent's but
// its context's `child_errno` and `child_step`, and `parent_sched` and `parent_batched`.

#if defined(__x86_64__)
__attribute__((no_sanitize("address", "thread", "undefined"), always_inline))
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;   // -errno on failure
}
#elif defined(__aarch64__)
__attribute__((no_sanitize("address", "thread", "undefined"), always_inline))
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;   // -errno on failure
}
#else
// Other architectures: libc's syscall(), which writes errno on failure; cuvs_spawn restores
// the parent's errno after the child has gone.
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f) {
    long result = syscall(n, a, b, c, d, e, f);
    return result == -1 ? -errno : result;
}
#endif

#define SYS0(n) raw_syscall((n), 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) raw_syscall((n), (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) raw_syscall((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) raw_syscall((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) raw_syscall((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS5(n, a, b, c, d, e) raw_syscall((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

struct cuvs_kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

// The kernel's struct sched_attr as of Linux 3.14 (SCHED_ATTR_SIZE_VER0), which glibc 2.36
// does not declare.
struct cuvs_sched_attr {
    unsigned int size;
    unsigned int sched_policy;
    unsigned long long sched_flags;
    int sched_nice;
    unsigned int sched_priority;
    unsigned long long sched_runtime, sched_deadline, sched_period;
};

struct spawn_context {
    const cuvs_spawn_options *options;
    pid_t parent;
    pid_t parent_thread;   // child_runs_first: the spawning thread, made batch by the child; else 0
    struct cuvs_sched_attr parent_sched;   // its own attributes, to restore (when parent_batched)
    volatile int parent_batched;
    volatile int child_errno;
    volatile int child_step;   // the cuvs_spawn_step that failed
    int report_fd;   // fork fallback: the child writes its errno and step here (-1 with shared memory)
};

__attribute__((no_sanitize("address", "thread", "undefined"), noreturn))
static void child_fail(struct spawn_context *ctx, cuvs_spawn_step step, long negative_errno) {
    int report[2] = { (int)-negative_errno, (int)step };
    ctx->child_step = (int)step;
    ctx->child_errno = report[0];
    if (ctx->report_fd >= 0) SYS3(SYS_write, ctx->report_fd, report, sizeof report);
    for (;;) SYS1(SYS_exit_group, 127);
}

// Marks every descriptor >= lowfd close-on-exec except `keep`, walking /proc/self/fd with
// getdents64 (for kernels without close_range): no allocation, no limit on descriptor numbers.
__attribute__((no_sanitize("address", "thread", "undefined")))
static long child_cloexec_walk(int lowfd, int keep) {
    long dir = SYS4(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dir < 0) return dir;
    char buffer[2048] __attribute__((aligned(8)));
    for (;;) {
        long got = SYS3(SYS_getdents64, dir, buffer, sizeof buffer);
        if (got <= 0) { SYS1(SYS_close, dir); return got; }
        for (long offset = 0; offset < got;) {
            // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[]
            unsigned short reclen = *(unsigned short *)(buffer + offset + 16);
            const char *name = buffer + offset + 19;
            offset += reclen;
            if (name[0] < '0' || name[0] > '9') continue;
            long fd = 0;
            for (const char *c = name; *c >= '0' && *c <= '9'; c++) fd = fd * 10 + (*c - '0');
            if (fd < lowfd || fd == dir || fd == keep) continue;
            SYS3(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
        }
    }
}

__attribute__((no_sanitize("address", "thread", "undefined")))
static int spawn_child(void *argument) {
    struct spawn_context *ctx = argument;
    const cuvs_spawn_options *o = ctx->options;
    long r;
    // child_runs_first: the spawning thread, suspended until execve, is woken then; in the default
    // policy it would preempt the program on their shared CPU and run its own bookkeeping before
    // the program starts. As SCHED_BATCH its wake-up does not preempt (the kernel leaves a batch
    // task to the tick). Done here, first (before credentials change), so that the program never
    // has another policy than its parent's, and the thread takes its own attributes back when
    // it resumes. Only the default policy is switched; the nice value and reset-on-fork are kept.
    // The time slice is not: since Linux 6.12 sched_getattr reports a fair thread's slice as
    // sched_runtime, and handing it back would pin it as a custom slice; zero means the
    // kernel's default (a custom slice the host had set is reset to it, which cannot be told
    // apart). The restore is marked due before the switch: a child killed right after
    // sched_setattr must not leave the thread batch (restoring unchanged attributes is harmless).
    if (ctx->parent_thread > 0) {
        struct cuvs_sched_attr *own = &ctx->parent_sched;
        if (SYS4(SYS_sched_getattr, ctx->parent_thread, own, sizeof *own, 0) == 0 && own->sched_policy == SCHED_OTHER) {
            own->size = sizeof *own;
            own->sched_flags &= 0x01ULL;   // SCHED_FLAG_RESET_ON_FORK
            own->sched_runtime = own->sched_deadline = own->sched_period = 0;
            struct cuvs_sched_attr batch = *own;
            batch.sched_policy = SCHED_BATCH;
            ctx->parent_batched = 1;
            SYS3(SYS_sched_setattr, ctx->parent_thread, &batch, 0);
        }
    }
    // The parent's handlers must not run here (this child shares its memory): every signal goes
    // to its default, and one that was ignored is ignored again (execve keeps it so), except
    // SIGPIPE, which a program expects at its default. One system call per signal, since setting
    // the default hands back the old action; reading the parent's dispositions first
    // (/proc/self/status) cost more than that, in the parent, cold, on every restart. Every
    // signal is blocked until the end (the parent blocked them all before cloning).
    struct cuvs_kernel_sigaction dfl = { (void *)SIG_DFL, 0, NULL, 0 };
    struct cuvs_kernel_sigaction ign = { (void *)SIG_IGN, 0, NULL, 0 };
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        struct cuvs_kernel_sigaction old;
        if (SYS4(SYS_rt_sigaction, sig, &dfl, &old, 8) != 0) continue;
        if (old.handler == (void *)SIG_IGN && sig != SIGPIPE) SYS4(SYS_rt_sigaction, sig, &ign, NULL, 8);
    }
    if (ctx->report_fd >= 0 && ctx->report_fd < 3 + 64) {
        // Keep the report descriptor out of the range the targets are installed into.
        long moved = SYS3(SYS_fcntl, ctx->report_fd, F_DUPFD_CLOEXEC, 3 + 64);
        if (moved >= 0) ctx->report_fd = (int)moved;
    }
    if (o->new_session && (r = SYS0(SYS_setsid)) < 0) child_fail(ctx, CUVS_SPAWN_STEP_SESSION, r);
    if (o->parent_death_signal > 0) {
        if ((r = SYS5(SYS_prctl, PR_SET_PDEATHSIG, o->parent_death_signal, 0, 0, 0)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_PARENT_DEATH_SIGNAL, r);
        // The parent may have died before prctl took effect.
        if (SYS0(SYS_getppid) != ctx->parent) child_fail(ctx, CUVS_SPAWN_STEP_PARENT_DEATH_SIGNAL, -ESRCH);
    }
    // Install 0, 1, 2 and the extra descriptors at 3.. . A source inside the target range that
    // is not already in its place is first copied above the range, so installing one target
    // cannot clobber another's source (the scheme cuvs_posix_spawn follows too); a source above
    // the range is installed from where it is, and one in its place only has FD_CLOEXEC cleared
    // (which dup3 would do for a different descriptor; it refuses equal ones). Three system
    // calls for the usual stdio, not six.
    if (o->extra_count < 0 || o->extra_count > 64) child_fail(ctx, CUVS_SPAWN_STEP_DESCRIPTORS, -EINVAL);
    int total = 3 + o->extra_count;
    int sources[3 + 64];
    for (int i = 0; i < total; i++) {
        int fd = i < 3 ? o->stdio_fds[i] : o->extra_fds[i - 3];
        if (fd < 0) {
            r = SYS4(SYS_openat, AT_FDCWD, "/dev/null", i == 0 ? O_RDONLY : O_RDWR, 0);
            if (r < 0) child_fail(ctx, CUVS_SPAWN_STEP_DESCRIPTORS, r);
            fd = (int)r;
        }
        if (fd < total && fd != i) {
            r = SYS3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, total);
            if (r < 0) child_fail(ctx, CUVS_SPAWN_STEP_DESCRIPTORS, r);
            fd = (int)r;
        }
        sources[i] = fd;
    }
    for (int i = 0; i < total; i++) {
        // dup2 semantics (clears FD_CLOEXEC on the target); dup3 refuses equal descriptors,
        // which is the case F_SETFD covers.
        if (sources[i] == i) r = SYS3(SYS_fcntl, i, F_SETFD, 0);
        else r = SYS3(SYS_dup3, sources[i], i, 0);
        if (r < 0) child_fail(ctx, CUVS_SPAWN_STEP_DESCRIPTORS, r);
    }
    // Nothing else reaches the program, not even a descriptor another thread opened without
    // O_CLOEXEC a moment ago (the copies above go too): everything above the targets is marked
    // close-on-exec in this child's own descriptor table (the parent's is untouched), so the
    // error report (fork fallback) still works until execve.
    if (SYS3(SYS_close_range, (unsigned)total, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        if ((r = child_cloexec_walk(total, ctx->report_fd)) < 0) child_fail(ctx, CUVS_SPAWN_STEP_DESCRIPTORS, r);
    }
    if (o->cwd != NULL && (r = SYS1(SYS_chdir, o->cwd)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_CHDIR, r);
    // Limits first: raising a hard limit needs the privileges dropped below.
    if (o->limit_count < 0 || o->limit_count > 64) child_fail(ctx, CUVS_SPAWN_STEP_LIMITS, -EINVAL);
    for (int i = 0; i < o->limit_count; i++) {
        struct { unsigned long long soft, hard; } limit = { o->limits[i].soft, o->limits[i].hard };
        if ((r = SYS4(SYS_prlimit64, 0, o->limits[i].resource, &limit, NULL)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_LIMITS, r);
    }
    if (o->set_umask) SYS1(SYS_umask, o->umask_value & 0777);
    if (o->set_groups) {
        if (o->group_count < 0 || o->group_count > 65536) child_fail(ctx, CUVS_SPAWN_STEP_GROUPS, -EINVAL);
        if ((r = SYS2(SYS_setgroups, o->group_count, o->groups)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_GROUPS, r);
    } else if (o->set_gid) {
        if ((r = SYS2(SYS_setgroups, 0, NULL)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_GROUPS, r);
    }
    if (o->set_gid && (r = SYS1(SYS_setgid, o->gid)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_GID, r);
    if (o->set_uid && (r = SYS1(SYS_setuid, o->uid)) != 0) child_fail(ctx, CUVS_SPAWN_STEP_UID, r);
    if (o->pause_before_exec_fd > 0) {
        // A test holds the child here to look at the spawning thread meanwhile.
        char byte;
        SYS3(SYS_read, o->pause_before_exec_fd, &byte, 1);
    }
    unsigned long empty = 0;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);
    r = SYS3(SYS_execve, o->file, o->argv, o->envp);
    child_fail(ctx, CUVS_SPAWN_STEP_EXEC, r);
}

// ThreadSanitizer's runtime, when present in the process (its interceptors apply to this file
// even though it is not instrumented itself).
extern void __tsan_init(void) __attribute__((weak));

// ThreadSanitizer intercepts clone and vfork and cannot follow a child that shares its memory;
// under TSan only, spawn with a plain fork and report exec errors through a close-on-exec pipe.
static int spawn_with_fork(const cuvs_spawn_options *options, int *pidfd_out, cuvs_spawn_step *failed_step) {
    *pidfd_out = -1;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    struct spawn_context ctx = { .options = options, .parent = getpid(), .report_fd = report[1] };
    pid_t pid = fork();
    if (pid == 0) {
        spawn_child(&ctx);
        _exit(127);
    }
    int fork_errno = errno;
    close(report[1]);
    if (pid < 0) { close(report[0]); return -fork_errno; }
    int child_report[2] = { 0, 0 };   // errno, step
    ssize_t got;
    while ((got = read(report[0], child_report, sizeof child_report)) < 0 && errno == EINTR) {}
    close(report[0]);
    if (got == (ssize_t)sizeof child_report) {
        cuvs_reap_child(pid);
        if (failed_step != NULL) *failed_step = (cuvs_spawn_step)child_report[1];
        return -child_report[0];
    }
    *pidfd_out = cuvs_pidfd_open(pid);
    return pid;
}

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

int cuvs_spawn_shares_memory(void) { return __tsan_init == NULL; }

// Why a child of our own instead of posix_spawn (which glibc also runs on a CLONE_VM|CLONE_VFORK
// child): posix_spawn has no way to set a parent-death signal, to switch user and group, or to
// hand back a pidfd atomically before glibc 2.39 (Debian 12 has 2.36). What it can do, the
// Dispatch runtime uses it for (cuvs_posix_spawn below).
int cuvs_spawn(const cuvs_spawn_options *options, int *pidfd_out, cuvs_spawn_step *failed_step) {
    if (__tsan_init != NULL) return spawn_with_fork(options, pidfd_out, failed_step);
    *pidfd_out = -1;
    int saved_errno = errno;
    struct spawn_context ctx = { .options = options, .parent = getpid(), .report_fd = -1 };
    if (options->child_runs_first) ctx.parent_thread = (pid_t)syscall(SYS_gettid);
    // The child runs on a stack of its own, carved out of ours: with CLONE_VFORK this thread
    // is suspended until the child has exec'd or exited, so nothing else uses that memory
    // meanwhile (musl's posix_spawn does the same).
    char stack_area[32 * 1024] __attribute__((aligned(64)));
    // Block every signal, glibc's internal ones (SIGCANCEL, SIGSETXID) included, which
    // pthread_sigmask would leave out: no handler of this process may run in the child, which
    // shares our memory, before it has reset them.
    unsigned long all = ~0UL, old = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
    // CLONE_VFORK: we resume once the child has exec'd (or exited), so ctx is still valid.
    // CLONE_PIDFD: the kernel hands back a pidfd for exactly this child (Linux 5.2+), so no
    // pid is ever looked up again.
    int pidfd = -1;
    pid_t pid = clone(spawn_child, stack_area + sizeof stack_area,
                      CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &ctx, &pidfd);
    int clone_errno = errno;
    if (pid < 0 && clone_errno == EINVAL) {
        // A kernel without CLONE_PIDFD: clone without it, then open the pidfd (Linux 5.3+).
        // The child is ours and unreaped, so its pid cannot have been reused meanwhile.
        pidfd = -1;
        pid = clone(spawn_child, stack_area + sizeof stack_area, CLONE_VM | CLONE_VFORK | SIGCHLD, &ctx);
        clone_errno = errno;
        if (pid > 0 && ctx.child_errno == 0) pidfd = cuvs_pidfd_open(pid);
    }
    // Resumed: the program has run (or the child failed); this thread is itself again. (It
    // cannot fail: these are the thread's own attributes, read a moment ago, and switching
    // between two normal policies at an unchanged nice value needs no privilege. A renice of
    // the thread from outside while it was suspended is undone, a window of the spawn's length.)
    if (ctx.parent_batched) syscall(SYS_sched_setattr, 0, &ctx.parent_sched, 0);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
    if (pid < 0) { errno = saved_errno; return -clone_errno; }
    if (ctx.child_errno != 0) {
        // The child failed before exec and has exited: reap it here, nobody else will.
        if (pidfd >= 0) close(pidfd);
        cuvs_reap_child(pid);
        if (failed_step != NULL) *failed_step = (cuvs_spawn_step)ctx.child_step;
        errno = saved_errno;
        return -ctx.child_errno;
    }
    *pidfd_out = pidfd;
    errno = saved_errno;
    return pid;
}

int cuvs_posix_spawn(const cuvs_spawn_options *o, int *pidfd_out) {
    *pidfd_out = -1;
    if (o->parent_death_signal != 0 || o->set_uid || o->set_gid || o->set_groups || o->set_umask || o->limit_count != 0)
        return -ENOTSUP;
    if (o->extra_count < 0 || o->extra_count > 64) return -EINVAL;
    int total = 3 + o->extra_count;
    // Close to cuvs_spawn's scheme (which leaves a source above the range, or one already in its
    // place, where it is): every source inside the target range is first copied above it, so
    // installing one target cannot clobber another source (a daemon started with fd 0 closed
    // opens a stdout file as fd 0; /dev/null installed as stdin would replace it). posix_spawn
    // has no "duplicate above" action, so the copies are made here, close-on-exec, and closed
    // after the spawn: new descriptors of our own, no flag changed on anybody else's.
    int sources[3 + 64];
    int copies[3 + 64];
    int copy_count = 0;
    int rc = 0;
    for (int i = 0; i < total; i++) {
        int fd = i < 3 ? o->stdio_fds[i] : o->extra_fds[i - 3];
        if (fd >= 0 && fd < total) {
            int copy = fcntl(fd, F_DUPFD_CLOEXEC, total);
            if (copy < 0) { rc = errno; break; }
            copies[copy_count++] = copy;
            fd = copy;
        }
        sources[i] = fd;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int have_actions = 0, have_attributes = 0;
    if (rc == 0 && (rc = posix_spawn_file_actions_init(&actions)) == 0) have_actions = 1;
    if (rc == 0 && (rc = posix_spawnattr_init(&attributes)) == 0) have_attributes = 1;
    if (rc == 0) {
        short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
        if (o->new_session) flags |= POSIX_SPAWN_SETSID;
        sigset_t empty, all;
        sigemptyset(&empty);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attributes, &empty);
        posix_spawnattr_setsigdefault(&attributes, &all);
        posix_spawnattr_setflags(&attributes, flags);
    }
    for (int i = 0; i < total && rc == 0; i++) {
        if (sources[i] < 0) {
            rc = posix_spawn_file_actions_addopen(&actions, i, "/dev/null", i == 0 ? O_RDONLY : O_RDWR, 0);
        } else {
            rc = posix_spawn_file_actions_adddup2(&actions, sources[i], i);   // sources[i] >= total
        }
    }
    // Everything else is closed in the child only.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, total);
#else
#error "cuvs_posix_spawn needs posix_spawn_file_actions_addclosefrom_np (glibc 2.34 or later)"
#endif
    if (rc == 0 && o->cwd != NULL) rc = posix_spawn_file_actions_addchdir_np(&actions, o->cwd);
    pid_t pid = -1;
    if (rc == 0) rc = posix_spawn(&pid, o->file, &actions, &attributes, o->argv, o->envp);
    if (have_actions) posix_spawn_file_actions_destroy(&actions);
    if (have_attributes) posix_spawnattr_destroy(&attributes);
    for (int i = 0; i < copy_count; i++) close(copies[i]);
    if (rc != 0) return -rc;
    // Not atomic (glibc 2.36 has no pidfd_spawn), but safe: the child is ours and unreaped, so
    // its pid cannot be reused before this call.
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

// MARK: notify sockets

static socklen_t abstract_address(const char *name, struct sockaddr_un *address) {
    size_t length = strlen(name);
    if (length == 0 || length > sizeof(address->sun_path) - 1) return 0;
    memset(address, 0, sizeof(*address));
    address->sun_family = AF_UNIX;
    memcpy(address->sun_path + 1, name, length);   // sun_path[0] stays NUL: abstract
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + length);
}

int cuvs_notify_socket_open(const char *name) {
    struct sockaddr_un address;
    socklen_t length = abstract_address(name, &address);
    if (length == 0) return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&address, length) != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

long cuvs_notify_receive(int fd, void *buffer, size_t length, cuvs_notify_datagram *info) {
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
    } control;
    struct iovec vector = { .iov_base = buffer, .iov_len = length };
    struct msghdr message = {
        .msg_iov = &vector, .msg_iovlen = 1,
        .msg_control = control.bytes, .msg_controllen = sizeof(control.bytes),
    };
    info->has_credentials = 0;
    info->sender_pid = 0;
    info->sender_uid = 0;
    info->truncated = 0;
    info->descriptors = 0;
    ssize_t received = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (received < 0) return -errno;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET) continue;
        if (header->cmsg_type == SCM_CREDENTIALS && header->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred credentials;
            memcpy(&credentials, CMSG_DATA(header), sizeof(credentials));
            info->has_credentials = 1;
            info->sender_pid = credentials.pid;
            info->sender_uid = credentials.uid;
        } else if (header->cmsg_type == SCM_RIGHTS) {
            size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int passed;
                memcpy(&passed, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
                close(passed);
                info->descriptors++;
            }
        }
    }
    if ((size_t)received > length || (message.msg_flags & MSG_TRUNC)) {
        info->truncated = 1;
        return (long)length;
    }
    return (long)received;
}

int cuvs_notify_send(const char *name, const void *bytes, size_t length) {
    struct sockaddr_un address;
    socklen_t address_length = abstract_address(name, &address);
    if (address_length == 0) return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t sent = sendto(fd, bytes, length, 0, (struct sockaddr *)&address, address_length);
    int error = errno;
    close(fd);
    return sent < 0 ? -error : 0;
}

int cuvs_notify_send_address(const char *address, const void *bytes, size_t length) {
    if (address == NULL) return -EINVAL;
    if (address[0] == '@') return cuvs_notify_send(address + 1, bytes, length);
    if (address[0] != '/') return -EAFNOSUPPORT;
    struct sockaddr_un target;
    size_t path_length = strlen(address);
    if (path_length >= sizeof(target.sun_path)) return -ENAMETOOLONG;
    memset(&target, 0, sizeof(target));
    target.sun_family = AF_UNIX;
    memcpy(target.sun_path, address, path_length);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t sent = sendto(fd, bytes, length, 0, (struct sockaddr *)&target,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_length + 1));
    int error = errno;
    close(fd);
    return sent < 0 ? -error : 0;
}

// MARK: descendant sentinel

// MARK: Clean file pages

struct clean_range {
    unsigned long start;
    unsigned long end;
};

// Whether this process has exactly one thread (counted in /proc/self/task). Only then is a list
// of mappings still true when it is used: no other thread can unmap a file and map something
// else at its address in between.
static int single_threaded(void) {
    int directory = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return 0;
    char entries[4096] __attribute__((aligned(8)));
    int threads = 0;
    for (;;) {
        long count = syscall(SYS_getdents64, directory, entries, sizeof entries);
        if (count <= 0) break;
        for (long offset = 0; offset < count;) {
            unsigned short length = *(unsigned short *)(entries + offset + 16);
            const char *name = entries + offset + 19;
            offset += length;
            if (name[0] >= '0' && name[0] <= '9') threads++;
        }
    }
    close(directory);
    return threads == 1;
}

// Lists the read-only private file mappings in which no page was ever written, from
// /proc/self/smaps: a written (copy-on-write) page is counted under Anonymous: while in memory
// and under Swap: once swapped out, so both must be 0 (and present). Locked mappings are left
// out (madvise refuses them). Adds their resident kilobytes to *resident. Returns how many were
// found (at most `capacity`) or -errno.
static int find_clean_file_mappings(struct clean_range *ranges, int capacity, long *resident) {
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t size = 0, room = 128 * 1024;
    char *text = malloc(room);
    for (;;) {
        if (text == NULL) { close(fd); return -ENOMEM; }
        if (room - size < 4096) {
            char *larger = realloc(text, room * 2);
            if (larger == NULL) { free(text); text = NULL; continue; }
            text = larger;
            room *= 2;
        }
        ssize_t got = read(fd, text + size, room - 1 - size);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { int error = errno; free(text); close(fd); return -error; }
        if (got == 0) break;
        size += (size_t)got;
    }
    close(fd);
    text[size] = 0;
    int count = 0;
    int candidate = 0;
    unsigned long start = 0, end = 0;
    // -1: not read yet, and then the mapping is not released.
    long rss = 0, anonymous = -1, swapped = -1, locked = -1;
    for (char *line = text; ; ) {
        char *newline = strchr(line, '\n');
        if (newline != NULL) *newline = 0;
        unsigned long low, high;
        char permissions[5] = {0};
        int path_offset = 0;
        // A mapping's first line: "low-high perms offset device inode   path"; its fields
        // follow ("Rss:   12 kB"), and none of them reads as "hex-hex".
        int is_header = newline == NULL
            || sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &low, &high, permissions, &path_offset) >= 3;
        if (is_header) {
            if (candidate && anonymous == 0 && swapped == 0 && locked == 0 && count < capacity) {
                ranges[count].start = start;
                ranges[count].end = end;
                count++;
                *resident += rss;
            }
            if (newline == NULL) break;
            const char *path = path_offset > 0 ? line + path_offset : "";
            candidate = permissions[0] == 'r' && permissions[1] == '-' && permissions[3] == 'p' && path[0] == '/';
            start = low;
            end = high;
            rss = 0;
            anonymous = swapped = locked = -1;
        } else if (strncmp(line, "Rss:", 4) == 0) {
            rss = strtol(line + 4, NULL, 10);
        } else if (strncmp(line, "Anonymous:", 10) == 0) {
            anonymous = strtol(line + 10, NULL, 10);
        } else if (strncmp(line, "Swap:", 5) == 0) {
            swapped = strtol(line + 5, NULL, 10);
        } else if (strncmp(line, "Locked:", 7) == 0) {
            locked = strtol(line + 7, NULL, 10);
        }
        line = newline + 1;
    }
    free(text);
    return count;
}

long cuvs_release_clean_file_pages(void) {
    if (!single_threaded()) return -EBUSY;
    static struct clean_range ranges[1024];
    long resident = 0;
    int count = find_clean_file_mappings(ranges, 1024, &resident);
    if (count < 0) return count;
    for (int i = 0; i < count; i++) madvise((void *)ranges[i].start, ranges[i].end - ranges[i].start, MADV_DONTNEED);
    return resident;
}

// MARK: Descendant sentinel

static const volatile int *sentinel_groups;
static int sentinel_capacity;
static char sentinel_cookie[256];
static size_t sentinel_cookie_length;
static char sentinel_buffer[65536 + 256];
static struct clean_range sentinel_clean_ranges[1024];
static int sentinel_clean_count;

struct linux_dirent64_record {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int sentinel_environment_has_cookie(const char *pid_name) {
    char path[64] = "/proc/";
    size_t length = 6;
    for (const char *c = pid_name; *c && length < 40; c++) path[length++] = *c;
    memcpy(path + length, "/environ", 9);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return 0;
    size_t kept = 0;
    int found = 0;
    for (;;) {
        long count = syscall(SYS_read, fd, sentinel_buffer + kept, 65536);
        if (count <= 0) break;
        size_t total = kept + (size_t)count;
        if (memmem(sentinel_buffer, total, sentinel_cookie, sentinel_cookie_length) != NULL) { found = 1; break; }
        // Keep the tail, in case the cookie straddles two reads.
        kept = total < sentinel_cookie_length ? total : sentinel_cookie_length;
        memmove(sentinel_buffer, sentinel_buffer + total - kept, kept);
    }
    syscall(SYS_close, fd);
    return found;
}

/// Kills every process (but itself) whose environment holds the cookie; returns how many.
static int sentinel_kill_by_cookie(void) {
    static char entries[16384];
    int killed = 0;
    int directory = (int)syscall(SYS_openat, AT_FDCWD, "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (directory < 0) return 0;
    long self = syscall(SYS_getpid);
    for (;;) {
        long count = syscall(SYS_getdents64, directory, entries, sizeof(entries));
        if (count <= 0) break;
        for (long offset = 0; offset < count;) {
            struct linux_dirent64_record *entry = (struct linux_dirent64_record *)(entries + offset);
            offset += entry->d_reclen;
            long pid = 0;
            const char *c = entry->d_name;
            if (*c < '1' || *c > '9') continue;
            for (; *c >= '0' && *c <= '9'; c++) pid = pid * 10 + (*c - '0');
            if (*c != 0 || pid == self) continue;
            if (sentinel_environment_has_cookie(entry->d_name)) {
                syscall(SYS_kill, (int)pid, SIGKILL);
                killed++;
            }
        }
    }
    syscall(SYS_close, directory);
    return killed;
}

static void sentinel_main(int pipe_read) {
    // Only the pipe is kept: nothing else of the daemon's stays open here.
    if (pipe_read > 0) syscall(SYS_close_range, 0U, (unsigned)pipe_read - 1, 0U);
    syscall(SYS_close_range, (unsigned)pipe_read + 1, ~0U, 0U);
    struct sigaction ignore;
    memset(&ignore, 0, sizeof(ignore));
    ignore.sa_handler = SIG_IGN;
    int ignored[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE };
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) sigaction(ignored[i], &ignore, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_NAME, "uvs-sentinel", 0, 0, 0);
    // A session (and process group) of its own: whoever kills the daemon's group (a manager's
    // stop, a shell's job control, a supervisor's kill-the-group-on-exit) must not take the
    // sentinel with it before it has done its job.
    syscall(SYS_setsid);
    // The daemon's code pages this copy touched on its way here are its alone to keep mapped:
    // let them go (the few the loop below runs come back at once).
    for (int i = 0; i < sentinel_clean_count; i++) {
        syscall(SYS_madvise, sentinel_clean_ranges[i].start, sentinel_clean_ranges[i].end - sentinel_clean_ranges[i].start,
                MADV_DONTNEED);
    }
    char byte;
    for (;;) {
        long count = syscall(SYS_read, pipe_read, &byte, 1);
        if (count < 0 && errno == EINTR) continue;
        if (count > 0) continue;   // nothing is written; ignore it if something is
        break;                     // end of file: the daemon is gone
    }
    for (int i = 0; i < sentinel_capacity; i++) {
        int group = sentinel_groups[i];
        if (group > 0) syscall(SYS_kill, -group, SIGKILL);
    }
    for (int pass = 0; pass < 5 && sentinel_cookie_length > 0; pass++) {
        if (sentinel_kill_by_cookie() == 0) break;
    }
    syscall(SYS_exit_group, 0);
}

int cuvs_sentinel_start(int pipe_read, int pipe_write, const char *cookie, const volatile int *groups, int capacity,
                        int release_pages) {
    size_t length = cookie ? strlen(cookie) : 0;
    if (length >= sizeof(sentinel_cookie)) return -ENAMETOOLONG;
    long resident = 0;
    // Listed while this process has one thread, so the list is still true at the fork.
    int found = release_pages && single_threaded() ? find_clean_file_mappings(sentinel_clean_ranges, 1024, &resident) : 0;
    sentinel_clean_count = found > 0 ? found : 0;
    memcpy(sentinel_cookie, cookie ? cookie : "", length);
    sentinel_cookie_length = length;
    sentinel_groups = groups;
    sentinel_capacity = groups ? capacity : 0;
    // A raw fork (clone without CLONE_VM): no atfork handlers run, and the child touches only
    // static memory and system calls.
    long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    if (pid < 0) return -errno;
    if (pid == 0) {
        syscall(SYS_close, pipe_write);
        sentinel_main(pipe_read);
    }
    return (int)pid;
}

static int path_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof(*address));
    address->sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof(address->sun_path)) return -ENAMETOOLONG;
    memcpy(address->sun_path, path, length);
    return 0;
}

int cuvs_unix_connect(const char *path, int timeout_ms) {
    struct sockaddr_un address;
    int error = path_address(path, &address);
    if (error != 0) return error;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    // A Unix socket's non-blocking connect either completes or fails with EAGAIN when the
    // listener's backlog is full; then it is tried again until the deadline.
    while (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        error = errno;
        if (error == EINTR) continue;
        if (error != EAGAIN) {
            close(fd);
            return -error;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long elapsed = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (timeout_ms >= 0 && elapsed >= timeout_ms) {
            close(fd);
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        }
        struct timespec pause = { 0, 10 * 1000 * 1000 };
        nanosleep(&pause, NULL);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

int cuvs_unix_listen(const char *path, unsigned mode, int backlog, cuvs_socket_identity *identity) {
    identity->lock_fd = -1;
    struct sockaddr_un address;
    int error = path_address(path, &address);
    if (error != 0) return error;

    // The temporary name: the same directory, a random name (not guessable, no leftovers of
    // an earlier run to remove).
    char temporary[sizeof(address.sun_path)];
    const char *slash = strrchr(path, '/');
    int directory_length = slash == NULL ? 0 : (int)(slash - path);
    unsigned char random_bytes[4] = { 0 };
    if (getrandom(random_bytes, sizeof(random_bytes), 0) != (ssize_t)sizeof(random_bytes)) return -EIO;
    int written = slash == NULL
        ? snprintf(temporary, sizeof(temporary), ".uvs-%02x%02x%02x%02x", random_bytes[0], random_bytes[1], random_bytes[2], random_bytes[3])
        : snprintf(temporary, sizeof(temporary), "%.*s/.uvs-%02x%02x%02x%02x", directory_length, path,
                   random_bytes[0], random_bytes[1], random_bytes[2], random_bytes[3]);
    if (written < 0 || (size_t)written >= sizeof(temporary)) return -ENAMETOOLONG;

    // One daemon at a time decides what the path holds.
    char lock_path[4096];
    written = snprintf(lock_path, sizeof(lock_path), "%s.lock", path);
    if (written < 0 || (size_t)written >= sizeof(lock_path)) return -ENAMETOOLONG;
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock_fd < 0) return -errno;
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        error = errno;
        close(lock_fd);
        return error == EWOULDBLOCK ? -EADDRINUSE : -error;
    }

    struct stat existing;
    if (lstat(path, &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode)) { close(lock_fd); return -EEXIST; }
        int probe = cuvs_unix_connect(path, 0);
        if (probe >= 0 || probe == -EAGAIN) {
            // A live socket whose owner holds no lock (or one too busy to accept): in use.
            if (probe >= 0) close(probe);
            close(lock_fd);
            return -EADDRINUSE;
        }
        // Nobody listens: a socket left by a daemon that was killed. Anything else (no
        // permission to connect, say) is reported rather than removed.
        if (probe != -ECONNREFUSED) { close(lock_fd); return probe; }
        if (unlink(path) != 0 && errno != ENOENT) { error = errno; close(lock_fd); return -error; }
    } else if (errno != ENOENT) {
        error = errno;
        close(lock_fd);
        return -error;
    }

    struct sockaddr_un temporaryAddress;
    error = path_address(temporary, &temporaryAddress);
    if (error != 0) { close(lock_fd); return error; }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { error = errno; close(lock_fd); return -error; }
    // What a failure has to remove: nothing, the temporary name, or the linked path.
    const char *made = NULL;
    if (bind(fd, (struct sockaddr *)&temporaryAddress, sizeof(temporaryAddress)) != 0) goto fail;
    made = temporary;
    if (chmod(temporary, mode) != 0 || listen(fd, backlog) != 0) goto fail;
    // link() fails with EEXIST if anything took the path since the check above.
    if (link(temporary, path) != 0) goto fail;
    unlink(temporary);
    made = path;
    struct stat bound;
    if (lstat(path, &bound) != 0) goto fail;
    identity->device = (unsigned long long)bound.st_dev;
    identity->inode = (unsigned long long)bound.st_ino;
    identity->lock_fd = lock_fd;
    return fd;

fail:
    error = errno;
    if (made != NULL) unlink(made);
    close(fd);
    close(lock_fd);
    return -error;
}

int cuvs_unix_unlink_if_same(const char *path, cuvs_socket_identity *identity) {
    int result = 0;
    struct stat current;
    if (lstat(path, &current) != 0) {
        result = -errno;
    } else if ((unsigned long long)current.st_dev != identity->device || (unsigned long long)current.st_ino != identity->inode) {
        result = -ESTALE;
    } else if (unlink(path) != 0) {
        result = -errno;
    }
    if (identity->lock_fd >= 0) {
        close(identity->lock_fd);
        identity->lock_fd = -1;
    }
    return result;
}

int cuvs_peer_credentials(int fd, int *pid, unsigned *uid, unsigned *gid) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -errno;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}
