import CLibUV

/// A `uv_pipe_t` carrying a child's stdout or stderr to the loop, split into lines.
/// It closes itself at end of file; the loop's teardown closes it otherwise.
final class OutputPipe: LoopHandle {
    let stream: OutputStream
    private var handler: ((ProcessOutput) -> Void)?
    private var partialLine: [UInt8] = []
    private let readBuffer: UnsafeMutableRawBufferPointer
    private let maxLineLength: Int

    var streamPointer: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_stream_t.self)
    }

    init(loop: EventLoop, stream: OutputStream, maxLineLength: Int, handler: @escaping (ProcessOutput) -> Void) {
        self.stream = stream
        self.handler = handler
        self.maxLineLength = maxLineLength
        readBuffer = .allocate(byteCount: 16 * 1024, alignment: 16)
        let memory = LoopHandle.allocate(uv_pipe_t.self)
        uv_pipe_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_pipe_t.self), 0)
        super.init(loop: loop, initialisedHandle: memory)
    }

    deinit { readBuffer.deallocate() }

    /// Starts reading; called after a successful spawn connected the pipe.
    func startReading() throws(UVError) {
        let result = uv_read_start(streamPointer, { handle, _, buffer in
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
            consume(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
        } else if count < 0 {
            // UV_EOF or a read error: either way the stream is over.
            finish()
        }
    }

    private func consume(_ bytes: UnsafeRawBufferPointer) {
        var lineStart = 0
        for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            partialLine.append(contentsOf: bytes[lineStart..<index])
            emitLine()
            lineStart = index + 1
        }
        var rest = lineStart
        while rest < bytes.count {
            let room = maxLineLength - partialLine.count
            let take = min(room, bytes.count - rest)
            partialLine.append(contentsOf: bytes[rest..<(rest + take)])
            rest += take
            if partialLine.count >= maxLineLength { emitLine() }
        }
    }

    private func emitLine() {
        let text = String(decoding: partialLine, as: UTF8.self)
        partialLine.removeAll(keepingCapacity: partialLine.count <= 4096)
        handler?(.line(stream, text))
    }

    private func finish() {
        guard isOpen else { return }
        if !partialLine.isEmpty { emitLine() }
        let handler = self.handler
        self.handler = nil
        close()
        handler?(.end(stream))
    }

    override func willClose() {
        uv_read_stop(streamPointer)
    }

    override func closeForTeardown() {
        finish()
        close()
    }
}
