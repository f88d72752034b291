import Glibc
import RailgateCore
import RailgateModbus
import RailgateSystem

/// Reads registers from a slave: the seam between the poller and libmodbus, so that polling
/// logic can run over a real connection or a test double.
public protocol ModbusTransport: AnyObject {
    func read(_ table: RegisterTable, unit: Int, address: Int, count: Int) throws(ModbusError) -> [UInt16]
}

extension ModbusConnection: ModbusTransport {}

/// Counters of one device, as `railgate status` shows them.
public struct DeviceStats: Sendable, Equatable {
    public var polls = 0
    /// Polls in which at least one point could not be read.
    public var errors = 0
    public var lastError: String?
    /// Consecutive polls in which nothing could be read (drives the back-off).
    public var consecutiveFailures = 0
    public var requests = 0
}

/// How a poll treats a device that answers exception 6 (slave device busy) or 5 (acknowledge):
/// asked again `retries` times, `waitMs` apart, waiting through `pause` (false: stop waiting).
public struct BusyPolicy {
    public var retries: Int
    public var waitMs: Int
    public var pause: (MonotonicInstant) -> Bool

    /// By default `pause` sleeps until the instant (`nanosleep`).
    public init(
        retries: Int = 3, waitMs: Int = 200, pause: @escaping (MonotonicInstant) -> Bool = MonotonicInstant.sleep
    ) {
        self.retries = retries
        self.waitMs = waitMs
        self.pause = pause
    }

    /// The bus's `busy_retries` and `busy_retry_ms`, waiting through `pause`.
    public init(bus: BusConfig, pause: @escaping (MonotonicInstant) -> Bool = MonotonicInstant.sleep) {
        self.init(retries: bus.busyRetries, waitMs: bus.busyRetryMs, pause: pause)
    }

    /// Whether the slave said "busy, ask again later" (exception 6 or 5).
    static func isBusy(_ error: ModbusError) -> Bool {
        error.kind == .exception(6) || error.kind == .exception(5)
    }
}

/// Polls one device: reads its planned requests, decodes its points, and turns the poll into a
/// `sample` record. Owned by its bus's thread.
public final class DevicePoller {
    public let device: DeviceConfig
    /// The read plan: planned once from the profile within the device's request limits, then
    /// refined by what the device refused (see `poll`).
    public private(set) var requests: [ReadRequest]
    /// The requests of the `poll = "once"` points, read by `readStatic`.
    public let staticRequests: [ReadRequest]
    /// The static points' last reading (nil until read), in profile order.
    public private(set) var staticReadings: [(name: String, reading: Result<PointValue, ReadFailure>)]?
    /// The longest reads the device has answered, of bits and of registers.
    private var planNotes: [String] = []
    private var largestAnsweredBits = 0
    private var largestAnsweredRegisters = 0
    public private(set) var stats = DeviceStats()
    var nextDue: MonotonicInstant
    /// Deadbands and alarms: what of each poll goes upstream.
    var edge: EdgeFilter

    public init(device: DeviceConfig, maxGap: Int, firstDue: MonotonicInstant) {
        self.device = device
        requests = ReadPlanner.plan(device.profile.points, maxGap: maxGap, limits: device.requestLimits) {
            !$0.pollOnce
        }
        staticRequests = ReadPlanner.plan(device.profile.points, maxGap: maxGap, limits: device.requestLimits) {
            $0.pollOnce
        }
        nextDue = firstDue
        edge = EdgeFilter(profile: device.profile)
    }

    /// One poll: every request with up to `retries` retries on timeouts and garbled replies.
    /// A request of several points refused with exception 2 (illegal data address), 3 (illegal
    /// data value: many devices answer so to a read longer than they serve) or 4 (slave device
    /// failure) is halved, and the halves again, until the parts are answered or a single point
    /// is refused alone: one bad address does not blind its neighbours, and a size limit is found
    /// in a few requests, not one per point. The parts replace the request in `requests`, so a
    /// refusal is paid for once (a split after exception 4 is kept only if a part was answered,
    /// as a device failing everything says nothing about its requests). Each point's registers
    /// go through `PointDefinition.reading`: NaN, infinities and `invalid` sentinels land in
    /// errors. A device silent on its first request is not asked the rest (each would cost the
    /// line a timeout).
    /// The transport paces the line (`inter_request_delay_ms` between any two requests of the bus).
    /// A request answered "busy" (exception 6 or 5) is asked again after `busy.waitMs`, up to
    /// `busy.retries` times, before its points fail with `busy`. `poll = "once"` points are not
    /// read here (see `readStatic`) and appear in no sample.
    public func poll(
        over transport: any ModbusTransport, retries: Int, busy: BusyPolicy = BusyPolicy(), at timestamp: Timestamp
    ) -> Record {
        let points = device.profile.points
        var results = [Result<PointValue, ReadFailure>?](repeating: nil, count: points.count)
        var failure: ModbusError?
        func read(_ table: RegisterTable, _ address: Int, _ count: Int) -> Result<[UInt16], ModbusError> {
            readRegisters(transport, retries: retries, busy: busy, table, address, count)
        }
        // Requests the device refused are halved until the parts are answered; what is learnt
        // replaces the request in the plan, so later polls ask for the parts straight away.
        var answered = false
        var halted: ModbusError?
        func readPart(_ request: ReadRequest) -> [(request: ReadRequest, answered: Bool)] {
            if let halted {
                for index in request.pointIndices { results[index] = .failure(halted.readFailure) }
                return [(request, false)]
            }
            switch read(request.table, request.address, request.count) {
            case .success(let registers):
                answered = true
                if request.table.holdsBits {
                    largestAnsweredBits = max(largestAnsweredBits, request.count)
                } else {
                    largestAnsweredRegisters = max(largestAnsweredRegisters, request.count)
                }
                device.profile.readings(request.pointIndices, from: registers, at: request.address, into: &results)
                return [(request, true)]
            case .failure(let error) where Self.isRefusal(error) && request.pointIndices.count > 1:
                failure = error
                let (low, high) = request.halves(of: points)!
                let parts = readPart(low) + readPart(high)
                // A split is kept when the refusal is about the request (exception 2: an address;
                // 3: the size), or when a part was answered; a device failing everything with
                // exception 4 keeps its plan.
                let partAnswered = parts.contains { $0.answered }
                return partAnswered || error.kind != .exception(4) ? parts : [(request, false)]
            case .failure(let error):
                failure = error
                let reason: ReadFailure = BusyPolicy.isBusy(error) ? .busy : error.readFailure
                for index in request.pointIndices { results[index] = .failure(reason) }
                if error.kind == .connection || error.kind == .setup || (error.kind == .timeout && !answered) {
                    // The link is down, or the device is silent from its first request: the remaining
                    // requests would fail the same way, each costing a timeout of the shared line.
                    halted = error
                }
                return [(request, false)]
            }
        }
        var outcomes: [[(request: ReadRequest, answered: Bool)]] = []
        outcomes.reserveCapacity(requests.count)
        var split = false
        for request in requests {
            let parts = readPart(request)
            split = split || parts.count > 1
            outcomes.append(parts)
        }
        if split { learn(outcomes) }
        var values: [(String, PointValue)] = []
        var errors: [(String, ReadFailure)] = []
        values.reserveCapacity(points.count)
        points.withUnsafeBufferPointer { points in
            for (index, result) in results.enumerated() where !points[index].pollOnce {
                switch result {
                case .success(let value): values.append((points[index].name, value))
                case .failure(let reason): errors.append((points[index].name, reason))
                case nil: errors.append((points[index].name, .io))
                }
            }
        }
        stats.polls += 1
        if errors.isEmpty {
            stats.consecutiveFailures = 0
        } else {
            stats.errors += 1
            // Every read answered: the values themselves were no reading (NaN, infinity, a sentinel).
            stats.lastError =
                failure?.description ?? "no reading: " + errors.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
            stats.consecutiveFailures = values.isEmpty ? stats.consecutiveFailures + 1 : 0
        }
        return Record(timestamp: timestamp, source: device.name, body: .sample(values: values, errors: errors))
    }

    /// One request with up to `retries` retries on timeouts and garbled replies, and up to
    /// `busy.retries` more, `busy.waitMs` apart, while the slave answers exception 6 or 5.
    private func readRegisters(
        _ transport: any ModbusTransport, retries: Int, busy: BusyPolicy, _ table: RegisterTable, _ address: Int,
        _ count: Int
    ) -> Result<[UInt16], ModbusError> {
        var attempt = 0
        var busyAttempt = 0
        while true {
            stats.requests += 1
            do throws(ModbusError) {
                return .success(try transport.read(table, unit: device.unit, address: address, count: count))
            } catch {
                if BusyPolicy.isBusy(error) {
                    guard busyAttempt < busy.retries,
                        busy.pause(MonotonicInstant.now().adding(milliseconds: busy.waitMs))
                    else { return .failure(error) }
                    busyAttempt += 1
                    continue
                }
                let retryable = error.kind == .timeout || error.kind == .crc || error.kind == .badReply
                guard retryable, attempt < retries else { return .failure(error) }
                attempt += 1
            }
        }
    }

    /// Reads the `poll = "once"` points (serial number, firmware version): each request with the
    /// poll's retries, no halving. Returns the readings in profile order (also kept in
    /// `staticReadings`), or nil when the device has none.
    public func readStatic(
        over transport: any ModbusTransport, retries: Int, busy: BusyPolicy = BusyPolicy()
    ) -> [(name: String, reading: Result<PointValue, ReadFailure>)]? {
        guard !staticRequests.isEmpty else { return nil }
        let points = device.profile.points
        var results: [Int: Result<PointValue, ReadFailure>] = [:]
        for request in staticRequests {
            switch readRegisters(transport, retries: retries, busy: busy, request.table, request.address, request.count)
            {
            case .success(let registers):
                for index in request.pointIndices {
                    let start = points[index].address - request.address
                    results[index] = points[index].reading(registers[start..<(start + points[index].count)])
                }
            case .failure(let error):
                let reason: ReadFailure = BusyPolicy.isBusy(error) ? .busy : error.readFailure
                for index in request.pointIndices { results[index] = .failure(reason) }
            }
        }
        let readings = results.keys.sorted().map { (name: points[$0].name, reading: results[$0]!) }
        staticReadings = readings
        return readings
    }

    /// Whether every static point has a value (false before the first `readStatic`).
    public var staticComplete: Bool {
        staticReadings?.allSatisfy { if case .success = $0.reading { true } else { false } } ?? staticRequests.isEmpty
    }

    /// Replaces the plan with the parts a poll's refused requests were split into. Answered
    /// neighbours with no register between them are joined again, up to the longest read the
    /// device has answered: halving around one bad address leaves pieces that need not stay apart.
    private func learn(_ outcomes: [[(request: ReadRequest, answered: Bool)]]) {
        let before = requests
        defer {
            if requests != before {
                let refused = zip(before, outcomes).filter { $0.1.count > 1 }.map { Self.describe($0.0) }
                planNotes.append(
                    "device \(device.name) (unit \(device.unit)) refused \(refused.joined(separator: ", ")): "
                        + "reading \(requests.map(Self.describe).joined(separator: ", ")) from now on")
            }
        }
        var plan: [(request: ReadRequest, answered: Bool)] = []
        for part in outcomes.joined() {
            let longest = part.request.table.holdsBits ? largestAnsweredBits : largestAnsweredRegisters
            if let last = plan.last, last.answered, part.answered, last.request.table == part.request.table,
                last.request.address + last.request.count == part.request.address,
                last.request.count + part.request.count <= longest
            {
                var joined = last.request
                joined.count += part.request.count
                joined.pointIndices += part.request.pointIndices
                plan[plan.count - 1] = (joined, true)
            } else {
                plan.append(part)
            }
        }
        requests = plan.map(\.request)
    }

    /// "holding 0-59": a request for log lines.
    static func describe(_ request: ReadRequest) -> String {
        "\(request.table.rawValue) \(request.address)-\(request.address + request.count - 1)"
    }

    /// Log lines about plan changes since the last call (a refused read split and learnt), for
    /// the bus poller to log once each.
    public func takePlanNotes() -> [String] {
        defer { planNotes = [] }
        return planNotes
    }

    /// Whether the device refused the request itself (exception 2, 3 or 4), so that smaller
    /// requests may be answered.
    static func isRefusal(_ error: ModbusError) -> Bool {
        error.kind == .exception(2) || error.kind == .exception(3) || error.kind == .exception(4)
    }

    /// When to poll next: on the interval grid, or backed off (doubling, capped) while the device
    /// answers nothing, so that a dead slave does not eat the line's time.
    func scheduleNext(after due: MonotonicInstant, now: MonotonicInstant, maxBackoffMs: Int) {
        let interval = device.pollIntervalMs
        if stats.consecutiveFailures > 1 {
            let factor = 1 << min(stats.consecutiveFailures - 1, 16)
            nextDue = now.adding(milliseconds: min(interval * factor, max(interval, maxBackoffMs)))
            return
        }
        let next = due.adding(milliseconds: interval)
        nextDue = next < now ? now.adding(milliseconds: interval) : next
    }
}
