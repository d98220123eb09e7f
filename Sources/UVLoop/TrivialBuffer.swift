#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A growable buffer of trivially copyable entries in `malloc`'d memory, kept the way a C job
/// queue keeps its entries: an append is a bounds check and a store (no uniqueness check, no
/// reference counting, no value witnesses), clearing is resetting the count, and growth is
/// `realloc`, which for large buffers remaps pages instead of copying them.
///
/// Why not `Array`: at a million queued jobs, `Array`'s copy-on-grow (a new buffer, a
/// `memmove`, fresh pages faulted in) costs more than the jobs themselves (see
/// docs/PERFORMANCE.md).
struct TrivialBuffer<Element: BitwiseCopyable>: ~Copyable {
    private(set) var base: UnsafeMutablePointer<Element>
    private(set) var count = 0
    private var capacity: Int

    init(capacity: Int) {
        self.capacity = Swift.max(1, capacity)
        base = TrivialBuffer.reallocate(nil, capacity: self.capacity)
    }

    deinit { free(base) }

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    mutating func append(_ element: Element) {
        if count == capacity { grow() }
        (base + count).initialize(to: element)
        count &+= 1
    }

    /// Forgets every entry (nothing to deinitialise: the entries are trivial), keeping the memory.
    @inline(__always)
    mutating func removeAll() { count = 0 }

    /// Swaps contents with `other` (pointers and counts only).
    @inline(__always)
    mutating func exchange(with other: inout TrivialBuffer<Element>) {
        Swift.swap(&base, &other.base)
        Swift.swap(&count, &other.count)
        Swift.swap(&capacity, &other.capacity)
    }

    @inline(never)
    private mutating func grow() {
        capacity *= 2
        base = TrivialBuffer.reallocate(base, capacity: capacity)
    }

    private static func reallocate(_ memory: UnsafeMutablePointer<Element>?, capacity: Int) -> UnsafeMutablePointer<Element> {
        let (bytes, overflow) = capacity.multipliedReportingOverflow(by: MemoryLayout<Element>.stride)
        guard !overflow, let grown = realloc(memory, bytes) else {
            fatalError("TrivialBuffer: out of memory growing to \(capacity) entries")
        }
        return grown.bindMemory(to: Element.self, capacity: capacity)
    }
}
