import RailgateGPIO
import Testing

/// Edge timestamps onto CLOCK_MONOTONIC (the v1 backend on kernels before 5.7 gets CLOCK_REALTIME).
@Suite("GPIO event clock")
struct GPIOEventClockTests {
    // Booted 1 h ago; wall clock 2026-11-29T12:00:00Z.
    let now = GPIOEventClock.Now(monotonicNs: 3_600_000_000_000, realtimeNs: 1_795_953_600_000_000_000)

    @Test("a monotonic stamp stays as it is")
    func monotonicStays() {
        #expect(GPIOEventClock.monotonic(3_599_250_000_000, now: now) == 3_599_250_000_000)
        #expect(GPIOEventClock.monotonic(5_000, now: now) == 5_000)
    }

    @Test("a realtime stamp moves onto the monotonic clock by the clocks' offset")
    func realtimeConverted() {
        // 750 ms ago on the wall clock is 750 ms ago on the monotonic clock.
        #expect(GPIOEventClock.monotonic(1_795_953_599_250_000_000, now: now) == 3_599_250_000_000)
        // A stamp a little ahead of the read (clock skew between the two reads) still converts.
        #expect(GPIOEventClock.monotonic(1_795_953_600_000_100_000, now: now) == 3_600_000_100_000)
    }

    @Test("read() gives both clocks, realtime decades ahead of monotonic")
    func readBoth() {
        let read = GPIOEventClock.Now.read()
        #expect(read.realtimeNs - read.monotonicNs > 40 * 365 * 86_400 * 1_000_000_000)
        #expect(GPIOEventClock.monotonic(read.realtimeNs, now: read) == read.monotonicNs)
    }
}
