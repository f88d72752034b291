/// libFuzzer target `json-fuzz`: the JSON reader (JSONHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, JSONHarness.check)
}
