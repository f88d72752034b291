import Glibc
import RailgateCore

/// A small deterministic PRNG (SplitMix64), so `--seed` reproduces a run's values.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// How one simulated point moves over time, chosen from its name and unit the way a wagon's
/// sensors behave: bearings warm up and drift, brake pipe pressure dips while braking, loads
/// sit still with noise, doors open now and then, counters count.
enum Signal {
    case drifting(center: Double, spread: Double, rate: Double)
    case brakePipe(nominal: Double, dip: Double, periodS: Double)
    case counter(perSecond: Double)
    case toggling(meanPeriodS: Double)
    case constant(PointValue)

    static func model(for point: PointDefinition, unit: Int) -> Signal {
        let name = point.name.lowercased()
        let units = (point.unit ?? "").lowercased()
        if point.type == .bool || point.table.holdsBits { return .toggling(meanPeriodS: 120) }
        if case .bit = point.type { return .toggling(meanPeriodS: 120) }
        if point.pollOnce { return .constant(.unsigned(UInt64(1000 + unit))) }
        if case .string = point.type { return .constant(.text("SIM-\(unit)-\(point.name)")) }
        if name.contains("count") || name.contains("odometer") || units == "km" || units == "pulses" {
            return .counter(perSecond: units == "km" ? 0.02 : 1)
        }
        if name.contains("brake") || name.contains("pipe") || units == "bar" || units == "kpa" {
            let nominal = units == "kpa" ? 500.0 : 5.0
            return .brakePipe(nominal: nominal, dip: nominal * 0.3, periodS: 45)
        }
        if units.contains("degc") || name.contains("temp") {
            let base = name.contains("reefer") ? -18.0 : (name.contains("ambient") ? 15.0 : 42.0)
            let ceiling = point.alarmAbove.map { min($0 - 5, base + 8) } ?? base + 8
            return .drifting(center: base, spread: max(1, ceiling - base), rate: 0.05)
        }
        if units == "t" || units == "kg" || name.contains("load") {
            let nominal = units == "kg" ? 48_000.0 : 48.0
            return .drifting(center: nominal, spread: nominal * 0.01, rate: 0.2)
        }
        let low = point.alarmBelow ?? 0
        let high = point.alarmAbove ?? 100
        return .drifting(center: (low + high) / 2, spread: (high - low) / 4, rate: 0.1)
    }
}

/// The state of one simulated point: its model and its current engineering value.
struct SimulatedPoint {
    let definition: PointDefinition
    let signal: Signal
    var value: Double
    var pinned: PointValue?

    init(_ definition: PointDefinition, unit: Int, pinned: PointValue?, random: inout SplitMix64) {
        self.definition = definition
        signal = Signal.model(for: definition, unit: unit)
        self.pinned = pinned
        switch signal {
        case .drifting(let center, let spread, _):
            value = center + Double.random(in: -spread...spread, using: &random) / 2
        case .brakePipe(let nominal, _, _): value = nominal
        case .counter: value = Double(UInt16.random(in: 0...1000, using: &random))
        case .toggling: value = 0
        case .constant: value = 0
        }
    }

    /// Moves the value on by `dt` seconds at simulated time `t`.
    mutating func advance(t: Double, dt: Double, random: inout SplitMix64) {
        switch signal {
        case .drifting(let center, let spread, let rate):
            let pull = (center - value) * 0.02
            value += pull + Double.random(in: -1...1, using: &random) * rate * spread * dt
            value = min(max(value, center - spread), center + spread)
        case .brakePipe(let nominal, let dip, let period):
            let phase = t.truncatingRemainder(dividingBy: period) / period
            let braking = phase > 0.8 ? sin((phase - 0.8) / 0.2 * .pi) : 0
            value = nominal - dip * braking + Double.random(in: -0.005...0.005, using: &random) * nominal
        case .counter(let perSecond):
            value += perSecond * dt
        case .toggling(let meanPeriod):
            if Double.random(in: 0..<1, using: &random) < dt / meanPeriod { value = value == 0 ? 1 : 0 }
        case .constant:
            break
        }
    }

    /// The value to serve now, typed for the point.
    var current: PointValue {
        if let pinned { return pinned }
        if case .constant(let fixed) = signal { return fixed }
        if definition.type == .bool || definition.table.holdsBits { return .bool(value != 0) }
        switch definition.type {
        case .bit: return .bool(value != 0)
        case .u8, .i8, .bcd16, .bcd32, .u16, .u32, .u64, .i16, .i32, .i64:
            // Serve what the sensor would: a whole number of raw counts.
            let raw = ((value - definition.offset) / definition.scale).rounded()
            return .number(raw * definition.scale + definition.offset)
        default:
            return .number(value)
        }
    }
}
