import Glibc
import RailgateCore
import RailgateSystem

/// Tells systemd about the service's state through `$NOTIFY_SOCKET` (the sd_notify datagram
/// protocol: `READY=1`, `STOPPING=1`, `RELOADING=1`, `STATUS=...`). Does nothing outside systemd.
enum SystemdNotifier {
    static func notify(_ message: String) {
        guard let socketPath = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !socketPath.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let payload = Array(message.utf8)
        _ = UnixSocket.withAddress(socketPath) { address, length in
            payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, address, length) }
        }
    }
}
