// The C floor of the benchmark: each workload written directly against libuv, the way a
// careful C programmer would (no allocation per event where it can be avoided).
// Usage: uvs-bench-c WORKLOAD SIZE [HELPER]   prints: metric=NAME unit=UNIT value=FLOAT
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static double cpu_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time);
    return time.tv_sec * 1e9 + time.tv_nsec;
}

static void report(const char *metric, const char *unit, double value) {
    printf("metric=%s unit=%s value=%.3f\n", metric, unit, value);
}

static uint32_t rng_state = 12345;
static uint32_t next_random(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5;
    return rng_state;
}

static void close_all(uv_loop_t *loop) {
    uv_walk(loop, (uv_walk_cb)(void (*)(uv_handle_t *, void *))0, NULL);
}

// ---- timers_1m: N one-shot timers, random timeouts 0-1000 ms; CPU ns per timer ----
static long fired;
static void on_timer(uv_timer_t *timer) { (void)timer; fired++; }

static void timers(long n) {
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t *timers = malloc(sizeof(uv_timer_t) * n);
    double cpu0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        uv_timer_init(loop, &timers[i]);
        uv_timer_start(&timers[i], on_timer, next_random() % 1001, 0);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double cpu = cpu_ns() - cpu0;
    if (fired != n) { fprintf(stderr, "fired %ld of %ld\n", fired, n); exit(1); }
    report("cpu_per_timer", "ns", cpu / n);
    for (long i = 0; i < n; i++) uv_close((uv_handle_t *)&timers[i], NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    free(timers);
}

// ---- timer_rearm: N timers, each re-armed 10 times; ns per re-arm ----
static void rearm(long n) {
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t *timers = malloc(sizeof(uv_timer_t) * n);
    for (long i = 0; i < n; i++) {
        uv_timer_init(loop, &timers[i]);
        uv_timer_start(&timers[i], on_timer, 1000 + next_random() % 1000, 0);
    }
    uint64_t t0 = uv_hrtime();
    for (int round = 0; round < 10; round++)
        for (long i = 0; i < n; i++) uv_timer_start(&timers[i], on_timer, 1000 + next_random() % 1000, 0);
    uint64_t elapsed = uv_hrtime() - t0;
    report("per_rearm", "ns", (double)elapsed / (n * 10.0));
    for (long i = 0; i < n; i++) uv_close((uv_handle_t *)&timers[i], NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    free(timers);
}

// ---- a run-soon queue (check + idle), as the Swift loop layer has ----
typedef struct { void (*fn)(void *); void *arg; } job_t;
static job_t *soon, *draining;
static long soon_count, soon_capacity, draining_capacity;
static uv_check_t soon_check;
static uv_idle_t soon_idle;
static int idle_on;

static void idle_noop(uv_idle_t *handle) { (void)handle; }
static void run_soon(uv_loop_t *loop, void (*fn)(void *), void *arg) {
    (void)loop;
    if (soon_count == soon_capacity) {
        soon_capacity = soon_capacity ? soon_capacity * 2 : 64;
        soon = realloc(soon, sizeof(job_t) * soon_capacity);
    }
    soon[soon_count++] = (job_t){ fn, arg };
    if (!idle_on) { idle_on = 1; uv_idle_start(&soon_idle, idle_noop); }
}
static void drain_soon(uv_check_t *handle) {
    (void)handle;
    if (soon_count == 0) { if (idle_on) { idle_on = 0; uv_idle_stop(&soon_idle); } return; }
    job_t *batch = soon; long count = soon_count; long cap = soon_capacity;
    soon = draining; soon_capacity = draining_capacity; soon_count = 0;
    draining = batch; draining_capacity = cap;
    for (long i = 0; i < count; i++) batch[i].fn(batch[i].arg);
    if (soon_count == 0 && idle_on) { idle_on = 0; uv_idle_stop(&soon_idle); }
}
static void soon_init(uv_loop_t *loop) {
    uv_check_init(loop, &soon_check);
    uv_check_start(&soon_check, drain_soon);
    uv_unref((uv_handle_t *)&soon_check);
    uv_idle_init(loop, &soon_idle);
}
static void soon_close(void) {
    uv_close((uv_handle_t *)&soon_check, NULL);
    uv_close((uv_handle_t *)&soon_idle, NULL);
}

// ---- submit_same_thread: the loop schedules N jobs to itself; ns per job ----
static long counter, target;
static void count_job(void *arg) { (void)arg; counter++; }
static void same_thread(long n) {
    uv_loop_t *loop = uv_default_loop();
    soon_init(loop);
    uint64_t t0 = uv_hrtime();
    for (long i = 0; i < n; i++) run_soon(loop, count_job, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uint64_t elapsed = uv_hrtime() - t0;
    if (counter != n) { fprintf(stderr, "ran %ld of %ld\n", counter, n); exit(1); }
    report("per_job", "ns", (double)elapsed / n);
    soon_close();
    uv_run(loop, UV_RUN_DEFAULT);
}

// ---- submit_cross_thread: another thread submits N jobs; ns per job ----
static pthread_mutex_t remote_lock = PTHREAD_MUTEX_INITIALIZER;
static job_t *remote_jobs, *remote_spare;
static long remote_count, remote_capacity, spare_capacity;
static int wakeup_pending;
static uv_async_t remote_async;
static uint64_t remote_start;

static void remote_drain(uv_async_t *handle) {
    pthread_mutex_lock(&remote_lock);
    job_t *batch = remote_jobs; long count = remote_count; long cap = remote_capacity;
    remote_jobs = remote_spare; remote_capacity = spare_capacity; remote_count = 0;
    wakeup_pending = 0;
    pthread_mutex_unlock(&remote_lock);
    for (long i = 0; i < count; i++) batch[i].fn(batch[i].arg);
    remote_spare = batch; spare_capacity = cap;
    if (counter >= target) {
        report("per_job", "ns", (double)(uv_hrtime() - remote_start) / target);
        uv_close((uv_handle_t *)handle, NULL);
    }
}
static void *producer(void *arg) {
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&remote_lock);
        if (remote_count == remote_capacity) {
            remote_capacity = remote_capacity ? remote_capacity * 2 : 1024;
            remote_jobs = realloc(remote_jobs, sizeof(job_t) * remote_capacity);
        }
        remote_jobs[remote_count++] = (job_t){ count_job, NULL };
        if (!wakeup_pending) { wakeup_pending = 1; uv_async_send(&remote_async); }
        pthread_mutex_unlock(&remote_lock);
    }
    return NULL;
}
static void cross_thread(long n) {
    uv_loop_t *loop = uv_default_loop();
    uv_async_init(loop, &remote_async, remote_drain);
    target = n;
    pthread_t thread;
    remote_start = uv_hrtime();
    pthread_create(&thread, NULL, producer, (void *)n);
    uv_run(loop, UV_RUN_DEFAULT);
    pthread_join(thread, NULL);
}

// ---- task_restart: a task that fails at once, restarted through the run-soon queue ----
static uv_loop_t *task_loop;
static void task_start(void *arg);
static void task_failed(void) { counter++; if (counter < target) run_soon(task_loop, task_start, NULL); }
static void task_start(void *arg) { (void)arg; task_failed(); /* fails at once */ }
static void task_restart(long n) {
    task_loop = uv_default_loop();
    soon_init(task_loop);
    target = n;
    uint64_t t0 = uv_hrtime();
    run_soon(task_loop, task_start, NULL);
    uv_run(task_loop, UV_RUN_DEFAULT);
    uint64_t elapsed = uv_hrtime() - t0;
    report("per_restart", "ns", (double)elapsed / n);
    soon_close();
    uv_run(task_loop, UV_RUN_DEFAULT);
}

// ---- process_restart_gap / process_crash_loop: raw uv_spawn from the exit callback ----
static uv_process_t process;
static uv_process_options_t process_options;
static char *process_args[4];
static long spawned;
static uint64_t loop_deadline;
static void on_exit_cb(uv_process_t *handle, int64_t status, int signal);
static void spawn_next(void) {
    process_options.exit_cb = on_exit_cb;
    int rc = uv_spawn(uv_default_loop(), &process, &process_options);
    if (rc != 0) { fprintf(stderr, "uv_spawn: %s\n", uv_strerror(rc)); exit(1); }
    spawned++;
}
static void on_closed(uv_handle_t *handle) {
    (void)handle;
    if (spawned < target && (loop_deadline == 0 || uv_hrtime() < loop_deadline)) spawn_next();
}
static void on_exit_cb(uv_process_t *handle, int64_t status, int signal) {
    (void)status; (void)signal;
    counter++;
    // The handle must be closed before it can be reused for the replacement.
    uv_close((uv_handle_t *)handle, on_closed);
}
static void processes(const char *helper, const char *mode, const char *file, long n, double seconds) {
    process_args[0] = (char *)helper; process_args[1] = (char *)mode; process_args[2] = (char *)file; process_args[3] = NULL;
    process_options.file = helper;
    process_options.args = process_args;
    process_options.flags = UV_PROCESS_DETACHED;
    target = n;
    uint64_t t0 = uv_hrtime();
    double cpu0 = cpu_ns();
    if (seconds > 0) loop_deadline = t0 + (uint64_t)(seconds * 1e9);
    spawn_next();
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    if (seconds > 0) {
        report("restarts_per_second", "1/s", counter / ((uv_hrtime() - t0) / 1e9));
        report("supervisor_cpu_per_restart", "µs", (cpu_ns() - cpu0) / (counter > 0 ? counter : 1) / 1e3);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: uvs-bench-c WORKLOAD SIZE [HELPER FILE]\n"); return 64; }
    const char *workload = argv[1];
    long size = atol(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(workload, "timers_1m")) timers(size);
    else if (!strcmp(workload, "timer_rearm")) rearm(size);
    else if (!strcmp(workload, "submit_same_thread")) same_thread(size);
    else if (!strcmp(workload, "submit_cross_thread")) cross_thread(size);
    else if (!strcmp(workload, "task_restart")) task_restart(size);
    else if (!strcmp(workload, "process_restart_gap") && argc > 4) processes(argv[3], "pulse", argv[4], size, 0);
    else if (!strcmp(workload, "process_crash_loop") && argc > 3) processes(argv[3], "exit", "", 1L << 40, size / 1000.0);
    else { fprintf(stderr, "unknown workload %s\n", workload); return 64; }
    (void)close_all;
    int rc = uv_loop_close(uv_default_loop());
    if (rc != 0) { fprintf(stderr, "uv_loop_close: %s\n", uv_err_name(rc)); return 1; }
    return 0;
}
