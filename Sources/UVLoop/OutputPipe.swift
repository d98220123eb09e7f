import CLibUV
import ProcessSpawning

/// A `uv_pipe_t` carrying a child's stdout or stderr to the loop, split into lines.
/// It closes itself at end of file; the loop's teardown closes it otherwise.
final class OutputPipe: LoopHandle {
    let stream: StandardStream
    private var handler: ((ProcessOutput) -> Void)?
    private var lines: LineSplitter
    private let readBuffer: UnsafeMutableRawBufferPointer

    init(loop: EventLoop, stream: StandardStream, maxLineLength: Int, handler: @escaping (ProcessOutput) -> Void) {
        self.stream = stream
        self.handler = handler
        lines = LineSplitter(maxLineLength: maxLineLength)
        readBuffer = .allocate(byteCount: 16 * 1024, alignment: 16)
        let memory = LoopHandle.allocate(uv_pipe_t.self, on: loop)
        uv_pipe_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_pipe_t.self), 0)
        super.init(loop: loop, initialisedHandle: memory)
    }

    deinit { readBuffer.deallocate() }

    /// Starts reading; called after a successful spawn connected the pipe.
    func startReading() throws(UVError) {
        let result = uv_read_start(streamHandle, { handle, _, buffer in
            guard let handle, let data = handle.pointee.data, let buffer else { return }
            let pipe = Unmanaged<OutputPipe>.fromOpaque(data).takeUnretainedValue()
            buffer.pointee = uv_buf_init(pipe.readBuffer.baseAddress?.assumingMemoryBound(to: CChar.self),
                                         UInt32(pipe.readBuffer.count))
        }, { stream, count, _ in
            guard let stream, let data = stream.pointee.data else { return }
            Unmanaged<OutputPipe>.fromOpaque(data).takeUnretainedValue().didRead(count)
        })
        try UVError.check(result, "read child \(stream)")
    }

    private func didRead(_ count: Int) {
        if count > 0 {
            let stream = self.stream
            lines.feed(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count])) { line in
                handler?(.line(stream, line))
            }
        } else if count < 0 {
            // UV_EOF or a read error: either way the stream is over.
            finish()
        }
    }

    private func finish() {
        guard isOpen else { return }
        let stream = self.stream
        let handler = self.handler
        lines.finish { line in handler?(.line(stream, line)) }
        self.handler = nil
        close()
        handler?(.end(stream))
    }

    override func willClose() {
        uv_read_stop(streamHandle)
    }

    override func closeForTeardown() {
        finish()
        close()
    }
}
