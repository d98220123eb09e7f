#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H

// What the tests need of Linux that Swift's Glibc module does not import (it is built without
// _GNU_SOURCE): thread ids; and a spawn held before execve.

/// The calling thread's id (gettid).
int ctest_thread_id(void);

/// What the calling thread's scheduling policy was while a cuvs_spawn of /bin/true was held
/// just before its execve (pause_before_exec_fd), as another thread saw it, and after the spawn
/// returned.
typedef struct ctest_spawn_policies {
    int during;   // the last policy the watching thread read (sched_getscheduler)
    int after;    // the calling thread's policy once cuvs_spawn returned
    int spawned;  // cuvs_spawn's result (a pid, or -errno)
} ctest_spawn_policies;

/// Spawns /bin/true with cuvs_spawn (child_runs_first as given) and holds the child before its
/// execve while a second thread reads this thread's policy until it is `wanted` (reset-on-fork
/// ignored) or `timeout_ms` has passed; then the child goes on, is reaped, and the policies
/// seen are returned.
ctest_spawn_policies ctest_spawn_watching_policy(int child_runs_first, int wanted, int timeout_ms);

/// SCHED_RESET_ON_FORK, which sched_getscheduler ORs into the policy.
#define CTEST_SCHED_RESET_ON_FORK 0x40000000
/// SCHED_BATCH (3).
#define CTEST_SCHED_BATCH 3

#endif
