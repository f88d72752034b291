import Foundation
import RailgateCore
import Testing

/// Whether this process may mount a tmpfs (root, with the capability): the disk trouble test
/// needs a filesystem it can fill up and make read-only.
let canMountTmpfs: Bool = {
    guard getuid() == 0 else { return false }
    let probe = NSTemporaryDirectory() + "railgate-mount-probe-\(getpid())"
    try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: probe) }
    guard system("mount -t tmpfs -o size=64k tmpfs '\(probe)' 2>/dev/null") == 0 else { return false }
    _ = system("umount '\(probe)'")
    return true
}()

@Suite("Disk trouble", .serialized)
struct DiskTroubleTests {
    @Test(
        "a full disk: a clear status, polling goes on into memory, writing resumes, nothing lost",
        .enabled(if: canMountTmpfs, "needs root to mount a small tmpfs it can fill up"))
    func fullDisk() throws {
        let scratch = Scratch()
        let state = scratch.path + "/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        #expect(system("mount -t tmpfs -o size=64k tmpfs '\(state)'") == 0)
        defer { _ = system("umount -l '\(state)' 2>/dev/null") }
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("testbox", wagon.port, 1, "all-types")], pollMs: 20)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        func waitFor(_ seconds: Double, _ what: String, _ condition: (JSON) -> Bool) throws -> JSON {
            try eventually(what, seconds: seconds, intervalMs: 200) {
                let status = try daemonStatus(scratch)
                return condition(status) ? status : nil
            }
        }

        let full = try waitFor(90, "the disk never filled") { $0["buffer"]?["disk_error"]?.stringValue != nil }
        #expect(full["buffer"]?["disk_error"]?.stringValue?.contains("No space left on device") == true)
        let polls = full["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0
        _ = try waitFor(30, "polling stopped on a full disk") {
            ($0["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0) > polls + 20
        }
        #expect(gateway.isRunning)
        #expect(gateway.errorOutput.contains("buffer disk trouble"))

        #expect(system("mount -o remount,size=16m '\(state)'") == 0)  // space is freed
        _ = try waitFor(30, "writing did not resume") { $0["buffer"]?["disk_error"] == .null }
        // The daemon logs the recovery with the next record it stores: wait for it before the stop
        // (status can show the error cleared before that record comes).
        _ = try eventually("the recovery logged", seconds: 30) {
            gateway.errorOutput.contains("buffer writes succeed again") ? () : nil
        }
        // A read-only remount is refused while the daemon holds its files open for writing
        // (EBUSY), so EROFS and EIO are not staged here: they take the same path as ENOSPC.

        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        // Nothing polled was lost: every seq from 1 is in the buffer, intact.
        let dump = try TestProcess.run(Binaries.railgate, ["buffer", "dump", "--state-dir", state], scratch: scratch)
        let seqs = dump.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0))["seq"]?.intValue }
        #expect(seqs.count > 100)
        #expect(seqs == Array(1...(seqs.last ?? 1)), "no record lost or repeated across the disk trouble")
        #expect(gateway.errorOutput.contains("buffer writes succeed again"))
    }
}
