/// A supervision error: invalid specs (found before anything starts) and invalid run-time
/// requests (unknown ids, ...). Nothing changes when one is thrown.
public struct SupervisionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of error.
    public enum Code: Sendable, Equatable {
        /// Two children of one supervisor share an id.
        case duplicateID
        /// A child id is empty or contains `/`.
        case invalidID
        /// A duration is negative or zero where it must be positive.
        case invalidDuration
        /// `maxRestarts` is negative.
        case invalidIntensity
        /// A backoff's maximum is below its initial delay, its multiplier below 1, its jitter
        /// outside 0...1.
        case invalidBackoff
        /// Any other invalid spec (empty argv, a significant permanent child, ...).
        case invalidSpec
        /// No child has this id.
        case unknownID
        /// The child is running or stopping (delete or restart needs it stopped); OTP's `running`.
        case childRunning
        /// The child is waiting for its restart (its backoff delay, or its group to stop);
        /// OTP's `restarting`.
        case childRestarting
        /// A dynamic supervisor is at `maxChildren`.
        case maxChildren
        /// The operation needs a dynamic (or a static) supervisor.
        case wrongSupervisorKind
        /// The supervisor is shutting down or stopped.
        case supervisorStopped
        /// A worker could not be started.
        case startFailed
    }

    /// What kind of error.
    public let code: Code
    /// A message naming what was wrong, with the child path where there is one.
    public let message: String

    /// An error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code): \(message)" }
}
