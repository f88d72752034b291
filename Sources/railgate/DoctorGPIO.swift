import Glibc
import RailgateCore
import RailgateGPIO

/// The GPIO checks: each gate's and input's chip present, its lines present, who holds them
/// (the kernel's consumer name), and what they read.
enum DoctorGPIO {
    static func checkGates(_ config: GatewayConfig, daemon: JSON?, _ report: DoctorReport) {
        for gate in config.gates {
            let subject = "gate \(gate.name)"
            let lines = [gate.openLine, gate.closedLine]
            if let status = daemon?["gates"]?.arrayValue?.first(where: { $0["name"] == .string(gate.name) }),
                let state = status["state"]?.stringValue
            {
                if let error = status["error"]?.stringValue {
                    report.note(.fail, subject, error, remedy: remedy(forDaemonError: error))
                } else if state == "fault" {
                    report.note(
                        .warn, subject, "barrier in fault (\(status["fault"]?.plainText ?? "?"))",
                        remedy: "check the barrier and its limit switches")
                } else {
                    report.note(.ok, subject, "watched by the daemon, barrier \(state)\(holders(gate.chip, lines))")
                }
                continue
            }
            guard let chip = open(gate.chip, subject: subject, report),
                checkLines(chip, gate.chip, lines, subject, report)
            else { continue }
            do {
                let watch = try chip.watch(lines: lines, activeLow: gate.activeLow, consumer: "railgate-doctor")
                let levels = try watch.levels()
                watch.release()
                let open = levels[gate.openLine] ?? false
                let closed = levels[gate.closedLine] ?? false
                if open && closed {
                    report.note(
                        .warn, subject,
                        "\(gate.chip) lines \(gate.openLine)/\(gate.closedLine) free; both limit switches read active",
                        remedy: "a broken wire (with active_low) or a misadjusted switch: check both switches")
                } else {
                    report.note(
                        .ok, subject,
                        "\(gate.chip) lines \(gate.openLine)/\(gate.closedLine) free; barrier reads \(open ? "open" : closed ? "closed" : "between limits")"
                    )
                }
            } catch {
                report.note(.fail, subject, error.description)
            }
        }
    }

    static func checkInputs(_ config: GatewayConfig, daemon: JSON?, _ report: DoctorReport) {
        for input in config.inputs {
            let subject = "input \(input.name)"
            if let status = daemon?["inputs"]?.arrayValue?.first(where: { $0["name"] == .string(input.name) }),
                let state = status["state"]?.stringValue
            {
                if let error = status["error"]?.stringValue {
                    report.note(.fail, subject, error, remedy: remedy(forDaemonError: error))
                } else {
                    report.note(.ok, subject, "watched by the daemon, \(state)\(holders(input.chip, [input.line]))")
                }
                continue
            }
            guard let chip = open(input.chip, subject: subject, report),
                checkLines(chip, input.chip, [input.line], subject, report)
            else { continue }
            do {
                let watch = try chip.watch(lines: [input.line], activeLow: input.activeLow, consumer: "railgate-doctor")
                let active = try watch.levels()[input.line] ?? false
                watch.release()
                report.note(
                    .ok, subject, "\(input.chip) line \(input.line) free; reads \(active ? "active" : "inactive")")
            } catch {
                report.note(.fail, subject, error.description)
            }
        }
    }

    /// The chip, or nil after a `fail` line naming the chips that are there.
    private static func open(_ name: String, subject: String, _ report: DoctorReport) -> (any GPIOChip)? {
        do {
            return try GPIOChips.open(name)
        } catch {
            switch error.kind {
            case .noSuchChip:
                let present = GPIOChips.kernelChips()
                report.note(
                    .fail, subject,
                    "GPIO chip \(name) not found (chips here: \(present.isEmpty ? "none" : present.joined(separator: ", ")))",
                    remedy: present.isEmpty
                        ? "load the board's GPIO driver (device tree overlay, modprobe) or fix chip in the config"
                        : "set chip to one of the chips here (railgate gpio info shows their lines)")
            case .permissionDenied:
                report.note(
                    .fail, subject, "GPIO chip \(name): permission denied",
                    remedy: "give the railgate user access to the chip (a gpio group or a udev rule)")
            default:
                report.note(.fail, subject, error.description)
            }
            return nil
        }
    }

    /// true when every line exists and is free; else a `fail` line naming the holder.
    private static func checkLines(
        _ chip: any GPIOChip, _ name: String, _ lines: [Int], _ subject: String, _ report: DoctorReport
    ) -> Bool {
        for line in lines {
            let info: GPIOLineInfo
            do {
                info = try chip.lineInfo(line)
            } catch {
                if case .noSuchLine(let count) = error.kind {
                    report.note(
                        .fail, subject,
                        "GPIO chip \(name) has \(DoctorText.plural(count, "line")); line \(line) does not exist",
                        remedy: "check the line numbers in the config against the wiring (railgate gpio info)")
                } else {
                    report.note(.fail, subject, error.description)
                }
                return false
            }
            if info.isUsed {
                let holder = info.consumer.isEmpty ? "an unnamed user" : "'\(info.consumer)'"
                let remedy: String
                switch info.consumer {
                case "railgate-watch":
                    remedy =
                        "a `railgate gpio watch` holds it: stop that (Ctrl-C), or follow the daemon's events instead"
                case "railgate-doctor":
                    remedy = "another railgate doctor is reading it: run doctor again when it is done"
                case let consumer where consumer.hasPrefix("railgate-"):
                    remedy =
                        "a railgate daemon holds it but did not answer on this config's control_socket: is another "
                        + "railgate running with another config? (systemctl status railgate, ps -C railgate)"
                default:
                    remedy =
                        "stop \(holder) (gpiomon, gpioset, a kernel driver or overlay) or wire the switch to a free line"
                }
                report.note(.fail, subject, "GPIO chip \(name) line \(line) is held by \(holder)", remedy: remedy)
                return false
            }
        }
        return true
    }

    /// ", lines 17/18 held by 'railgate'" when the chip says who holds them, else "".
    private static func holders(_ chipName: String, _ lines: [Int]) -> String {
        guard let chip = try? GPIOChips.open(chipName) else { return "" }
        let consumers = lines.compactMap { line -> String? in
            guard let info = try? chip.lineInfo(line), info.isUsed, !info.consumer.isEmpty else { return nil }
            return info.consumer
        }
        guard consumers.count == lines.count, let first = consumers.first else { return "" }
        let names = lines.map(String.init).joined(separator: "/")
        return
            "; line\(lines.count == 1 ? "" : "s") \(names) held by '\(Set(consumers).count == 1 ? first : consumers.joined(separator: "/"))'"
    }

    private static func remedy(forDaemonError error: String) -> String? {
        error.contains("not found") ? "check the chip name (railgate gpio info) and the board's GPIO driver" : nil
    }
}
