// uv-supervisor-demo: "let it crash", seen working. A tree of workers that crash on purpose
// (loop tasks and real processes), restarted with backoff; a subtree that exceeds its restart
// intensity and escalates; group strategies; then a graceful shutdown in reverse order.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor
import UVLoop

let options = DemoOptions.parse(CommandLine.arguments)
if options.workerProcess { runWorkerProcess() }
if options.storeProcess { runStoreProcess() }
setvbuf(stdout, nil, _IOLBF, 0)
exit(runDemo(options))

func runDemo(_ options: DemoOptions) -> Int32 {
    do {
        let loop = try EventLoop()
        let runtime = UVRuntime(loop: loop)
        // Every time shown is on the runtime's clock, the one events carry.
        let renderer = Renderer(options: options) { runtime.nowNanoseconds }
        let state = StoryState()
        let spec = makeStoryTree(loop: loop, duration: options.duration, state: state) { renderer.note($0, $1) }
        let root = try Supervisor(spec, runtime: runtime)
        renderer.root = root
        root.onEvent { renderer.event($0) }

        renderer.legend("""
        A supervision tree on one libuv loop. Workers crash on purpose; their supervisors restart them.
          workers/calc-task     a loop task: fails on every job factor that is a multiple of 3 (backoff grows)
          workers/calc-process  a real process: aborts on a multiple of 3 — only a process isolates a crash
                                that would take a task (and the supervisor with it) down
          db/connection         keeps failing until db exceeds 2 restarts in 3s and escalates to root
          cache                 oneForAll: one failure restarts all three
          pipeline              restForOne: the parser's failure restarts the parser and the writer
          service/store         a real process that loads for a moment, then says READY=1 (systemd's notify protocol)
          service/api           waits for store to be ready before it starts (as OTP's start_link)
          service/monitor       sends a heartbeat; once it hangs, its watchdog finds it and it is replaced
        """)

        var interrupts = 0
        func shutDown(_ why: String, within deadline: Duration) {
            renderer.say(why)
            root.shutdown(within: deadline)
        }
        let interrupt = try SignalWatcher(loop: loop, signal: SIGINT) { _ in
            interrupts += 1
            if interrupts == 1 {
                shutDown("Ctrl-C: shutting the tree down gracefully (Ctrl-C again kills at once)", within: .seconds(5))
            } else {
                shutDown("Ctrl-C again: killing what is left", within: .zero)
            }
        }
        let terminate = try SignalWatcher(loop: loop, signal: SIGTERM) { _ in
            shutDown("SIGTERM: shutting the tree down gracefully", within: .seconds(5))
        }
        let end = LoopTimer(loop: loop) {
            shutDown("Time is up: graceful shutdown, every supervisor stops its children last-started first.", within: .seconds(5))
        }
        try end.start(after: .milliseconds(Int(options.duration * 1000)))
        let redraw = LoopTimer(loop: loop) { renderer.refresh() }
        if options.live {
            renderer.refresh()   // the first frame at once, legend included
            try redraw.start(after: .milliseconds(100), repeating: .milliseconds(100))
        }

        root.onTermination { _ in
            [interrupt, terminate].forEach { $0.close() }
            end.close()
            redraw.close()
            loop.stop()
        }
        root.start()
        loop.run(.untilStopped)
        let final = root.finalReason ?? .shutdown
        renderer.summary(root.children(), final: final)
        try loop.close()
        return final.exitStatus
    } catch {
        fputs("uv-supervisor-demo: \(error)\n", stderr)
        return 1
    }
}
