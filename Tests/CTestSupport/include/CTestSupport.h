#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H

// What the tests need of Linux that Swift's Glibc module does not import (it is built without
// _GNU_SOURCE): thread ids and CPU affinity.

/// The calling thread's id (gettid).
int ctest_thread_id(void);

/// Pins the calling thread to the CPU it is running on. Returns its previous affinity mask (to
/// hand to ctest_restore_affinity), or NULL on failure.
void *ctest_pin_to_current_cpu(void);

/// Gives the calling thread back the mask ctest_pin_to_current_cpu saved, and frees it.
void ctest_restore_affinity(void *saved);

/// SCHED_RESET_ON_FORK, which sched_getscheduler ORs into the policy.
#define CTEST_SCHED_RESET_ON_FORK 0x40000000
/// SCHED_BATCH (3).
#define CTEST_SCHED_BATCH 3

#endif
