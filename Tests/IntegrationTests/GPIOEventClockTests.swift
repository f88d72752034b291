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

    @Test("any 64-bit stamp converts without trapping: Int64.min stays, Int64.max saturates no further")
    func extremeStamps() {
        #expect(GPIOEventClock.monotonic(.min, now: now) == .min)
        #expect(GPIOEventClock.monotonic(.max, now: now) == Int64.max - (now.realtimeNs - now.monotonicNs))
        // A u64 stamp past 2^63 reads as negative: nearer the monotonic clock, left as it is.
        #expect(GPIOEventClock.monotonic(Int64(bitPattern: 0xFFFF_FFFF_FFFF_FFFF), now: now) == -1)
        let absurd = GPIOEventClock.Now(monotonicNs: .min, realtimeNs: .max)
        #expect(GPIOEventClock.monotonic(.max, now: absurd) == .max)
        #expect(GPIOEventClock.monotonic(.min, now: absurd) == .min)
    }

    @Test("read() gives both clocks, realtime decades ahead of monotonic")
    func readBoth() {
        let read = GPIOEventClock.Now.read()
        #expect(read.realtimeNs - read.monotonicNs > 40 * 365 * 86_400 * 1_000_000_000)
        #expect(GPIOEventClock.monotonic(read.realtimeNs, now: read) == read.monotonicNs)
    }
}

/// The gpioinfo parser the real-kernel test compares `railgate gpio info` with (both formats).
@Suite("gpioinfo lines, libgpiod 1.6 and 2.x")
struct GPIOInfoLineTests {
    @Test("v1: name, consumer, active-low; unused and unnamed lines")
    func v1() {
        let used = GPIOInfoLine.parse("\tline  13: \"rg-main-L13\" \"railgate-door\" input active-low [used]")
        #expect(used?.offset == 13)
        #expect(used?.line == GPIOInfoLine(name: "rg-main-L13", consumer: "railgate-door", activeLow: true))
        let free = GPIOInfoLine.parse("\tline   2:      unnamed       unused   input  active-high ")
        #expect(free?.line == GPIOInfoLine(name: "", consumer: nil, activeLow: false))
    }

    @Test("v2: consumer=\"...\" after the attributes")
    func v2() {
        let used = GPIOInfoLine.parse(
            "\tline   4:\t\"rg-main-L4\"    \tinput active-low edges=both consumer=\"railgate-g-low\"")
        #expect(used?.offset == 4)
        #expect(used?.line == GPIOInfoLine(name: "rg-main-L4", consumer: "railgate-g-low", activeLow: true))
        let free = GPIOInfoLine.parse("\tline  15:\t\"rg-main-L15\"   \tinput")
        #expect(free?.line == GPIOInfoLine(name: "rg-main-L15", consumer: nil, activeLow: false))
        #expect(GPIOInfoLine.parse("gpiochip0 - 16 lines:") == nil)
    }
}
