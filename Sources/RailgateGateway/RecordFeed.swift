import Glibc
import Logging
import RailgateCore
import RailgateSystem

/// Streams the records the daemon stores to the control socket's `follow` clients
/// (`railgate events --follow`), one JSON line each, and keeps the most recent events for
/// `status` (`recent_events`, `railgate top`'s event pane).
///
/// A producer (a bus, gate or input thread, through `BufferSink`) never waits for a client:
/// each follower has its own queue of at most `queueLimit` lines and its own writer thread;
/// when a client reads too slowly its queue fills, further lines for it are dropped and counted,
/// and the next line it gets is `{"kind":"dropped","count":N}`. At most `maxFollowers` clients
/// follow at once; a client that goes away is noticed within a second and its thread ends.
///
/// Thread-safe. `stop()` ends every follower and waits for their threads.
final class RecordFeed: @unchecked Sendable {
    /// Lines queued for one follower before further lines for it are dropped.
    static let queueLimit = 1000
    /// Clients that may follow at once; one more is refused with an error line.
    static let maxFollowers = 8
    /// Events kept for `status`'s `recent_events`.
    static let recentLimit = 20

    private let lock = ConditionLock()
    private let logger: Logger
    private var followers: [Follower] = []
    private var recent: [String] = []
    /// Units by device, then point, from the running configuration (samples carry them).
    private var units: [String: [String: String]] = [:]
    private var gateway = ""
    private var stopped = false

    init(logger: Logger) { self.logger = logger }

    /// Sets the units samples are annotated with and the gateway id of the hello line, from the
    /// configuration about to run.
    func configure(_ config: GatewayConfig) {
        configure(
            units: Dictionary(config.devices.map { ($0.name, $0.profile) }, uniquingKeysWith: { first, _ in first }),
            gateway: config.gateway.id)
    }

    /// The same from the devices' profiles, by device name, and the gateway id.
    func configure(units profiles: [String: DeviceProfile], gateway: String) {
        var units: [String: [String: String]] = [:]
        for (device, profile) in profiles {
            for point in profile.points {
                if let unit = point.unit { units[device, default: [:]][point.name] = unit }
            }
        }
        lock.withLock {
            self.units = units
            self.gateway = gateway
        }
    }

    /// Hands `record`, stored as `seq`, to every follower (and keeps it if it is an event).
    /// Called on the producing thread; never blocks on a client.
    func publish(_ record: Record, seq: UInt64?) {
        let (wanted, deviceUnits) = lock.withLock { () -> (Bool, [String: String]?) in
            (!followers.isEmpty || !record.isSample, units[record.source])
        }
        guard wanted else { return }
        var line = record.encoded(seq: seq)
        // Units, for a technician reading the stream: a sample's `units`, an alarm event's `unit`.
        var annotation: (String, JSON)?
        switch record.body {
        case .sample(let values, _):
            let named = values.compactMap { name, _ in deviceUnits?[name].map { (name, JSON.string($0)) } }
            if !named.isEmpty { annotation = ("units", .object(named)) }
        case .event(_, let fields):
            if let point = fields.first(where: { $0.0 == "point" })?.1.stringValue, let unit = deviceUnits?[point] {
                annotation = ("unit", .string(unit))
            }
        }
        if let (key, value) = annotation {
            line.removeLast()  // the closing brace
            line += ",\"\(key)\":".utf8  // `units` or `unit`: nothing to escape
            value.write(to: &line)
            line.append(UInt8(ascii: "}"))
        }
        let text = String(decoding: line, as: UTF8.self)
        lock.withLock {
            if !record.isSample {
                recent.append(text)
                if recent.count > Self.recentLimit { recent.removeFirst(recent.count - Self.recentLimit) }
            }
            for follower in followers { follower.enqueue(text) }
            lock.broadcast()
        }
    }

    /// The most recent event records (at most `recentLimit`), oldest first, as stored.
    var recentEvents: [JSON] { lock.withLock { recent }.compactMap { try? JSONReader.parse($0) } }

    /// Followers streaming now (those whose client went away are let go first).
    var followerCount: Int {
        lock.withLock {
            reapLocked()
            return followers.count
        }
    }

    /// Starts streaming to the client socket `fd`, which the feed now owns (it closes it).
    /// Returns nil when streaming started, or the error to answer when refused (too many
    /// followers, stopping, or no thread).
    func follow(fd: Int32) -> JSON? {
        let follower = Follower(fd: fd)
        // The thread starts with the lock held, so a `stop()` always finds it to join.
        let refusal: String? = lock.withLock {
            reapLocked()
            guard !stopped else { return "shutting down" }
            guard followers.count < Self.maxFollowers else {
                return "\(Self.maxFollowers) clients follow already; try again later"
            }
            let hello = JSON.object([
                ("kind", .string("following")), ("gateway", .string(gateway)),
                ("queue_limit", .integer(Int64(Self.queueLimit))),
            ]).serialized
            do {
                try follower.start(hello: hello, feed: self)
            } catch {
                logger.error("control socket: cannot stream to a follow client: \(error)")
                return "\(error)"
            }
            followers.append(follower)
            return nil
        }
        guard let refusal else { return nil }
        close(fd)
        return .object([("error", .string(refusal))])
    }

    /// Ends every follower and waits for their threads; later `follow` calls are refused.
    func stop() {
        let all = lock.withLock {
            stopped = true
            for follower in followers { follower.stopping = true }
            lock.broadcast()
            return followers
        }
        for follower in all { follower.join() }
        lock.withLock { followers = [] }
    }

    /// Joins the threads of followers that ended (with the lock held; they ended, so at once).
    private func reapLocked() {
        for follower in followers where follower.ended { follower.join() }
        followers.removeAll { $0.ended }
    }

    /// One client: its socket, its queue and its writer thread. Its mutable state is guarded by
    /// the feed's lock.
    private final class Follower: @unchecked Sendable {
        let fd: Int32
        var queue: [String] = []
        var dropped = 0
        var stopping = false
        var ended = false
        private var thread: DaemonThread?

        init(fd: Int32) { self.fd = fd }

        /// With the feed's lock held.
        func enqueue(_ line: String) {
            if queue.count >= RecordFeed.queueLimit {
                dropped += 1
            } else {
                queue.append(line)
            }
        }

        func start(hello: String, feed: RecordFeed) throws(ThreadError) {
            // Writes wait at most a second, so a stop is noticed even while a client reads nothing.
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            thread = try DaemonThread(name: "control socket follower") { [self] in run(hello: hello, feed: feed) }
        }

        /// Waits for the writer thread (set before the follower is listed, never changed after).
        func join() { thread?.join() }

        private func run(hello: String, feed: RecordFeed) {
            defer {
                close(fd)
                feed.lock.withLock { ended = true }
            }
            guard send(hello + "\n", feed: feed) else { return }
            while true {
                let (lines, missed, stop) = feed.lock.withLock { () -> ([String], Int, Bool) in
                    if queue.isEmpty, dropped == 0, !stopping {
                        feed.lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000))
                    }
                    defer {
                        queue = []
                        dropped = 0
                    }
                    return (queue, dropped, stopping)
                }
                if stop { return }
                var text = ""
                if missed > 0 {
                    text +=
                        JSON.object([
                            ("kind", .string("dropped")), ("count", .integer(Int64(missed))),
                            ("reason", .string("this client read too slowly; the daemon went on without it")),
                        ]).serialized + "\n"
                }
                for line in lines { text += line + "\n" }
                if text.isEmpty {
                    guard peerIsThere() else { return }
                    continue
                }
                guard send(text, feed: feed) else { return }
            }
        }

        /// Whether the client is still connected (it never sends anything after its command).
        private func peerIsThere() -> Bool {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 0) > 0 else { return true }
            if descriptor.revents & (Int16(POLLHUP) | Int16(POLLERR)) != 0 { return false }
            // Readable: the end of the stream (0), or bytes the client should not send (read and ignored).
            var bytes = [UInt8](repeating: 0, count: 256)
            return recv(fd, &bytes, bytes.count, Int32(MSG_DONTWAIT)) > 0
        }

        /// Writes all of `text` (a line is never cut), waiting through a full socket buffer a
        /// second at a time until the feed stops; false when the client is gone or stopping.
        private func send(_ text: String, feed: RecordFeed) -> Bool {
            let bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes {
                    Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
                }
                if written > 0 {
                    offset += written
                    continue
                }
                let code = errno
                guard written < 0, code == EINTR || code == EAGAIN || code == EWOULDBLOCK else { return false }
                if feed.lock.withLock({ stopping }) { return false }
            }
            return true
        }
    }
}

/// A rate from a counter sampled now and then (the acknowledged seq, the next seq): the change
/// per second over the samples of the last `windowMs`. Pure: the caller gives the times.
struct RateMeter: Sendable {
    /// How far back the rate looks, in milliseconds.
    var windowMs: Int64 = 10_000
    private var samples: [(atMs: Int64, value: UInt64)] = []

    init(windowMs: Int64 = 10_000) { self.windowMs = windowMs }

    /// Takes a sample (samples closer than 500 ms to the previous one replace nothing: they are
    /// dropped, so frequent callers do not shorten the window).
    mutating func add(atMs: Int64, value: UInt64) {
        if let last = samples.last, atMs - last.atMs < 500 { return }
        samples.append((atMs, value))
        // Keep one sample older than the window, so the rate spans the whole window.
        while samples.count > 2, samples[1].atMs <= atMs - windowMs { samples.removeFirst() }
    }

    /// The change per second from the oldest kept sample to `value` at `atMs`; nil without an
    /// earlier sample at least 500 ms before.
    func rate(atMs: Int64, value: UInt64) -> Double? {
        guard let first = samples.first, atMs - first.atMs >= 500 else { return nil }
        let change = value >= first.value ? Double(value - first.value) : 0
        return change * 1000 / Double(atMs - first.atMs)
    }
}
