/// A point on the monotonic clock, for deadlines and intervals that wall-clock jumps must not disturb.
public struct MonotonicInstant: Sendable, Comparable, Hashable {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public func adding(milliseconds: Int) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: nanoseconds + Int64(milliseconds) * 1_000_000)
    }

    /// Milliseconds from `earlier` to this instant.
    public func milliseconds(since earlier: MonotonicInstant) -> Int64 {
        (nanoseconds - earlier.nanoseconds) / 1_000_000
    }
}
