/// libFuzzer target `config-fuzz`: configuration and profile validation (ConfigHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, ConfigHarness.check)
}
