/// libFuzzer target `simchip-fuzz`: the simulated chip's line protocol (SimulatedChipHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSimulatedChip(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, SimulatedChipHarness.check)
}
