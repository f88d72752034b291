// swift-tools-version: 6.0
import PackageDescription

let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // railgate's own targets only: the dependencies' warnings are not ours to fix.
    .unsafeFlags(["-warnings-as-errors"]),
]

let package = Package(
    name: "railgate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "railgate", targets: ["railgate"]),
        .executable(name: "railgate-sim", targets: ["railgate-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C library seams: one [system] module per library, shims only for what Swift cannot import.
        .systemLibrary(
            name: "CModbus", pkgConfig: "libmodbus", providers: [.apt(["libmodbus-dev"])]),
        .systemLibrary(
            name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CGPIOD", pkgConfig: "libgpiod", providers: [.apt(["libgpiod-dev"])]),
        // libgpiod v1 or v2, whichever pkg-config finds, behind one small C API (railgate_gpio.h).
        .target(name: "CGPIODShim", dependencies: ["CGPIOD"], cSettings: [.unsafeFlags(["-Wall", "-Werror"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // `railgate doctor` reads TLS certificates' validity with libcrypto (already loaded by libmosquitto).
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // Benchmark baselines only: SQLite for the buffer, a plain C libmodbus loop for the poller.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CBenchBaseline", dependencies: ["CModbus"]),

        // Pure logic: configuration, decoding, records, batching. No I/O.
        .target(name: "RailgateCore", swiftSettings: strictness),
        // The system layer under everything else: clocks, locks, files, standard streams, Unix sockets.
        .target(name: "RailgateSystem", dependencies: ["RailgateCore"], swiftSettings: strictness),
        // Safe Swift layers over the C libraries.
        .target(
            name: "RailgateModbus", dependencies: ["CModbus", "RailgateCore", "RailgateSystem"],
            swiftSettings: strictness),
        .target(
            name: "RailgateGPIO", dependencies: ["CGPIODShim", "RailgateCore", "RailgateSystem"],
            swiftSettings: strictness),
        .target(
            name: "RailgateMQTT", dependencies: ["CMosquitto", "CZlib", "RailgateCore", "RailgateSystem"],
            swiftSettings: strictness),
        // The durable record buffer under state_dir.
        .target(
            name: "RailgateBuffer", dependencies: ["RailgateCore", "RailgateSystem", "CZlib"], exclude: ["DESIGN.md"],
            swiftSettings: strictness),
        // The daemon's services and their wiring.
        .target(
            name: "RailgateGateway",
            dependencies: [
                "RailgateCore", "RailgateSystem", "RailgateModbus", "RailgateMQTT", "RailgateBuffer", "RailgateGPIO",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness),
        .executableTarget(
            name: "railgate",
            dependencies: [
                "RailgateGateway", "RailgateCore", "RailgateSystem", "RailgateModbus", "RailgateBuffer", "RailgateGPIO",
                "RailgateMQTT", "CCrypto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictness),
        .executableTarget(
            name: "railgate-sim",
            dependencies: [
                "RailgateCore", "RailgateSystem", "RailgateModbus", "RailgateGPIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Simulators/Sources/railgate-sim",
            swiftSettings: strictness),

        .executableTarget(
            name: "railgate-bench",
            dependencies: [
                "RailgateCore", "RailgateSystem", "RailgateModbus", "RailgateBuffer", "RailgateGateway", "RailgateMQTT",
                "CBenchBaseline", "CSQLite",
            ],
            swiftSettings: strictness),

        .testTarget(name: "RailgateCoreTests", dependencies: ["RailgateCore"], swiftSettings: strictness),
        .testTarget(
            name: "RailgateGatewayTests",
            dependencies: [
                "RailgateGateway", "RailgateCore", "RailgateSystem", "RailgateModbus", "RailgateMQTT", "RailgateBuffer",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness),
        .testTarget(
            name: "RailgateBufferTests", dependencies: ["RailgateBuffer", "RailgateCore", "RailgateSystem"],
            swiftSettings: strictness),
        // The fuzz targets' harnesses (Fuzz/Targets builds them with libFuzzer), replayed here over
        // the committed corpora and crash regressions.
        .testTarget(
            name: "FuzzTests", dependencies: ["RailgateCore", "RailgateSystem", "RailgateBuffer", "RailgateGPIO"],
            swiftSettings: strictness),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "RailgateCore", "RailgateSystem", "RailgateMQTT", "RailgateModbus", "RailgateGPIO", "RailgateBuffer",
            ],
            exclude: ["Fixtures"],
            swiftSettings: strictness),
    ]
)
