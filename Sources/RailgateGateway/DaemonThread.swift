import Glibc
import Logging
import RailgateCore
import RailgateSystem

/// The life of a service that runs on its own thread: started once, asked to stop, joined.
/// Its `lock` guards the service's own state too, so a stop wakes any wait on it at once.
///
/// Supervised: when the body returns while nobody asked the service to stop, the service tells
/// its `Supervisor`, which logs it and restarts it (the same body, on a new thread) after a
/// back-off, or has the daemon exit non-zero, as the service's `policy` says.
final class ServiceThread: @unchecked Sendable {
    let lock = ConditionLock()
    private var stopping = false
    private var thread: DaemonThread?
    private var body: (@Sendable () -> Void)?
    private(set) var name = "service"
    private(set) var policy = Supervisor.Policy.restart
    private var supervisor: Supervisor?

    /// Starts `body` on a new thread.
    /// - Parameters:
    ///   - name: what the logs call the service ("bus line-1").
    ///   - supervisor: told if `body` returns before `stop()`; nil: nobody is told.
    /// - Throws: `ThreadError` if no thread could be created; the service does not run.
    func start(
        name: String, supervisor: Supervisor? = nil, policy: Supervisor.Policy = .restart,
        _ body: @escaping @Sendable () -> Void
    ) throws(ThreadError) {
        lock.withLock {
            self.name = name
            self.body = body
            self.supervisor = supervisor
            self.policy = policy
        }
        try launch()
    }

    private func launch() throws(ThreadError) {
        guard let body = lock.withLock({ self.body }) else { return }
        let started = MonotonicInstant.now()
        let thread = try DaemonThread(name: name) { [self] in
            body()
            let (stopping, supervisor) = lock.withLock { (self.stopping, self.supervisor) }
            if !stopping { supervisor?.serviceEnded(self, ranMs: MonotonicInstant.now().milliseconds(since: started)) }
        }
        lock.withLock { self.thread = thread }
    }

    /// Runs the body again on a new thread, after it ended unexpectedly (called by the supervisor,
    /// on the thread that starts and stops services). Does nothing once `stop()` was called.
    func restart() throws(ThreadError) {
        let old: DaemonThread? = lock.withLock {
            guard !stopping else { return nil }
            return thread
        }
        guard let old else { return }
        old.join()
        try launch()
    }

    /// Asks the service to stop without waiting (`stop()` waits), so that several services can
    /// wind down at once.
    func requestStop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    /// Asks the service to stop and waits for its thread.
    func stop() {
        let (thread, supervisor) = lock.withLock {
            stopping = true
            lock.broadcast()
            return (self.thread, self.supervisor)
        }
        supervisor?.forget(self)
        thread?.join()
    }

    var isStopping: Bool { lock.withLock { stopping } }

    /// Waits until `deadline` unless asked to stop first; returns false when stopping.
    func wait(until deadline: MonotonicInstant) -> Bool {
        lock.withLock {
            while !stopping, MonotonicInstant.now() < deadline { lock.wait(until: deadline) }
            return !stopping
        }
    }
}

/// Notices service threads that end while the daemon is not stopping them, logs each, and
/// restarts it after a back-off (1 s, doubling to 30 s while it keeps dying within a minute of
/// its start) or, for a service whose policy is `exitDaemon`, asks the daemon to exit non-zero so
/// that systemd restarts the whole process.
///
/// Threads: `serviceEnded` is called on the dying service's thread; `restartDue` and
/// `nextRestart` on the one thread that starts and stops services (the daemon's main thread), so a
/// restart never races a stop.
final class Supervisor: @unchecked Sendable {
    /// What to do when a service's thread ends by itself.
    enum Policy: Sendable, Equatable {
        /// Start it again after a back-off; the rest of the daemon runs on.
        case restart
        /// Stop the daemon with a non-zero exit status.
        case exitDaemon
    }

    private let logger: Logger
    private let lock = ConditionLock()
    /// Services that ended, with when each may be restarted.
    private var ended: [(service: ServiceThread, due: MonotonicInstant)] = []
    /// Consecutive quick deaths per service, for the back-off.
    private var deaths: [ObjectIdentifier: Int] = [:]
    private var fatal: String?
    private let wake: @Sendable () -> Void
    private let initialBackoffMs: Int
    private let maxBackoffMs: Int

    /// A service that ran this long before it ended starts its back-off afresh.
    static let healthyRunMs: Int64 = 60_000

    /// - Parameters:
    ///   - initialBackoffMs: the wait before the first restart; it doubles with each quick death,
    ///     up to `maxBackoffMs`.
    ///   - wake: called (on the dying service's thread) when something is due, so the thread that
    ///     restarts services need not poll.
    init(
        logger: Logger, initialBackoffMs: Int = 1000, maxBackoffMs: Int = 30_000,
        wake: @escaping @Sendable () -> Void = {}
    ) {
        self.logger = logger
        self.initialBackoffMs = initialBackoffMs
        self.maxBackoffMs = maxBackoffMs
        self.wake = wake
    }

    /// Called by a service thread whose body returned while not stopping.
    func serviceEnded(_ service: ServiceThread, ranMs: Int64) {
        let id = ObjectIdentifier(service)
        switch service.policy {
        case .exitDaemon:
            logger.critical("service \(service.name) ended unexpectedly; the daemon exits for systemd to restart it")
            lock.withLock { fatal = fatal ?? "service \(service.name) ended unexpectedly" }
        case .restart:
            let delay: Int = lock.withLock {
                let count = ranMs >= Self.healthyRunMs ? 1 : (deaths[id] ?? 0) + 1
                deaths[id] = count
                let delay = min(initialBackoffMs << min(count - 1, 16), maxBackoffMs)
                ended.removeAll { $0.service === service }
                ended.append((service, MonotonicInstant.now().adding(milliseconds: delay)))
                return delay
            }
            logger.error("service \(service.name) ended unexpectedly; restarting it in \(delay) ms")
        }
        wake()
    }

    /// Forgets `service` (it is being stopped on purpose).
    func forget(_ service: ServiceThread) {
        lock.withLock {
            ended.removeAll { $0.service === service }
            deaths[ObjectIdentifier(service)] = nil
        }
    }

    /// Why the daemon must exit, if a service whose policy is `exitDaemon` ended.
    var fatalReason: String? { lock.withLock { fatal } }

    /// When the next restart is due, if one is pending.
    var nextRestart: MonotonicInstant? { lock.withLock { ended.map(\.due).min() } }

    /// Restarts every service whose back-off has passed. A thread that cannot be created counts
    /// as another death (logged; tried again after a longer back-off).
    func restartDue(now: MonotonicInstant = .now()) {
        let due: [ServiceThread] = lock.withLock {
            let due = ended.filter { $0.due <= now }.map(\.service)
            ended.removeAll { $0.due <= now }
            return due
        }
        for service in due {
            do {
                try service.restart()
                logger.notice("service \(service.name) restarted")
            } catch {
                logger.error("service \(service.name) could not be restarted: \(error)")
                serviceEnded(service, ranMs: 0)
            }
        }
    }
}

/// One accepted client of a `ConnectionServer`: its socket and the moment the server gives up on it.
struct ClientConnection {
    let fd: Int32
    /// The whole exchange must be over by then (a client that trickles bytes is cut off).
    let deadline: MonotonicInstant
    fileprivate let worker: ServiceThread
    /// Readable once the server stops (its stop pipe).
    fileprivate let stopSignal: Int32

    /// Receives what the client sent so far into `buffer`, waiting until the deadline or a stop
    /// of the server, whichever comes first (no periodic wake-ups). Returns the byte count, 0 when
    /// the client closed, or nil on the deadline, a stop or an error. The C functions are `poll`
    /// and `recv`.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        while !worker.isStopping {
            let left = deadline.nanoseconds - MonotonicInstant.now().nanoseconds
            guard left > 0 else { return nil }
            var descriptors = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopSignal, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&descriptors, 2, Int32(clamping: left / 1_000_000 + 1))
            if ready < 0, errno == EINTR { continue }
            guard ready >= 0 else { return nil }
            if ready == 0 || descriptors[1].revents != 0 { continue }
            let count = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            if count < 0, errno == EINTR || errno == EAGAIN { continue }
            return count < 0 ? nil : count
        }
        return nil
    }
}

/// Accepts connections on a listening socket from a small fixed pool of threads (`concurrency`,
/// default 4), each serving one connection at a time and handing it to `handle`, which closes
/// nothing: the server closes the connection after. Each connection gets `timeoutSeconds` in all
/// to send its request (`ClientConnection.receive`) and as the send timeout, so a client that
/// trickles bytes holds one thread at most that long while the others serve everyone else. The
/// listener is made non-blocking (threads race for each connection). Idle threads sleep in `poll`
/// on the listener and a stop pipe: no wake-ups while nobody connects. Stops at once: connections
/// being served are shut down (a send to a client that does not read ends); closes the listener.
/// After each connection the thread gives freed heap pages back (`returnFreedMemory`).
final class ConnectionServer: @unchecked Sendable {
    private let workers: [ServiceThread]
    private let listener: Int32
    private let timeoutSeconds: Int
    /// The stop pipe: `stop()` writes a byte to [1], which leaves [0] readable for every thread.
    private let stopPipe: (read: Int32, write: Int32)
    /// Guards `serving` and `stopped`.
    private let clients = ConditionLock()
    /// The connections being served now (one per busy thread).
    private var serving: Set<Int32> = []
    private var stopped = false

    init(listener: Int32, timeoutSeconds: Int, concurrency: Int = 4) {
        self.listener = listener
        self.timeoutSeconds = timeoutSeconds
        workers = (0..<max(1, concurrency)).map { _ in ServiceThread() }
        // Without a pipe (out of descriptors) the threads still stop: they look every 200 ms.
        stopPipe = makeWakePipe() ?? (-1, -1)
    }

    /// Starts accepting on `concurrency` threads named `name`, supervised by `supervisor`.
    /// - Throws: `ThreadError` if a thread could not be created (those started are stopped).
    func start(
        name: String, supervisor: Supervisor? = nil, _ handle: @escaping @Sendable (ClientConnection) -> Void
    ) throws(ThreadError) {
        _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
        for (index, worker) in workers.enumerated() {
            do {
                try worker.start(name: workers.count > 1 ? "\(name) \(index + 1)" : name, supervisor: supervisor) {
                    [self] in serve(worker, handle)
                }
            } catch {
                for started in workers[..<index] { started.stop() }
                throw error
            }
        }
    }

    private func serve(_ worker: ServiceThread, _ handle: (ClientConnection) -> Void) {
        while !worker.isStopping {
            var descriptors = [
                pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&descriptors, 2, stopPipe.read >= 0 ? -1 : 200) > 0, descriptors[0].revents != 0 else {
                continue
            }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }  // EAGAIN: another thread took it
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // Served connections are shut down by a stop, so a client that asked and does not read
            // holds the stop up not for the whole send timeout.
            clients.withLock {
                serving.insert(client)
                if stopped { shutdown(client, Int32(SHUT_RDWR)) }
            }
            handle(
                ClientConnection(
                    fd: client, deadline: MonotonicInstant.now().adding(milliseconds: timeoutSeconds * 1000),
                    worker: worker, stopSignal: stopPipe.read))
            // Out of `serving` before the descriptor is closed: a stop never shuts down a reused number.
            clients.withLock { _ = serving.remove(client) }
            close(client)
            // A reply (a status for 100 devices: 345 KB of text from a tree several times that)
            // leaves freed heap in this thread's arena: give it back, or RSS stays raised for good.
            returnFreedMemory()
        }
    }

    /// Stops the threads and closes the listener and the stop pipe; returns when the threads
    /// have ended. Only the first call does anything: a second must not write to or close
    /// descriptor numbers that may belong to somebody else by then.
    func stop() {
        let first = clients.withLock { () -> Bool in
            guard !stopped else { return false }
            stopped = true
            for client in serving { shutdown(client, Int32(SHUT_RDWR)) }
            return true
        }
        guard first else { return }
        for worker in workers { worker.requestStop() }
        if stopPipe.write >= 0 {
            var byte: UInt8 = 1
            _ = write(stopPipe.write, &byte, 1)
        }
        for worker in workers { worker.stop() }
        close(listener)
        if stopPipe.read >= 0 {
            close(stopPipe.read)
            close(stopPipe.write)
        }
    }
}
