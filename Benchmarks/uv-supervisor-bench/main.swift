// uv-supervisor-bench: the same workloads on raw C libuv (`c`), the libuv runtime (`uv`) and
// the Dispatch runtime (`dispatch`), each side in its own process, side by side as ratios.
//   swift run -c release uv-supervisor-bench [--quick] [--json] [--only NAME] [--rounds N]
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

setvbuf(stdout, nil, _IOLBF, 0)
let arguments = CommandLine.arguments
if arguments.count >= 5 && arguments[1] == "--side" {
    let side = arguments[2], workload = arguments[3]
    let size = Int(arguments[4]) ?? 0
    let file = arguments.count > 5 ? arguments[5] : ""
    do {
        if side == "uv" { try UVSide.run(workload, size: size, file: file) } else { try DispatchSide.run(workload, size: size, file: file) }
        exit(0)
    } catch {
        fputs("\(side) \(workload): \(error)\n", stderr)
        exit(1)
    }
}

var driver = Driver()
var index = 1
while index < arguments.count {
    switch arguments[index] {
    case "--quick": driver.quick = true
    case "--json": driver.json = true
    case "--only":
        index += 1
        driver.only = index < arguments.count ? arguments[index] : ""
    case "--rounds":
        index += 1
        driver.rounds = max(1, Int(index < arguments.count ? arguments[index] : "") ?? 5)
    case "-h", "--help":
        print("""
        USAGE: uv-supervisor-bench [--quick] [--json] [--only WORKLOAD] [--rounds N]

        Runs each workload on three sides, each in its own process: c (the same work written
        directly against libuv in C: the floor), uv (this library) and dispatch (its Dispatch
        runtime / Dispatch itself). Prints medians with min-max and the ratios uv/c and dispatch/uv.
          --quick        every workload at a small size (a smoke test, under a minute)
          --json         one JSON object on stdout
          --only NAME    one workload: \(workloads.map(\.name).joined(separator: ", "))
          --rounds N     rounds per workload (default 5)
        Build it in release mode: swift run -c release uv-supervisor-bench
        """)
        exit(0)
    default:
        fputs("unknown argument \(arguments[index]); see --help\n", stderr)
        exit(64)
    }
    index += 1
}
do {
    exit(try driver.run())
} catch {
    fputs("uv-supervisor-bench: \(error)\n", stderr)
    exit(1)
}
