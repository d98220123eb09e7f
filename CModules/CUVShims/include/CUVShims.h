// Small C helpers for Linux facilities that Swift cannot reach directly (variadic
// syscalls, macros) and that libuv does not wrap. Every symbol is prefixed `cuvs_`.
#ifndef CUVSHIMS_H
#define CUVSHIMS_H

#include <stdint.h>
#include <sys/types.h>
#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/// pidfd_open(2); -1 with errno on failure. The descriptor is close-on-exec.
int cuvs_pidfd_open(pid_t pid);

/// 1 when the kernel has pidfd_open (5.3) and waitid(P_PIDFD) (5.4), else 0.
int cuvs_pidfd_wait_supported(void);

/// pidfd_send_signal(2): signals the process behind a pidfd, immune to pid reuse.
int cuvs_pidfd_send_signal(int pidfd, int signal);

/// waitid(P_PIDFD, pidfd, WEXITED | WNOHANG). Returns 1 when the child was reaped
/// (exit code or signal written), 0 when it is still running, -1 with errno on failure.
int cuvs_pidfd_reap(int pidfd, int *exit_code, int *term_signal);

/// A set of pidfds watched together (an epoll instance, close-on-exec), or -errno.
int cuvs_exit_set_open(void);

/// Watches `pidfd` in `set` for one event (EPOLLONESHOT), which will carry `token`; `again`
/// re-arms a pidfd already in the set. 0 or -errno. A closed pidfd leaves the set by itself.
int cuvs_exit_set_arm(int set, int pidfd, uint64_t token, int again);

/// The tokens of the pidfds that became readable, without blocking: how many were written to
/// `tokens` (at most `capacity`, at most 64), or -errno.
int cuvs_exit_set_ready(int set, uint64_t *tokens, int capacity);

/// Blocks SIGCHLD in the calling thread and returns a signalfd for it (non-blocking,
/// close-on-exec), or -errno (the mask left as it was). *was_blocked says whether the thread
/// blocked SIGCHLD already (then leave it blocked when done).
int cuvs_sigchld_fd_open(int *was_blocked);

/// Unblocks SIGCHLD in the calling thread.
void cuvs_sigchld_unblock(void);

/// Reads every pending signal from a non-blocking signalfd; returns how many there were.
int cuvs_signalfd_drain(int fd);

/// Waits for the child `pid` to end and reaps it (blocking, retried on EINTR). For a child that
/// was just killed after a failed setup.
void cuvs_reap_child(pid_t pid);

/// The pid of an exited child not yet reaped, left unreaped (waitid with WNOWAIT); 0 when
/// none, -errno on failure (-ECHILD: no children at all).
int cuvs_peek_exited_child(void);

/// prctl(PR_SET_CHILD_SUBREAPER, on).
int cuvs_set_child_subreaper(int on);

/// The process environment (`environ`), read without Swift's global-variable checks.
char **cuvs_environ(void);

/// The symbolic name of an errno value (`ENOENT`), or NULL when unknown.
const char *cuvs_error_name(int error);

/// The system's message for an errno value (thread-safe: written into `buffer` when needed).
const char *cuvs_error_message(int error, char *buffer, size_t length);

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start (no window in which another
/// thread's spawn could inherit them). 0 or -1 with errno.
int cuvs_pipe_cloexec(int fds[2]);

/// Current errno, read without going through the Glibc overlay.
int cuvs_errno(void);

/// A non-blocking, close-on-exec `AF_UNIX` datagram socket bound to the abstract name `name`
/// (without the leading NUL; at most 107 bytes), with `SO_PASSCRED` on, so that every datagram
/// carries its sender's credentials: the receiving end of systemd's notify protocol. Returns
/// the descriptor or -errno.
int cuvs_notify_socket_open(const char *name);

/// What `cuvs_notify_receive` learnt about one datagram besides its bytes.
typedef struct cuvs_notify_datagram {
    int has_credentials;   // 1 when SCM_CREDENTIALS came (it always does with SO_PASSCRED)
    int sender_pid;        // from SCM_CREDENTIALS
    unsigned sender_uid;   // from SCM_CREDENTIALS
    int truncated;         // 1 when the datagram was longer than the buffer (its rest is lost)
    int descriptors;       // descriptors it carried (SCM_RIGHTS), already closed
} cuvs_notify_datagram;

/// Receives one datagram without blocking into `buffer`. Descriptors passed along with it are
/// closed at once (nothing here accepts them). Returns the number of bytes stored, or -errno
/// (-EAGAIN when none is waiting).
long cuvs_notify_receive(int fd, void *buffer, size_t length, cuvs_notify_datagram *info);

/// Sends `length` bytes as one datagram to a notify socket given as systemd gives it in
/// `NOTIFY_SOCKET`: `@name` (abstract) or an absolute path. 0 or -errno.
int cuvs_notify_send_address(const char *address, const void *bytes, size_t length);

/// Sends `length` bytes as one datagram to the abstract socket `name` (tests, probes): 0 or -errno.
int cuvs_notify_send(const char *name, const void *bytes, size_t length);

/// Where a listening Unix stream socket ended up: its inode, so that only this socket is ever
/// removed at the end (not one a successor put at the same path).
typedef struct cuvs_socket_identity {
    unsigned long long device;
    unsigned long long inode;
    int lock_fd;   // the lock on PATH.lock held while the socket is served (-1: none)
} cuvs_socket_identity;

/// A non-blocking, close-on-exec `AF_UNIX` stream socket listening at `path` with permissions
/// `mode` from the start: it is bound under a random temporary name in the same directory,
/// given `mode`, then hard-linked to `path` (which fails if anything took the path meanwhile)
/// and the temporary name removed. An exclusive `flock` on `PATH.lock` (created 0600, kept
/// afterwards) is taken first and held in `identity->lock_fd` while the socket is served, so
/// that two daemons starting at once cannot both decide a socket is stale. Another holder of
/// the lock, or a socket at `path` that accepts (or queues) a connection: -EADDRINUSE. A socket
/// that refuses (its daemon is gone) is removed first; anything else at `path` (a file, a
/// directory) is left alone: -EEXIST. -ENAMETOOLONG when `path` (at most 107 bytes) or the
/// temporary name (its directory and 14 bytes) does not fit `sun_path`. Returns the
/// descriptor or -errno.
int cuvs_unix_listen(const char *path, unsigned mode, int backlog, cuvs_socket_identity *identity);

/// Removes `path` if it is still the socket `identity` names, then releases the lock. 0, or
/// -errno (-ESTALE when something else is there now, which is left alone).
int cuvs_unix_unlink_if_same(const char *path, cuvs_socket_identity *identity);

/// The peer of a connected `AF_UNIX` socket as the kernel recorded it at connect time
/// (`SO_PEERCRED`). 0 or -errno.
int cuvs_peer_credentials(int fd, int *pid, unsigned *uid, unsigned *gid);

/// Connects a close-on-exec `AF_UNIX` stream socket to `path` (clients: `uvsctl`, tests),
/// trying for at most `timeout_ms` while the listener's backlog is full (a wedged daemon):
/// -ETIMEDOUT then; a negative timeout waits as long as it takes. The socket returned is
/// blocking. Returns the descriptor or -errno.
int cuvs_unix_connect(const char *path, int timeout_ms);

/// Starts the descendant sentinel: a forked copy of this process that runs only the C code of
/// `sentinel_main` (system calls on static memory: safe after a fork of a threaded program),
/// holding no descriptor but `pipe_read`, on which nothing is ever written: it sleeps in
/// `read` until end of file (every copy of the write end is closed: the daemon has exited or
/// died, even by SIGKILL). It then kills every process group listed in `groups` (a
/// `MAP_SHARED` table of `capacity` entries the daemon keeps up to date with plain stores: a
/// positive entry is a live group), then every process whose environment holds `cookie` (a
/// `NAME=value` string its descendants inherit), scanning /proc until none is left (a few
/// passes at most), and exits. So the daemon pays no system call per child, and the sentinel
/// never wakes while the daemon lives. It runs in a session of its own and ignores SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 (a signal or a kill aimed at the daemon's
/// group must not take it first). Returns its pid, or
/// -errno. The caller closes `pipe_read` afterwards and keeps the write end (close-on-exec).
/// With `release_pages` set (and this process single-threaded), the sentinel first does what
/// `cuvs_release_clean_file_pages` does, on the mappings this process has when it starts, so
/// that it keeps only the few pages it runs.
int cuvs_sentinel_start(int pipe_read, int pipe_write, const char *cookie, const volatile int *groups, int capacity,
                        int release_pages);

/// Unmaps this process's pages of read-only private file mappings that nobody has written to:
/// the code and constant data of the executable and its libraries (`r-xp` and `r--p` mappings
/// of a file with no anonymous page in memory or in swap, as /proc/self/smaps lists them, and
/// none locked), with `madvise(MADV_DONTNEED)`. Their contents are the file's, so a page used
/// again is mapped back from the page cache (or read again) and reads the same bytes; a mapping
/// that holds a page someone wrote (relocated data, a debugger's breakpoint) is left alone. Only
/// while the process has a single thread (otherwise -EBUSY): another thread could unmap a listed
/// file and map something else at its address before the madvise. Returns the kilobytes that
/// were resident in the mappings released, or -errno.
long cuvs_release_clean_file_pages(void);

/// One resource limit for a spawned child (`setrlimit` in the child before exec).
typedef struct cuvs_resource_limit {
    int resource;                 // RLIMIT_*
    unsigned long long soft;      // RLIM_INFINITY (all ones) for unlimited
    unsigned long long hard;
} cuvs_resource_limit;

/// Options for `cuvs_spawn`: the Linux fast path that `uv_spawn` cannot offer
/// (it has no hook between fork and exec).
typedef struct cuvs_spawn_options {
    const char *file;          // path of the executable (already resolved)
    char *const *argv;         // NULL-terminated
    char *const *envp;         // NULL-terminated
    const char *cwd;           // NULL: inherit
    int stdio_fds[3];          // descriptor to install as 0, 1, 2 (-1: /dev/null)
    const int *extra_fds;      // descriptors to install as 3, 4, ... (may be NULL)
    int extra_count;
    int new_session;           // setsid() in the child
    int parent_death_signal;   // 0: none; else prctl(PR_SET_PDEATHSIG, sig)
    int set_uid, uid;          // drop to uid when set_uid
    int set_gid, gid;          // drop to gid when set_gid
    int set_groups;            // replace the supplementary groups with groups[0..<group_count]
                               // (otherwise they are cleared when set_gid)
    const unsigned *groups;
    int group_count;
    int set_umask;             // umask(umask_value) in the child
    unsigned umask_value;
    const cuvs_resource_limit *limits;   // applied in the child, before credentials drop
    int limit_count;
    int child_runs_first;      // the child makes the calling thread SCHED_BATCH until it resumes (see cuvs_spawn)
    int pause_before_exec_fd;  // tests only: when > 0, the child reads one byte from it just before execve
} cuvs_spawn_options;

/// The step of a spawn that failed in the child, so that an error can say what failed.
typedef enum cuvs_spawn_step {
    CUVS_SPAWN_STEP_SESSION = 1,               // setsid
    CUVS_SPAWN_STEP_PARENT_DEATH_SIGNAL = 2,   // prctl(PR_SET_PDEATHSIG), or the parent already gone
    CUVS_SPAWN_STEP_DESCRIPTORS = 3,           // installing 0, 1, 2 and the extra descriptors
    CUVS_SPAWN_STEP_CHDIR = 4,
    CUVS_SPAWN_STEP_LIMITS = 5,                // prlimit
    CUVS_SPAWN_STEP_GROUPS = 6,                // setgroups
    CUVS_SPAWN_STEP_GID = 7,                   // setgid
    CUVS_SPAWN_STEP_UID = 8,                   // setuid
    CUVS_SPAWN_STEP_EXEC = 9,                  // execve
} cuvs_spawn_step;

/// Spawns a child with vfork semantics (CLONE_VM | CLONE_VFORK): the child sets up its
/// session, parent-death signal, stdio, extra descriptors and credentials, marks every other
/// descriptor close-on-exec in its own table, then execs. Returns the pid and stores a
/// close-on-exec pidfd in *pidfd_out (from CLONE_PIDFD, or -1 when the kernel has no pidfd);
/// on failure returns -errno (the exec error is reported synchronously). The caller's errno is
/// left as it was. When the child failed, *failed_step (if not NULL) says at which step; it is
/// left alone when the error came from the parent (clone).
///
/// With child_runs_first, the child first makes a calling thread in the default policy
/// (SCHED_OTHER) SCHED_BATCH, nice value and reset-on-fork kept: woken by the child's execve,
/// the thread then does not preempt the new program on their shared CPU but waits for it to
/// sleep or use up its time slice, and takes its own attributes back when it resumes. The
/// program keeps the parent's policy. A thread in any other policy is left alone. A custom time
/// slice of the thread (Linux 6.12+) is reset to the default, and a renice of the thread while
/// it is suspended is undone.
int cuvs_spawn(const cuvs_spawn_options *options, int *pidfd_out, cuvs_spawn_step *failed_step);

/// 1 when cuvs_spawn runs its child in this process's memory (CLONE_VM | CLONE_VFORK); 0 under
/// ThreadSanitizer, whose runtime cannot follow such a child, where it forks instead (and
/// child_runs_first has no effect).
int cuvs_spawn_shares_memory(void);

/// The same spawn with posix_spawn (POSIX_SPAWN_SETSID for the session, file actions for the
/// descriptors, closefrom and the working directory; glibc 2.34+): the Dispatch runtime's spawn. The parent-death
/// signal, the user/group fields, supplementary groups, umask and resource limits are not
/// supported here (posix_spawn has no hook for them) and must be 0. Returns the pid and a pidfd in *pidfd_out, or -errno.
int cuvs_posix_spawn(const cuvs_spawn_options *options, int *pidfd_out);

#ifdef __cplusplus
}
#endif

#endif
