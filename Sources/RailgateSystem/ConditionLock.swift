import Glibc
import RailgateCore

/// A mutex with a condition variable (pthread), for the daemon's dedicated threads: they block
/// in C calls and must not sit on Swift's cooperative pool. `withLock` runs a critical section;
/// `wait` releases the lock until signalled or until the deadline.
public final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (lock held by the caller, inside `withLock`) until signalled or `deadline` passes.
    /// Returns false on timeout. Callers re-check their condition in a loop.
    @discardableResult
    public func wait(until deadline: MonotonicInstant) -> Bool {
        var time = timespec(
            tv_sec: Int(deadline.nanoseconds / 1_000_000_000), tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
        return pthread_cond_timedwait(condition, mutex, &time) == 0
    }

    /// Wakes every waiter.
    public func broadcast() { pthread_cond_broadcast(condition) }
}

extension MonotonicInstant {
    /// Now on CLOCK_MONOTONIC (`clock_gettime`): immune to the wall clock being set by GPS or NTP.
    public static func now() -> MonotonicInstant {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return MonotonicInstant(nanoseconds: Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec))
    }

    /// Sleeps until `deadline` (`nanosleep`, resumed after EINTR); always returns true, so it
    /// serves as the default of a "wait, or return false to give up" hook.
    @discardableResult
    public static func sleep(until deadline: MonotonicInstant) -> Bool {
        let nanoseconds = deadline.nanoseconds - MonotonicInstant.now().nanoseconds
        if nanoseconds > 0 {
            var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
            var remaining = timespec()
            while nanosleep(&request, &remaining) == -1, errno == EINTR { request = remaining }
        }
        return true
    }
}

/// The wall clock, for record timestamps.
public enum WallClock {
    public static func now() -> Timestamp {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Timestamp(millisecondsSinceEpoch: Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000)
    }
}
