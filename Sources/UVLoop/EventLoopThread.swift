#if canImport(Glibc)
@preconcurrency import Glibc
#endif


/// A dedicated thread running one ``EventLoop`` until ``shutdown()``.
///
/// For programs whose main thread does something else, and for Swift concurrency code that wants
/// an executor on a loop: `thread.remote` is `Sendable`, runs closures on the loop, and is the
/// loop's `SerialExecutor`/`TaskExecutor`.
///
/// ```swift
/// let thread = try EventLoopThread()
/// try thread.remote.executeWithLoop { loop in /* create handles here */ }
/// try await withTaskExecutorPreference(thread.remote) { /* runs on the loop thread */ }
/// thread.shutdown()
/// ```
public final class EventLoopThread: Sendable {
    /// The loop's cross-thread entry and executor.
    public let remote: LoopRemote
    private let thread: LockedValue<pthread_t?>
    private let finished: LockedValue<Result<Void, UVError>?>

    private final class StartContext: Sendable {
        let ready = LockedValue<Result<LoopRemote, UVError>?>(nil)
        let finished = LockedValue<Result<Void, UVError>?>(nil)
    }

    /// Starts the thread and waits until its loop is ready.
    public init() throws(UVError) {
        let context = StartContext()
        var thread = pthread_t()
        let box = Unmanaged.passRetained(context).toOpaque()
        let created = pthread_create(&thread, nil, { argument in
            let context = Unmanaged<StartContext>.fromOpaque(argument!).takeRetainedValue()
            let loop: EventLoop
            do throws(UVError) {
                loop = try EventLoop()
            } catch {
                context.ready.withLock { $0 = .failure(error) }
                return nil
            }
            context.ready.withLock { $0 = .success(loop.remote) }
            loop.run(.untilStopped)
            let result: Result<Void, UVError>
            do throws(UVError) { try loop.close(); result = .success(()) } catch { result = .failure(error) }
            context.finished.withLock { $0 = result }
            return nil
        }, box)
        if created != 0 {
            Unmanaged<StartContext>.fromOpaque(box).release()
            throw UVError(errno: created, operation: "start the event loop thread")
        }
        // Wait for the loop (a short spin with yields: start-up is microseconds).
        var ready: Result<LoopRemote, UVError>?
        while ready == nil {
            ready = context.ready.withLock { $0 }
            if ready == nil { sched_yield() }
        }
        switch ready! {
        case .success(let remote): self.remote = remote
        case .failure(let error):
            pthread_join(thread, nil)
            throw error
        }
        self.thread = LockedValue(thread)
        self.finished = LockedValue(nil)
        self.context = context
    }

    private let context: StartContext

    /// Stops the loop, tears it down on its thread (every handle closed, `uv_loop_close`
    /// returning 0) and joins the thread. Idempotent.
    /// - Returns: the teardown result (an error means `uv_loop_close` failed).
    @discardableResult
    public func shutdown() -> Result<Void, UVError> {
        guard let thread = self.thread.withLock({ value -> pthread_t? in
            defer { value = nil }
            return value
        }) else {
            return finished.withLock { $0 } ?? .success(())
        }
        try? remote.stop()
        pthread_join(thread, nil)
        let result = context.finished.withLock { $0 } ?? .success(())
        finished.withLock { $0 = result }
        return result
    }

    deinit { shutdown() }
}
