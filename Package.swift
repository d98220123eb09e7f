// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "uv-supervisor",
    products: [
        .executable(name: "uv-supervisor-demo", targets: ["uv-supervisor-demo"]),
        .executable(name: "uv-supervisor-bench", targets: ["uv-supervisor-bench"]),
        .executable(name: "uvsctl", targets: ["uvsctl"]),
        .executable(name: "uv-supervisor", targets: ["uv-supervisor"]),
        .executable(name: "uv-supervisor-config", targets: ["uv-supervisor-config"]),
        .library(name: "UVSupervisor", targets: ["UVSupervisor"]),
        .library(name: "UVLoop", targets: ["UVLoop"]),
        .library(name: "UVSupervisorServiceLifecycle", targets: ["UVSupervisorServiceLifecycle"]),
        .library(name: "Supervision", targets: ["Supervision"]),
        .library(name: "SupervisionTesting", targets: ["SupervisionTesting"]),
        .library(name: "DispatchSupervisor", targets: ["DispatchSupervisor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        // `swift package generate-documentation` (a plugin: nothing of it is linked).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.4.0"),
        // For UVSupervisorServiceLifecycle only.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        // For the config tool only (YAML with line and column for every value); the daemon does
        // not link it (Yams brings Foundation).
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        // For `uvsctl` only; no library module depends on it.
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    ],
    targets: [
        // C: the system libuv and a few Linux shims. Nothing else in the package includes C headers.
        .systemLibrary(
            name: "CLibUV",
            path: "CModules/CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        .target(name: "CUVShims", path: "CModules/CUVShims"),
        // Spawning without libuv: checks, C strings, errno errors, the output line splitter.
        // Both runtimes use it; internal to the package.
        .target(name: "ProcessSpawning", dependencies: ["CUVShims"]),

        // Swift over libuv: the loop, handles, processes, cross-thread entry, executors.
        .target(name: "UVLoop", dependencies: ["CLibUV", "CUVShims", "ProcessSpawning"]),
        // The supervision tree. Knows no libuv and no Dispatch: it talks to `SupervisorRuntime`.
        .target(name: "Supervision", dependencies: [.product(name: "Logging", package: "swift-log"),
                                                    .product(name: "CoreMetrics", package: "swift-metrics")]),
        // The same supervision on Dispatch, for comparison (the benchmark runs both). No libuv.
        .target(name: "DispatchSupervisor", dependencies: ["Supervision", "ProcessSpawning", "CUVShims"]),
        // A manual runtime (virtual clock, scripted exits) for deterministic tests of any tree.
        .target(name: "SupervisionTesting", dependencies: ["Supervision"]),
        // The libuv runtime and the face most users import.
        .target(name: "UVSupervisor", dependencies: ["Supervision", "UVLoop", "CUVShims", .product(name: "CoreMetrics", package: "swift-metrics")]),

        // The tree as a ServiceLifecycle service, and services as workers: a product of its own
        // so that core users do not pay for ServiceLifecycle.
        .target(name: "UVSupervisorServiceLifecycle", dependencies: [
            "UVSupervisor", "UVLoop", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // Config files: the tree they describe, checked key by key (no YAML here: the config
        // tool parses, the daemon decodes the checked tree it hands over as JSON).
        .target(name: "UVSupervisorConfig", dependencies: ["UVSupervisor", .product(name: "Logging", package: "swift-log")]),
        // `uv-supervisor-config`: YAML in, a checked tree out (or FILE:LINE:COLUMN errors).
        .executableTarget(name: "uv-supervisor-config", dependencies: ["UVSupervisorConfig", "UVSupervisor",
                                                                       .product(name: "Yams", package: "Yams")]),
        // `uv-supervisor`: runs a tree from a config file, as a daemon.
        .executableTarget(name: "uv-supervisor", dependencies: ["UVSupervisorConfig", "UVSupervisor", "UVLoop", "CUVShims",
                                                                .product(name: "Logging", package: "swift-log")]),

        // `uvsctl`: talks to a daemon's control socket.
        .executableTarget(name: "uvsctl", dependencies: ["UVSupervisor", "CUVShims",
                                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // The demo: `swift run uv-supervisor-demo`.
        .executableTarget(name: "uv-supervisor-demo", dependencies: ["UVSupervisor"], path: "Examples/uv-supervisor-demo"),

        // The README's examples, compiled so that they stay true.
        .target(name: "ReadmeSnippets", dependencies: ["UVSupervisor", "SupervisionTesting", "UVSupervisorServiceLifecycle",
                                                 .product(name: "Logging", package: "swift-log"),
                                                 .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                path: "Examples/ReadmeSnippets"),
        .executableTarget(name: "example-daemon", dependencies: ["UVSupervisor", .product(name: "Logging", package: "swift-log")],
                          path: "Examples/example-daemon"),

        // The benchmark: `swift run -c release uv-supervisor-bench`, with its C floor and child.
        .executableTarget(name: "uv-supervisor-bench", dependencies: ["UVSupervisor", "DispatchSupervisor", "uvs-bench-c", "uvs-bench-child",
                                                                       .product(name: "CoreMetrics", package: "swift-metrics")],
                          path: "Benchmarks/uv-supervisor-bench"),
        .executableTarget(name: "uvs-bench-c", path: "Benchmarks/uvs-bench-c", linkerSettings: [.linkedLibrary("uv")]),
        .executableTarget(name: "uvs-bench-child", path: "Benchmarks/uvs-bench-child"),

        // A small C program the tests spawn (lists its fds, ignores SIGTERM, forks, ...).
        .executableTarget(name: "uvs-test-child", dependencies: ["CUVShims"], path: "TestHelpers/uvs-test-child"),
        // A daemon on the one-call API, killed and signalled by the runtime tests.
        .executableTarget(name: "uvs-test-daemon", dependencies: ["UVSupervisor", "UVSupervisorServiceLifecycle",
                                                                  .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                          path: "TestHelpers/uvs-test-daemon"),

        // Shared by the test targets: helper paths, fd and zombie checks, bounded waits.
        .target(name: "TestSupport", dependencies: ["UVLoop", "UVSupervisor", "CUVShims"], path: "Tests/TestSupport"),
        // What the tests need of Linux that Swift's Glibc module leaves out (thread ids), and a spawn held before execve.
        .target(name: "CTestSupport", dependencies: ["CUVShims"], path: "Tests/CTestSupport"),

        .testTarget(name: "UVLoopTests", dependencies: ["UVLoop", "CUVShims", "TestSupport", "CTestSupport", "uvs-test-child"]),
        .testTarget(name: "ReliabilityTests", dependencies: ["UVSupervisor", "TestSupport", "uvs-test-child", "uvs-test-daemon"]),
        .testTarget(name: "ServiceLifecycleTests", dependencies: [
            "UVSupervisorServiceLifecycle", "UVSupervisor", "UVLoop", "TestSupport", "uvs-test-daemon",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "SupervisionTests", dependencies: ["Supervision", "SupervisionTesting", .product(name: "Logging", package: "swift-log"),
                                                             .product(name: "MetricsTestKit", package: "swift-metrics")]),
        .testTarget(name: "UVSupervisorTests", dependencies: ["UVSupervisor", "CUVShims", "DispatchSupervisor", "SupervisionTesting", "TestSupport", "uvs-test-child", "uvs-test-daemon", "uv-supervisor-demo", "uvsctl",
                                                              "UVSupervisorConfig", "uv-supervisor", "uv-supervisor-config"]),
    ],
    swiftLanguageModes: [.v6]
)
