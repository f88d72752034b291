import Glibc

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
        started = pthread_create(&thread, nil, { argument in
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
