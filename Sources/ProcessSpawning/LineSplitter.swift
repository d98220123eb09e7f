/// Splits a child's output stream into lines, with a cap on how long one line may grow: a
/// longer line is delivered in pieces of ``maxLineLength`` bytes of output each, so memory stays
/// bounded whatever the child writes. Both runtimes read captured streams through it.
///
/// A line is delivered without its newline. A piece that ends exactly where the line's newline
/// follows is not followed by an empty line. Bytes are decoded as UTF-8 with invalid sequences
/// replaced by U+FFFD, so a delivered string can be a few bytes longer than the output it came
/// from (a piece boundary can split a character, and invalid bytes grow on repair).
package struct LineSplitter {
    /// The default cap: 64 KiB.
    package static let defaultMaxLineLength = 64 * 1024

    /// The longest line delivered whole.
    package let maxLineLength: Int
    private var partial: [UInt8] = []
    /// Whether the bytes in `partial` continue a line that was already delivered in pieces.
    private var continuesPiece = false

    package init(maxLineLength: Int = LineSplitter.defaultMaxLineLength) {
        precondition(maxLineLength > 0, "maxLineLength must be positive")
        self.maxLineLength = maxLineLength
    }

    /// Feeds the next bytes of the stream; `deliver` receives every line (or piece) they complete.
    package mutating func feed(_ bytes: UnsafeRawBufferPointer, _ deliver: (String) -> Void) {
        var start = 0
        let count = bytes.count
        while start < count {
            var end = start
            while end < count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            // Append bytes[start..<end] to the line, delivering a piece each time it is full.
            var next = start
            while next < end {
                let take = Swift.min(maxLineLength - partial.count, end - next)
                partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[next..<(next + take)]))
                next += take
                if partial.count == maxLineLength {
                    deliverPartial(deliver)
                    continuesPiece = true
                }
            }
            guard end < count else { return }
            // A newline ends the line.
            if !(partial.isEmpty && continuesPiece) { deliverPartial(deliver) }
            continuesPiece = false
            start = end + 1
        }
    }

    /// The stream ended: delivers a last line that had no newline.
    package mutating func finish(_ deliver: (String) -> Void) {
        if !partial.isEmpty { deliverPartial(deliver) }
        continuesPiece = false
    }

    private mutating func deliverPartial(_ deliver: (String) -> Void) {
        let line = String(decoding: partial, as: UTF8.self)
        partial.removeAll(keepingCapacity: partial.count <= 4096)
        deliver(line)
    }
}
