import Glibc
import RailgateCore
import RailgateModbus

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

/// Polls one device: reads its planned requests, decodes its points, and turns the poll into a
/// `sample` record. Owned by its bus's thread.
public final class DevicePoller {
    public let device: DeviceConfig
    public let requests: [ReadRequest]
    public private(set) var stats = DeviceStats()
    var nextDue: MonotonicInstant
    /// Deadbands and alarms: what of each poll goes upstream.
    var edge: EdgeFilter

    public init(device: DeviceConfig, maxGap: Int, firstDue: MonotonicInstant) {
        self.device = device
        requests = ReadPlanner.plan(device.profile.points, maxGap: maxGap)
        nextDue = firstDue
        edge = EdgeFilter(profile: device.profile)
    }

    /// One poll: every request with up to `retries` retries on timeouts and garbled replies;
    /// a request refused with "illegal data address" is split into single points so that one
    /// bad address does not blind its neighbours. A device silent on its first request is not
    /// asked the rest (each would cost the line a timeout). The transport paces the line
    /// (`inter_request_delay_ms` between any two requests of the bus).
    public func poll(over transport: any ModbusTransport, retries: Int, at timestamp: Timestamp) -> Record {
        let points = device.profile.points
        var results = [Result<PointValue, ReadFailure>?](repeating: nil, count: points.count)
        var failure: ModbusError?
        func read(_ table: RegisterTable, _ address: Int, _ count: Int) -> Result<[UInt16], ModbusError> {
            var attempt = 0
            while true {
                stats.requests += 1
                do throws(ModbusError) {
                    return .success(try transport.read(table, unit: device.unit, address: address, count: count))
                } catch {
                    let retryable = error.kind == .timeout || error.kind == .crc || error.kind == .badReply
                    guard retryable, attempt < retries else { return .failure(error) }
                    attempt += 1
                }
            }
        }
        for request in requests {
            switch read(request.table, request.address, request.count) {
            case .success(let registers):
                for index in request.pointIndices {
                    let point = points[index]
                    let start = point.address - request.address
                    results[index] = .success(point.decode(registers[start..<(start + point.count)]))
                }
            case .failure(let error) where error.kind == .exception(2) && request.pointIndices.count > 1:
                failure = error
                for index in request.pointIndices {
                    let point = points[index]
                    switch read(point.table, point.address, point.count) {
                    case .success(let registers): results[index] = .success(point.decode(registers))
                    case .failure(let single): results[index] = .failure(single.readFailure)
                    }
                }
            case .failure(let error):
                failure = error
                for index in request.pointIndices { results[index] = .failure(error.readFailure) }
                let nothingRead = !results.contains { if case .success? = $0 { true } else { false } }
                if error.kind == .connection || error.kind == .setup || (error.kind == .timeout && nothingRead) {
                    // The link is down, or the device is silent from its first request: the remaining
                    // requests would fail the same way, each costing a timeout of the shared line.
                    for other in requests where results[other.pointIndices[0]] == nil {
                        for index in other.pointIndices { results[index] = .failure(error.readFailure) }
                    }
                }
            }
            if results.allSatisfy({ $0 != nil }) { break }
        }
        var values: [(String, PointValue)] = []
        var errors: [(String, ReadFailure)] = []
        for (index, result) in results.enumerated() {
            switch result {
            case .success(let value): values.append((points[index].name, value))
            case .failure(let reason): errors.append((points[index].name, reason))
            case nil: errors.append((points[index].name, .io))
            }
        }
        stats.polls += 1
        if errors.isEmpty {
            stats.consecutiveFailures = 0
        } else {
            stats.errors += 1
            stats.lastError = failure?.description ?? "read failed"
            stats.consecutiveFailures = values.isEmpty ? stats.consecutiveFailures + 1 : 0
        }
        return Record(timestamp: timestamp, source: device.name, body: .sample(values: values, errors: errors))
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
