/// libFuzzer target `registers-fuzz`: register decoding (RegisterHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegisters(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, RegisterHarness.check)
}
