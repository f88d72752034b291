import Glibc
import RailgateMQTT
import RailgateSystem
import Testing

/// A peer that has gone is an error to report, never a SIGPIPE: a process that has not ignored
/// SIGPIPE (the CLI, the tests; not the daemon) dies of it without a word. `make test` once died
/// so (signal 13) when a control-socket stop shut down a connection being written to.
@Suite("Broken pipes: a peer that has gone is an error, not SIGPIPE")
struct BrokenPipeTests {
    /// Runs `body` with SIGPIPE blocked in this thread and says whether it raised one. A blocked
    /// signal is never discarded, even when the process ignores it: it waits, pending, and is
    /// taken here. Synchronous, on the calling thread only.
    private func raisesSIGPIPE(_ body: () -> Void) -> Bool {
        var pipeOnly = sigset_t()
        sigemptyset(&pipeOnly)
        sigaddset(&pipeOnly, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeOnly, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        body()
        var pending = sigset_t()
        sigpending(&pending)
        guard sigismember(&pending, SIGPIPE) == 1 else { return false }
        var none = timespec(tv_sec: 0, tv_nsec: 0)
        _ = sigtimedwait(&pipeOnly, nil, &none)
        return true
    }

    @Test("a send to a socket whose peer closed fails with EPIPE and raises no SIGPIPE")
    func sendToClosedPeer() {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        close(ends[1])
        defer { close(ends[0]) }
        var sent = true
        var code: Int32 = 0
        let raised = raisesSIGPIPE {
            sent = ConnectedSocket.send(fd: ends[0], "status\n")
            code = errno
        }
        #expect(!sent)
        #expect(code == EPIPE)
        #expect(!raised, "the send raised SIGPIPE")
        // The check itself can fail: a plain write(2) to the same kind of socket raises it.
        var other: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &other) == 0)
        close(other[1])
        defer { close(other[0]) }
        #expect(raisesSIGPIPE { _ = write(other[0], "x", 1) })
    }

    @Test("a process with an MQTT client ignores SIGPIPE: libmosquitto sends with write(2)")
    func mqttClientIgnoresSIGPIPE() throws {
        _ = try MQTTClient(clientID: "broken-pipe-test") { _ in }
        var current = sigaction()
        #expect(sigaction(SIGPIPE, nil, &current) == 0)
        // SIG_IGN is the handler 1; SIG_DFL is nil.
        #expect(current.__sigaction_handler.sa_handler.map { unsafeBitCast($0, to: Int.self) } == 1)
    }
}
