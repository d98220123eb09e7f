/// The readiness and liveness tracking of one child's current incarnation: its deadline timer
/// (the ready timeout, then the watchdog), its probe timer and the probe attempt in flight.
/// Made at the first start of a child that has checks, reused by its restarts.
final class ChildHealth {
    enum Phase {
        /// Started, not ready yet.
        case awaitingReady
        /// Ready; liveness checks (if any) run.
        case live
        /// Ended, or failed a check and being stopped: nothing more is checked.
        case off
    }

    var phase: Phase = .off
    /// The deadline timer: the ready timeout while awaiting readiness, the watchdog once live.
    var deadlineTimer: (any RuntimeTimer)?
    var readyDeadline: Int64 = 0
    /// The probe timer: the wait before the next attempt, then the attempt's timeout.
    var probeTimer: (any RuntimeTimer)?
    var probeAttempt: (any RuntimeProbe)?
    var consecutiveProbeFailures = 0
    /// Increments with every attempt, so that a late completion of an abandoned one is ignored.
    var probeSerial: UInt64 = 0

    /// Stops all checking (the incarnation ended, or failed a check).
    func reset() {
        phase = .off
        deadlineTimer?.disarm()
        probeTimer?.disarm()
        probeAttempt.take()?.cancel()
        consecutiveProbeFailures = 0
        probeSerial &+= 1
    }

    /// Releases the timers for good (the record goes away).
    func close() {
        reset()
        deadlineTimer?.close()
        probeTimer?.close()
    }
}

extension Supervisor {
    /// Arms the checks of a child that has just been started.
    func beginHealthChecks(_ record: ChildRecord, _ settings: HealthSettings) {
        let health = record.health ?? makeHealth(for: record)
        health.reset()
        if settings.readiness == .started {
            health.phase = .live
            record.isReady = true
            beginLiveness(record, health, settings)
            return
        }
        health.phase = .awaitingReady
        health.readyDeadline = now.addingSaturating(settings.readyTimeoutNanoseconds)
        health.deadlineTimer?.arm(afterNanoseconds: settings.readyTimeoutNanoseconds)
        if case .probe(let probe) = settings.readiness {
            scheduleProbe(record, health, after: probe.initialDelay.nanosecondsClamped)
        }
    }

    private func makeHealth(for record: ChildRecord) -> ChildHealth {
        let health = ChildHealth()
        // Weak: a queued timer event may outlive a record that was removed.
        health.deadlineTimer = runtime.makeTimer { [weak self, weak record] in
            guard let self, let record else { return }
            self.perform { self.deadlinePassed(record) }
        }
        health.probeTimer = runtime.makeTimer { [weak self, weak record] in
            guard let self, let record else { return }
            self.perform { self.probeTimerFired(record) }
        }
        record.health = health
        return health
    }

    /// What a running child reported (a notify message, a task's call).
    func handleNotice(_ record: ChildRecord, _ notice: WorkerNotice) {
        guard record.isActive else { return }
        guard let settings = record.healthSettings else {
            // No checks configured: only its status lines matter.
            if case .status(let text) = notice { noteStatus(record, text) }
            return
        }
        let health = record.health
        switch notice {
        case .ready:
            // Only a child that was to say so; a second READY=1 changes nothing.
            guard settings.readiness == .notify || settings.readinessIsDescriptor,
                  record.state == .running, let health, health.phase == .awaitingReady else { return }
            becomeReady(record, health, settings)
        case .status(let text):
            noteStatus(record, text)
        case .watchdog:
            guard case .watchdog(let interval) = settings.liveness, let health, health.phase == .live else { return }
            // Pushing the deadline back: libuv defers a later deadline, so a ping costs no heap work.
            health.deadlineTimer?.arm(afterNanoseconds: interval.nanosecondsClamped)
        case .watchdogTrigger:
            guard case .watchdog = settings.liveness, let health, health.phase != .off else { return }
            failLiveness(record, health, why: "watchdog triggered by the child (WATCHDOG=trigger)")
        case .extendTimeout(let extra):
            guard let health, health.phase == .awaitingReady else { return }
            let extended = now.addingSaturating(extra.nanosecondsClamped)
            if extended > health.readyDeadline {
                health.readyDeadline = extended
                health.deadlineTimer?.arm(afterNanoseconds: extended - now)
            }
        case .stopping:
            break
        }
    }

    private func noteStatus(_ record: ChildRecord, _ text: String) {
        record.statusText = text
        emit(record, .status(text))
    }

    private func becomeReady(_ record: ChildRecord, _ health: ChildHealth, _ settings: HealthSettings) {
        health.deadlineTimer?.disarm()
        health.probeTimer?.disarm()
        health.probeAttempt.take()?.cancel()
        health.probeSerial &+= 1
        health.consecutiveProbeFailures = 0
        health.phase = .live
        emit(record, .ready(after: .nanoseconds(max(0, now - record.startedAt))))
        beginLiveness(record, health, settings)
        childBecameReady(record)
    }

    private func beginLiveness(_ record: ChildRecord, _ health: ChildHealth, _ settings: HealthSettings) {
        switch settings.liveness {
        case .none:
            break
        case .watchdog(let interval):
            health.deadlineTimer?.arm(afterNanoseconds: interval.nanosecondsClamped)
        case .probe(let probe):
            scheduleProbe(record, health, after: probe.initialDelay.nanosecondsClamped)
        }
    }

    /// The deadline timer fired: the ready timeout or the watchdog.
    private func deadlinePassed(_ record: ChildRecord) {
        guard record.state == .running, let health = record.health, let settings = record.healthSettings else { return }
        switch health.phase {
        case .awaitingReady:
            // EXTEND_TIMEOUT_USEC moved the deadline; the recorded one decides.
            let left = health.readyDeadline - now
            if left > 0 { return health.deadlineTimer?.arm(afterNanoseconds: left) ?? () }
            let why = "not ready within \(formatDuration(.nanoseconds(settings.readyTimeoutNanoseconds)))" + settings.readinessHint
            emit(record, .notReady(why))
            fail(record, health, reason: .startFailed(why))
        case .live:
            guard case .watchdog(let interval) = settings.liveness else { return }
            let pinger = record.loopTaskStart != nil || record.spec.kind.childKind == .asyncTask ? "heartbeat()" : "WATCHDOG=1"
            failLiveness(record, health, why: "watchdog: no \(pinger) within \(formatDuration(interval))")
        case .off:
            break
        }
    }

    private func failLiveness(_ record: ChildRecord, _ health: ChildHealth, why: String) {
        emit(record, .livenessFailed(why))
        fail(record, health, reason: .unresponsive(why))
    }

    /// Stops a child that failed a check, by its shutdown policy; it ends with `reason`.
    private func fail(_ record: ChildRecord, _ health: ChildHealth, reason: ExitReason) {
        health.reset()
        record.isReady = false
        guard record.state == .running else { return }
        enqueueStops([(record, .failed(reason, generation: record.generation))])
    }

    // MARK: Probes

    private func scheduleProbe(_ record: ChildRecord, _ health: ChildHealth, after nanoseconds: Int64) {
        health.probeAttempt.take()?.cancel()
        health.probeSerial &+= 1
        health.probeTimer?.arm(afterNanoseconds: max(0, nanoseconds))
    }

    /// The probe timer fired: time for an attempt, or the attempt in flight timed out.
    private func probeTimerFired(_ record: ChildRecord) {
        guard record.state == .running, let health = record.health, health.phase != .off,
              let probe = record.healthSettings?.activeProbe(for: health.phase) else { return }
        if let attempt = health.probeAttempt.take() {
            attempt.cancel()
            health.probeSerial &+= 1
            probeFinished(record, health, probe, .failure("timed out after \(formatDuration(probe.timeout))"))
            return
        }
        health.probeSerial &+= 1
        let serial = health.probeSerial
        let generation = record.generation
        health.probeAttempt = runtime.startProbe(probe.check) { [weak self, weak record] result in
            guard let self, let record, record.generation == generation,
                  let health = record.health, health.probeSerial == serial else { return }
            self.perform {
                health.probeAttempt = nil
                health.probeTimer?.disarm()
                self.probeFinished(record, health, probe, result)
            }
        }
        health.probeTimer?.arm(afterNanoseconds: probe.timeout.nanosecondsClamped)
    }

    private func probeFinished(_ record: ChildRecord, _ health: ChildHealth, _ probe: Probe, _ result: ProbeResult) {
        guard record.state == .running, let settings = record.healthSettings else { return }
        switch (health.phase, result) {
        case (.awaitingReady, .success):
            becomeReady(record, health, settings)
        case (.awaitingReady, .failure):
            // Not ready yet: try again until the ready timeout.
            scheduleProbe(record, health, after: probe.interval.nanosecondsClamped)
        case (.live, .success):
            health.consecutiveProbeFailures = 0
            scheduleProbe(record, health, after: probe.interval.nanosecondsClamped)
        case (.live, .failure(let why)):
            health.consecutiveProbeFailures += 1
            if health.consecutiveProbeFailures >= probe.failureThreshold {
                failLiveness(record, health, why: "\(probe.check) failed \(health.consecutiveProbeFailures) times in a row: \(why)")
            } else {
                scheduleProbe(record, health, after: probe.interval.nanosecondsClamped)
            }
        case (.off, _):
            break
        }
    }
}

extension HealthSettings {
    /// The probe that runs in `phase`, if any.
    func activeProbe(for phase: ChildHealth.Phase) -> Probe? {
        switch phase {
        case .awaitingReady:
            if case .probe(let probe) = readiness { return probe }
        case .live:
            if case .probe(let probe) = liveness { return probe }
        case .off:
            break
        }
        return nil
    }

    var readinessIsDescriptor: Bool {
        if case .descriptor = readiness { return true }
        return false
    }

    /// What the child was expected to do, for the not-ready reason.
    var readinessHint: String {
        switch readiness {
        case .started: return ""
        case .notify: return " (no READY=1 / ready())"
        case .descriptor(let descriptor): return " (no newline on descriptor \(descriptor))"
        case .probe(let probe): return " (\(probe.check) never succeeded)"
        }
    }
}
