import Foundation
import Glibc

/// An RS-485 line between two pseudo-terminals that minds the line settings, which a plain socat
/// pty pair ignores: two socat pty pairs (`slaveSide` for the simulator, `masterSide` for the
/// gateway) joined by a relay thread here. A byte passes unchanged only while both ends are set
/// to the same baud rate and the same odd/not-odd parity and stop bits; otherwise it arrives
/// inverted, the garbage a UART at the wrong speed hears, and no frame survives. (Linux clears
/// PARENB on a pty, so even parity and none cannot be told apart here; odd can.) The settings are
/// read from the two ends as their programs set them (`tcgetattr` on a descriptor of each end,
/// which shares the end's termios and is never read from).
final class SerialLine: @unchecked Sendable {
    let slaveSide: String
    let masterSide: String
    private let pairs: [TestProcess]
    private var relayEnds: [Int32] = []
    private var observers: [Int32] = []
    private let lock = NSLock()
    private var stopping = false
    private var thread: Thread?

    init(scratch: Scratch) throws {
        slaveSide = scratch.path + "/ttySIM"
        masterSide = scratch.path + "/ttyGW"
        var pairs: [TestProcess] = []
        for (end, relay) in [(slaveSide, slaveSide + ".relay"), (masterSide, masterSide + ".relay")] {
            pairs.append(
                try TestProcess(
                    "/usr/bin/socat", ["pty,raw,echo=0,link=\(end)", "pty,raw,echo=0,link=\(relay)"], scratch: scratch,
                    name: "socat"))
        }
        self.pairs = pairs
        let deadline = Date().addingTimeInterval(20)
        let paths = [slaveSide, masterSide, slaveSide + ".relay", masterSide + ".relay"]
        while !paths.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
            guard pairs.allSatisfy(\.isRunning), Date() < deadline else {
                throw TimedOut(description: "socat made no ptys: \(pairs.map(\.errorOutput))")
            }
            usleep(20_000)
        }
        for path in [slaveSide + ".relay", masterSide + ".relay"] {
            let fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
            guard fd >= 0 else {
                throw TimedOut(description: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            relayEnds.append(fd)
        }
        for path in [slaveSide, masterSide] {
            let fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
            guard fd >= 0 else {
                throw TimedOut(description: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            observers.append(fd)
        }
        let thread = Thread { [self] in relay() }
        self.thread = thread
        thread.start()
    }

    /// Stops the relay (it notices within 50 ms) and both socat pairs. The relay thread holds the
    /// line until then: call it (`defer { line.stop() }`).
    func stop() {
        lock.withLock { stopping = true }
        let deadline = Date().addingTimeInterval(10)
        while thread?.isFinished == false, Date() < deadline { usleep(10_000) }
        for fd in relayEnds + observers { close(fd) }
        relayEnds = []
        observers = []
        for pair in pairs { pair.signal(SIGKILL) }
    }

    /// Baud rate, odd parity and two stop bits of the end `observer` watches.
    private func settings(_ observer: Int32) -> [UInt32] {
        var attributes = termios()
        guard tcgetattr(observer, &attributes) == 0 else { return [] }
        return [
            UInt32(cfgetospeed(&attributes)), UInt32(attributes.c_cflag & tcflag_t(PARODD)),
            UInt32(attributes.c_cflag & tcflag_t(CSTOPB)),
        ]
    }

    private func relay() {
        var buffer = [UInt8](repeating: 0, count: 512)
        while !lock.withLock({ stopping }) {
            var descriptors = relayEnds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&descriptors, 2, 50) > 0 else { continue }
            for (index, descriptor) in descriptors.enumerated() where descriptor.revents & Int16(POLLIN) != 0 {
                let count = read(descriptor.fd, &buffer, buffer.count)
                guard count > 0 else { continue }
                let matched = settings(observers[0]) == settings(observers[1])
                var bytes = Array(buffer[0..<count])
                if !matched { bytes = bytes.map { ~$0 } }
                _ = write(relayEnds[1 - index], bytes, bytes.count)
            }
        }
    }
}
