// A complete small daemon: two services and a helper task under one supervisor.
// SIGTERM or Ctrl-C stops it gracefully (reverse order, within 10 s); the exit status is 0
// after a clean stop and 1 when the tree gave up (restart intensity exceeded).
#if canImport(Glibc)
import Glibc
#endif
import Logging
import UVSupervisor
import UVLoop

var api = ProcessSpec(argv: ["/bin/sh", "-c", "echo api up; exec sleep 3600"])
api.stdout = .capture

var worker = ProcessSpec(argv: ["/bin/sh", "-c", "echo working; sleep 2; exit 3"])  // crashes every 2 s
worker.stdout = .capture

let spec = SupervisorSpec(
    strategy: .oneForOne,
    intensity: RestartIntensity(maxRestarts: 5, period: .seconds(60)),
    children: [
        ChildSpec(id: "api", .process(api)),
        ChildSpec(id: "worker", .process(worker),
                  backoff: .exponential(initial: .milliseconds(500), maximum: .seconds(10))),
    ])

var options = DaemonOptions()
options.logger = Logger(label: "example-daemon")
options.configure = { root, _ in
    root.onEvent { event in
        if case .intensityExceeded = event.kind { print("giving up: \(event.path)") }
    }
}
let reason = try SupervisorDaemon.run(spec, options: options)
print("stopped: \(reason)")
exit(reason.exitStatus)
