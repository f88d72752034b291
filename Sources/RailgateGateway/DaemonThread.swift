import Glibc
import RailgateCore

/// An OS thread for a service that blocks in C calls (a Modbus bus, the uplink's publisher,
/// the control socket): kept off Swift's 2-thread cooperative pool. `join()` waits for it.
final class DaemonThread: @unchecked Sendable {
    private var thread = pthread_t()
    private var started = false

    /// Starts `body` on a new thread.
    init(_ body: @escaping @Sendable () -> Void) {
        final class Box {
            let body: @Sendable () -> Void
            init(body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let box = Unmanaged.passRetained(Box(body: body)).toOpaque()
        started =
            pthread_create(
                &thread, nil,
                { argument in
                    let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
                    box.body()
                    return nil
                }, box) == 0
        if !started {
            Unmanaged<Box>.fromOpaque(box).release()
            body()  // No thread to be had: run inline rather than lose the service.
        }
    }

    func join() {
        guard started else { return }
        pthread_join(thread, nil)
        started = false
    }
}

/// The life of a service that runs on its own thread: started once, asked to stop, joined.
/// Its `lock` guards the service's own state too, so a stop wakes any wait on it at once.
final class ServiceThread: @unchecked Sendable {
    let lock = ConditionLock()
    private var stopping = false
    private var thread: DaemonThread?

    func start(_ body: @escaping @Sendable () -> Void) {
        thread = DaemonThread(body)
    }

    /// Asks the service to stop and waits for its thread.
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
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

/// Accepts connections on a listening socket from its own thread, one at a time, each with 1 s
/// (2 s for HTTP) receive and send timeouts, and hands it to `handle`, which closes nothing: the
/// server closes the connection after. Stops within 200 ms; closes the listener.
final class ConnectionServer: @unchecked Sendable {
    private let worker = ServiceThread()
    private let listener: Int32
    private let timeoutSeconds: Int

    init(listener: Int32, timeoutSeconds: Int) {
        self.listener = listener
        self.timeoutSeconds = timeoutSeconds
    }

    func start(_ handle: @escaping @Sendable (Int32) -> Void) {
        worker.start { [self] in
            while !worker.isStopping {
                var descriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 200) > 0 else { continue }
                let client = accept(listener, nil, nil)
                guard client >= 0 else { continue }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                handle(client)
                close(client)
            }
        }
    }

    func stop() {
        worker.stop()
        close(listener)
    }
}
