// A daemon built on the one-call API, for tests that need a supervisor in its own process:
// killing it with SIGKILL, sending it SIGTERM. It prints one line per event:
//   started <path> <pid>      stopping <path>      exited <path> <reason>      final <reason>
// Usage: uvs-test-daemon CHILDREN   (CHILDREN sleeping process children c0, c1, ...)
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor

setvbuf(stdout, nil, _IOLBF, 0)
let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 3 : 3
let children = (0..<count).map { index in
    ChildSpec(id: "c\(index)", .process(ProcessSpec(argv: ["/bin/sleep", "600"])), shutdown: .timeout(.seconds(2)))
}
var options = DaemonOptions()
options.configure = { root in
    root.onEvent { event in
        switch event.kind {
        case .started(let pid): print("started \(event.path) \(pid ?? 0)")
        case .stopping: print("stopping \(event.path)")
        case .exited(let reason): print("exited \(event.path) \(reason)")
        case .supervisorStarted: print("ready")
        default: break
        }
    }
}
do {
    let reason = try SupervisorDaemon.run(SupervisorSpec(children: children), options: options)
    print("final \(reason)")
    exit(reason.exitStatus)
} catch {
    print("error \(error)")
    exit(2)
}
