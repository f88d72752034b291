/// Runs one harness (Tests/FuzzTests/Harness) on libFuzzer's input: a violation it reports, or a
/// trap in the code under test, is a crash that libFuzzer saves with its input.
enum FuzzEntry {
    static func run(_ data: UnsafePointer<UInt8>?, _ size: Int, _ check: ([UInt8]) -> [String]) -> Int32 {
        let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
        let violations = check(bytes)
        if !violations.isEmpty { fatalError(violations.prefix(5).joined(separator: "\n")) }
        return 0
    }
}
