// The supervision tree comes with the libuv runtime. The loop layer (`EventLoop`, `LoopTimer`,
// ...) is a module of its own, imported by name (`import UVLoop`): re-exporting it would put an
// `EventLoop` into the namespace of every program that also uses SwiftNIO.
@_exported import Supervision
