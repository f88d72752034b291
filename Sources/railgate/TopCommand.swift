import ArgumentParser
import Glibc
import RailgateCore
import RailgateSystem

struct TopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "A live view of the running daemon: devices and values, gates, alarms, buffer and link.",
        discussion: """
            Refreshes every --interval seconds from the daemon's control socket; fits an 80x24 \
            serial console. q or Ctrl-C quits and restores the terminal. No colour when NO_COLOR \
            is set or standard output is not a terminal. Not a terminal, or --iterations: each \
            frame is printed after the last.

            Examples:
              railgate top --config /etc/railgate/railgate.toml
              railgate top --interval 5
              railgate top --iterations 1 > snapshot.txt
            """)

    @OptionGroup var daemon: DaemonOptions

    @Option(help: "Seconds between refreshes (0.2 or more).")
    var interval: Double = 1

    @Option(help: "Exit after this many frames.")
    var iterations: Int?

    func validate() throws {
        guard interval >= 0.2, interval <= 3600 else { throw ValidationError("--interval must be 0.2 to 3600 seconds") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be 1 or more") }
    }

    func run() throws {
        let socket = try daemon.socketPath()
        // The first answer decides whether there is a daemon to watch at all.
        var status: JSON?
        var problem: String?
        do {
            status = try JSONReader.parse(try ControlClient.request("status", socket: socket))
        } catch {
            StandardStreams.error(
                "railgate top: cannot reach the daemon at \(socket): \(error). Is railgate running (systemctl status railgate)?"
            )
            throw Exit.unavailable
        }
        // A terminal gets the live screen; with --iterations the frames are printed one after
        // the other instead, so they stay readable once top has exited.
        let live = isatty(1) == 1 && iterations == nil
        let style = Style.forOutput()
        let terminal = live ? Terminal() : nil
        defer { terminal?.restore() }
        let signals = SignalWatch([SIGINT, SIGTERM, SIGHUP, SIGWINCH])
        defer { signals.close() }
        let intervalText = interval == interval.rounded() ? "\(Int(interval))s" : "\(interval)s"
        var frames = 0
        while true {
            let size = terminal?.size() ?? (width: 80, height: 24)
            let lines = TopScreen.render(
                status: status, problem: problem, width: size.width, height: size.height,
                intervalText: intervalText, clock: Self.clock(), style: style, live: live)
            if let terminal {
                terminal.draw(lines)
            } else {
                StandardStreams.out(lines.joined(separator: "\n") + "\n")
            }
            frames += 1
            if let iterations, frames >= iterations { return }
            // Wait for the next refresh, a key or a signal.
            let deadline = MonotonicInstant.now().adding(milliseconds: Int(interval * 1000))
            var redraw = false
            while !redraw {
                let left = Int32(max(0, deadline.nanoseconds - MonotonicInstant.now().nanoseconds) / 1_000_000)
                guard left > 0 else { break }
                var descriptors = [pollfd(fd: signals.fd, events: Int16(POLLIN), revents: 0)]
                if terminal != nil { descriptors.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
                let ready = poll(&descriptors, nfds_t(descriptors.count), left)
                if ready < 0, errno == EINTR { continue }
                guard ready > 0 else { break }
                if descriptors[0].revents != 0, let signal = signals.take() {
                    if signal == SIGWINCH {
                        redraw = true
                        continue
                    }
                    return
                }
                if descriptors.count > 1, descriptors[1].revents != 0 {
                    var key: UInt8 = 0
                    let count = read(0, &key, 1)
                    // q, Q, Ctrl-C (when the terminal passes it as a byte), or the end of input.
                    if count <= 0 || key == UInt8(ascii: "q") || key == UInt8(ascii: "Q") || key == 3 { return }
                    redraw = true
                }
            }
            do {
                status = try JSONReader.parse(try ControlClient.request("status", socket: socket))
                problem = nil
            } catch {
                status = nil
                problem = "cannot reach \(socket): \(error)"
            }
        }
    }

    /// The wall-clock time now, `HH:MM:SS` (UTC, as records carry it).
    static func clock() -> String {
        String(WallClock.now().description.split(separator: "T").last?.prefix(8) ?? "--:--:--")
    }
}

/// The terminal while `top` draws on it: input unbuffered and not echoed (signals still
/// generated by Ctrl-C), the alternate screen, the cursor hidden; `restore()` puts everything
/// back. The C functions are `tcgetattr`, `tcsetattr` and `ioctl(TIOCGWINSZ)`.
final class Terminal {
    private var saved = termios()
    private let hasSettings: Bool
    private var restored = false

    init() {
        hasSettings = isatty(0) == 1 && tcgetattr(0, &saved) == 0
        if hasSettings {
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            raw.c_cc.5 = 0  // VTIME (Linux index 5): no read timeout
            raw.c_cc.6 = 1  // VMIN (Linux index 6): a read returns each key
            tcsetattr(0, TCSANOW, &raw)
        }
        // The alternate screen, cursor hidden.
        StandardStreams.write(fd: 1, "\u{1B}[?1049h\u{1B}[?25l")
    }

    /// Columns and rows (80x24 when the terminal does not say).
    func size() -> (width: Int, height: Int) {
        var window = winsize()
        guard ioctl(1, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0, window.ws_row > 0 else {
            return (80, 24)
        }
        return (Int(window.ws_col), Int(window.ws_row))
    }

    /// Draws `lines` from the top-left corner, clearing what each line and the screen leave over.
    func draw(_ lines: [String]) {
        var text = "\u{1B}[H"
        for (index, line) in lines.enumerated() {
            text += line + "\u{1B}[K"
            if index < lines.count - 1 { text += "\r\n" }
        }
        text += "\u{1B}[J"
        StandardStreams.write(fd: 1, text)
    }

    /// Leaves the alternate screen, shows the cursor and restores the input settings (once).
    func restore() {
        guard !restored else { return }
        restored = true
        StandardStreams.write(fd: 1, "\u{1B}[?25h\u{1B}[?1049l")
        if hasSettings { tcsetattr(0, TCSANOW, &saved) }
    }
}

/// The write end of `SignalWatch`'s pipe, for its handler (set once, before the handler is installed).
nonisolated(unsafe) private var signalPipeWriteEnd: Int32 = -1

/// Signals taken as readable events: a handler writes each signal's number into a pipe (the
/// self-pipe trick; `write` is async-signal-safe), so the terminal is restored by ordinary code
/// on the way out. The C functions are `pipe` and `sigaction`.
final class SignalWatch {
    /// The read end: readable when a signal arrived.
    let fd: Int32
    private let writeEnd: Int32

    init(_ signals: [Int32]) {
        let ends = makeWakePipe() ?? (-1, -1)
        fd = ends.read
        writeEnd = ends.write
        signalPipeWriteEnd = writeEnd
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = write(signalPipeWriteEnd, &byte, 1)
        }
        sigemptyset(&action.sa_mask)
        for signal in signals { sigaction(signal, &action, nil) }
    }

    /// The signal waiting to be read, if any.
    func take() -> Int32? {
        var byte: UInt8 = 0
        return read(fd, &byte, 1) == 1 ? Int32(byte) : nil
    }

    func close() {
        Glibc.close(fd)
        Glibc.close(writeEnd)
    }
}
