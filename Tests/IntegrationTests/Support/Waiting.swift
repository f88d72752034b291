import Foundation
import RailgateCore

/// Runs `probe` until it returns a value, every `intervalMs`, for at most `seconds`, and returns
/// that value; throws `TimedOut` naming `what`. For state that processes report only when asked
/// (a status document, the buffer's contents); events that arrive by themselves are awaited
/// directly (`Subscriber.waitUntil`, `TestProcess.waitForOutputLine`).
func eventually<T>(_ what: String, seconds: Double = 30, intervalMs: UInt32 = 100, _ probe: () throws -> T?) throws -> T
{
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if let value = try probe() { return value }
        guard Date() < deadline else { throw TimedOut(description: "\(what): not within \(seconds) s") }
        usleep(intervalMs * 1000)
    }
}

/// The status document of the daemon whose control socket is in `scratch`, or `.null` while it
/// does not answer.
func daemonStatus(_ scratch: Scratch) throws -> JSON {
    let result = try TestProcess.run(
        Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock", "--json"], scratch: scratch)
    return (try? JSONReader.parse(result.output)) ?? .null
}

/// The records `railgate buffer dump` prints for the buffer under `state` (the daemon may run).
func bufferedRecords(_ state: String, scratch: Scratch) throws -> [JSON] {
    let dump = try TestProcess.run(Binaries.railgate, ["buffer", "dump", "--state-dir", state], scratch: scratch)
    return dump.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0)) }
}
