#define _GNU_SOURCE
#include "CTestSupport.h"
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

int ctest_thread_id(void) { return (int)gettid(); }

void *ctest_pin_to_current_cpu(void) {
    cpu_set_t *saved = malloc(sizeof *saved);
    if (saved == NULL) return NULL;
    if (sched_getaffinity(0, sizeof *saved, saved) != 0) { free(saved); return NULL; }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) { free(saved); return NULL; }
    return saved;
}

void ctest_restore_affinity(void *saved) {
    if (saved == NULL) return;
    sched_setaffinity(0, sizeof(cpu_set_t), saved);
    free(saved);
}
