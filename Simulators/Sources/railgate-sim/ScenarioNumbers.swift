import RailgateCore

extension TOMLTable {
    /// The number at `key` when it lies in `range` (and is whole when `whole`), else nil with a
    /// problem noted at its line: a scenario's huge, infinite or NaN number is refused before it
    /// reaches `Int()` or a schedule in nanoseconds, where it would trap. Nil without a problem
    /// when the key is absent.
    func number(
        _ key: String, within range: ClosedRange<Double>, whole: Bool = false, file: String,
        problems: inout [ConfigProblem]
    ) -> Double? {
        guard let value = number(key) else { return nil }
        guard range.contains(value), !whole || value.rounded() == value else {
            problems.append(
                ConfigProblem(
                    file: file, line: self[key]?.line ?? line,
                    message:
                        "\(key) must be \(whole ? "a whole number" : "a number") from \(Self.text(range.lowerBound)) to \(Self.text(range.upperBound))"
                ))
            return nil
        }
        return value
    }

    private static func text(_ bound: Double) -> String {
        bound.rounded() == bound && abs(bound) < 1e15 ? String(Int64(bound)) : String(bound)
    }
}
