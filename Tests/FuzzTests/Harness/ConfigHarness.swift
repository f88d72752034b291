import RailgateCore

/// A gateway configuration and a profile (the input's bytes before and after its first NUL,
/// which TOML text cannot hold; every profile the configuration names reads as that profile)
/// through `ConfigLoader`, and the profile alone through `DeviceProfile.parse`. Holds: loading
/// only ever ends in a configuration or in `ConfigErrors` (every problem in one of the two files,
/// on a line they have), never a trap; and what validation accepts is safe downstream: every
/// point lies within the 65,536 registers, its order means something for its type, its scale
/// and offset are finite, every planned read fits the request limits and a Modbus request, and
/// any register words decode to a finite reading or a reason.
enum ConfigHarness {
    static let configPath = "/etc/railgate/railgate.toml"

    /// Serves the configuration at `configPath` and the profile at any other path.
    struct Files: ConfigFileSource {
        var config: [UInt8]
        var profile: [UInt8]

        func read(_ path: String) -> String? { readBytes(path).map { String(decoding: $0, as: UTF8.self) } }
        func readBytes(_ path: String) -> [UInt8]? { path == ConfigHarness.configPath ? config : profile }
    }

    static func check(_ bytes: [UInt8]) -> [String] {
        let split = bytes.firstIndex(of: 0) ?? bytes.count
        let files = Files(config: Array(bytes[..<split]), profile: Array(bytes[min(split + 1, bytes.count)...]))
        var violations = Violations()
        do {
            let config = try ConfigLoader(files: files).load(configPath)
            checkAccepted(config, &violations)
        } catch {
            checkProblems(error, files: files, &violations)
        }
        do {
            let profile = try DeviceProfile.parse(bytes: files.profile, file: "profile.toml")
            checkAccepted(profile, limits: RequestLimits(), maxGap: 124, &violations)
        } catch {
            checkProblems(error, files: files, &violations)
        }
        return violations.messages
    }

    private static func checkProblems(_ errors: ConfigErrors, files: Files, _ violations: inout Violations) {
        violations.check(!errors.problems.isEmpty, "ConfigErrors without a problem")
        for problem in errors.problems {
            guard let line = problem.line else { continue }
            let text = problem.file == configPath ? files.config : files.profile
            let lines = text.reduce(1) { $0 + ($1 == 10 ? 1 : 0) }
            violations.check(line >= 1 && line <= lines, "\(problem) names line \(line) of \(lines)")
        }
    }

    private static func checkAccepted(_ config: GatewayConfig, _ violations: inout Violations) {
        for device in config.devices {
            guard let bus = config.buses.first(where: { $0.name == device.bus }) else {
                violations.check(false, "device \(device.name) on an undefined bus \(device.bus)")
                continue
            }
            violations.check(
                bus.transport.isLineFraming ? (1...247).contains(device.unit) : (0...255).contains(device.unit),
                "device \(device.name): unit \(device.unit) on \(bus.transport)")
            violations.check(device.replyUnit.map { (0...255).contains($0) } ?? true, "reply_unit out of range")
            checkAccepted(device.profile, limits: device.requestLimits, maxGap: bus.maxGap, &violations)
        }
        for gate in config.gates {
            violations.check(gate.openLine != gate.closedLine, "gate \(gate.name) watches one line twice")
        }
    }

    private static func checkAccepted(
        _ profile: DeviceProfile, limits: RequestLimits, maxGap: Int, _ violations: inout Violations
    ) {
        violations.check(!profile.points.isEmpty, "a profile without points accepted")
        violations.check(
            (1...125).contains(limits.registers) && (1...2000).contains(limits.bits), "request limits \(limits)")
        for point in profile.points {
            let describe = "point \(point.name) (\(point.type) at \(point.table) \(point.address))"
            violations.check(
                point.address >= 0 && point.address + point.count <= 65536, describe + " runs past register 65535")
            violations.check(point.count <= limits.items(for: point.table), describe + " is larger than one read")
            violations.check(point.type.allowedOrders.contains(point.order), describe + " order \(point.order)")
            violations.check(
                point.scale.isFinite && point.scale != 0 && point.offset.isFinite, describe + " scale/offset")
            violations.check(!point.table.holdsBits || point.type == .bool, describe + " in a bit table")
            for words in [[UInt16](repeating: 0, count: point.count), [UInt16](repeating: 0xFFFF, count: point.count)] {
                if case .success(.number(let number)) = point.reading(words) {
                    violations.check(number.isFinite, describe + " reads \(number)")
                }
            }
        }
        let requests = ReadPlanner.plan(profile.points, maxGap: maxGap, limits: limits)
        violations.check(
            Set(requests.flatMap(\.pointIndices)) == Set(profile.points.indices), "a point left out of the plan")
        for request in requests {
            violations.check(
                request.count >= 1 && request.count <= limits.items(for: request.table) && request.address >= 0
                    && request.address + request.count <= 65536 && UInt16(exactly: request.address) != nil,
                "planned read \(request.table) \(request.address)+\(request.count) with limits \(limits)")
            for index in request.pointIndices {
                let point = profile.points[index]
                violations.check(
                    point.address >= request.address && point.address + point.count <= request.address + request.count,
                    "point \(point.name) outside its read")
            }
        }
    }
}
