// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "snapshot",
    products: [
        .executable(name: "snapshot", targets: ["snapshot"]),
        .library(name: "SnapshotCore", targets: ["SnapshotCore"]),
        .library(name: "SnapshotEngine", targets: ["SnapshotEngine"]),
        .library(name: "SnapshotMQTT", targets: ["SnapshotMQTT"]),
        .library(name: "SnapshotAgent", targets: ["SnapshotAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .target(name: "CSystemShims"),
        // Optimised in debug builds too: unoptimised, the hash runs at a tenth of OpenSSL's
        // speed and the tests hash hundreds of MiB.
        .target(name: "CSHA256", cSettings: [.unsafeFlags(["-O2"])]),
        .target(
            name: "SnapshotCore",
            dependencies: ["CZstd", "COpenSSL", "CSystemShims", "CSHA256"]),
        .target(
            name: "SnapshotEngine",
            dependencies: ["SnapshotCore", "SnapshotMQTT", "CSystemShims", .product(name: "Yams", package: "Yams")]),
        .target(
            name: "SnapshotMQTT",
            dependencies: ["CMosquitto"]),
        .target(
            name: "SnapshotAgent",
            dependencies: [
                "SnapshotEngine", "SnapshotMQTT", "SnapshotCore", "COpenSSL",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(
            name: "snapshot",
            dependencies: [
                "SnapshotEngine", "SnapshotCore", "SnapshotAgent", "CSystemShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(name: "TestSupport", dependencies: ["SnapshotCore"], path: "Tests/TestSupport"),
        .testTarget(name: "SnapshotCoreTests", dependencies: ["SnapshotCore", "TestSupport"]),
        .testTarget(name: "SnapshotEngineTests", dependencies: ["SnapshotEngine", "SnapshotCore", "SnapshotMQTT", "TestSupport"]),
        .testTarget(name: "SnapshotCLITests", dependencies: ["SnapshotCore", "TestSupport"]),
        .testTarget(name: "SnapshotMQTTTests", dependencies: ["SnapshotMQTT", "TestSupport"]),
        .testTarget(name: "SnapshotAgentTests", dependencies: ["SnapshotAgent", "SnapshotEngine", "SnapshotMQTT", "SnapshotCore", "TestSupport"]),
    ]
)
