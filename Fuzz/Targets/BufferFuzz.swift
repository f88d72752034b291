/// libFuzzer target `buffer-fuzz`: buffer segment recovery (BufferRecoveryHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBufferRecovery(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, BufferRecoveryHarness.check)
}
