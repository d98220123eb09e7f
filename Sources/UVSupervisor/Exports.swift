// The face most users import: the supervision tree, the loop layer, and the libuv runtime.
@_exported import Supervision
@_exported import UVLoop
