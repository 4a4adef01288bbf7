#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// Options of `test-recovery`.
public struct TestRecoveryOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String = ""
    /// Always true in effect: the scratch copy never touches live data. Accepted for the
    /// seed's command lines.
    public var isolated: Bool = true
    /// Also time each phase.
    public var benchmark: Bool = false
    /// Restore into the config's `environments:` entry of this name (and run its
    /// health check) instead of a scratch directory that is deleted afterwards.
    public var environment: String?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case snapshot, isolated, benchmark, environment }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot) ?? ""
        isolated = try c.decodeIfPresent(Bool.self, forKey: .isolated) ?? true
        benchmark = try c.decodeIfPresent(Bool.self, forKey: .benchmark) ?? false
        environment = try c.decodeIfPresent(String.self, forKey: .environment)
    }

    public func validate() throws {
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
    }
}

/// `test-recovery --json`: `{"ok","snapshot_id","files","bytes","seconds","mb_per_s"}` and more.
public struct TestRecoveryReport: Codable, Sendable, Equatable {
    public var ok: Bool
    public var snapshotID: String
    public var files: Int
    public var bytes: UInt64
    public var seconds: Double
    public var mbPerS: Double
    public var errors: [String]
    /// With `benchmark`: seconds per phase (check, restore, verify, health_check, cleanup).
    public var phases: [String: Double]?
    /// With `environment`: its name, where the copy stays, and its health check's outcome
    /// ("ok", or the failure; nil when it has none).
    public var environment: String?
    public var target: String?
    public var health: String?

    enum CodingKeys: String, CodingKey {
        case ok, files, bytes, seconds, errors, phases, environment, target, health
        case snapshotID = "snapshot_id"
        case mbPerS = "mb_per_s"
    }
}

/// Options of `recover`.
public struct RecoverOptions: OperationOptions, Codable, Equatable {
    public static let modes = ["full", "step-by-step", "minimal"]
    public var mode: String = ""
    public var snapshot: String = ""
    /// `--validate`: run the health_check hook at the end and report it.
    public var runHealthCheck: Bool = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mode, snapshot
        case runHealthCheck = "validate"
    }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.decodeIfPresent(String.self, forKey: .mode) ?? ""
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot) ?? ""
        runHealthCheck = try c.decodeIfPresent(Bool.self, forKey: .runHealthCheck) ?? false
    }

    public func validate() throws {
        guard Self.modes.contains(mode) else { throw EngineError.usage("mode must be one of \(Self.modes.joined(separator: ", ")), not \"\(mode)\"") }
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
    }
}

/// One step of a recovery.
public struct RecoverStep: Codable, Sendable, Equatable {
    public var component: String
    public var action: String
    public var ok: Bool
    public var health: String?
    public var error: String?
}

/// `recover --json`.
public struct RecoverReport: Codable, Sendable, Equatable {
    public var ok: Bool
    public var snapshotID: String
    public var mode: String
    public var preRestore: String?
    public var steps: [RecoverStep]
    /// The final `health_check` (with `validate`): "ok", or its failure; nil when not run.
    public var health: String?
    public var seconds: Double
    /// What was left as it was on purpose (files this run uses), and a restored config that
    /// differs from the one the run kept using.
    public var notes: [String] = []

    enum CodingKeys: String, CodingKey {
        case ok, mode, steps, health, seconds, notes
        case snapshotID = "snapshot_id"
        case preRestore = "pre_restore"
    }
}

extension SnapshotService {
    /// Restores a snapshot into a scratch directory, checks every file against the snapshot
    /// (and every component checksum), reports the rate, and deletes the scratch copy. Live
    /// data is never touched and no hook runs.
    public func testRecovery(_ options: TestRecoveryOptions, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) throws -> TestRecoveryReport {
        try options.validate()
        let (repository, lock) = try open(.shared, purpose: "test-recovery")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        let manifest = try catalog.readManifest(record)
        var phases: [String: Double] = [:]
        func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
            let t0 = Date()
            defer { phases[name] = ((Date().timeIntervalSince(t0)) * 1000).rounded() / 1000 }
            return try body()
        }
        let environment = try options.environment.map { name in
            guard let e = config.environments[name] else {
                let known = config.environments.keys.sorted()
                throw EngineError.usage("unknown environment \"\(name)\" (configured under environments: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
            return (name: name, settings: e)
        }
        let started = Date()
        let check = try timed("check") { try Verifier(repository: repository).verifyOrFail([record], readData: false) }
        var errors = check.snapshots.flatMap(\.errors)
        let scratch: String
        if let environment {
            scratch = environment.settings.root
            try prepareEnvironment(scratch, name: environment.name, snapshot: record)
        } else {
            let tmp = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
            scratch = tmp + "/snapshot-test-recovery-\(record.id)-\(getpid())"
            try POSIX.removeTree(scratch)
        }
        defer { if environment == nil { try? POSIX.removeTree(scratch) } }
        var result = RestoreResult(files: 0, bytes: 0, seconds: 0, mismatches: [])
        if errors.isEmpty {
            let restorer = Restorer(repository: repository, progress: progress, cancellation: cancellation)
            do {
                result = try timed("restore") { try restorer.restore(record, manifest: manifest, components: [], target: scratch, verify: false) }
                let mismatches = try timed("verify") { try restorer.verifyRestored(manifest: manifest, components: [], target: scratch) }
                errors += mismatches.map { "restored file differs from the snapshot: \($0)" }
            } catch EngineError.cancelled {
                throw EngineError.cancelled
            } catch {
                // Damaged data is what a recovery test is for: a finding, not a crash.
                errors.append("\(error)")
            }
        }
        var health: String?
        if let environment {
            if errors.isEmpty && !environment.settings.healthCheck.isEmpty {
                health = timed("health_check") {
                    do {
                        try Hooks.run("health_check", environment.settings.healthCheck, directory: config.root, environment: ["SNAPSHOT_RECOVERY_ROOT": scratch])
                        return "ok"
                    } catch {
                        return "\(error)"
                    }
                }
                if let health, health != "ok" { errors.append("environment \(environment.name): \(health)") }
            }
        } else {
            timed("cleanup") { try? POSIX.removeTree(scratch) }
        }
        let seconds = Date().timeIntervalSince(started)
        var report = TestRecoveryReport(
            ok: errors.isEmpty, snapshotID: record.id, files: result.files, bytes: result.bytes,
            seconds: (seconds * 1000).rounded() / 1000,
            mbPerS: seconds > 0 ? (Double(result.bytes) / 1_048_576 / seconds * 10).rounded() / 10 : 0,
            errors: errors, phases: options.benchmark ? phases : nil)
        report.environment = environment?.name
        report.target = environment.map { _ in scratch }
        report.health = health
        recordRecovery(report)
        return report
    }

    /// Empties an environment's root for a new copy. Only a directory that is missing, empty,
    /// or holds a copy made here before (its marker file says so) is emptied: a root that
    /// points at live data by mistake is refused, never wiped.
    func prepareEnvironment(_ root: String, name: String, snapshot: SnapshotRecord) throws {
        let marker = ".snapshot-test-recovery"
        let live = [config.root, repositoryPath]
        for l in live where l == root || l.hasPrefix(root + "/") {
            throw EngineError.unsafePath("environments.\(name).root \(root) contains \(l == repositoryPath ? "the repository" : "the config's root")")
        }
        try POSIX.makeDirectories(root)
        let entries = try POSIX.listDirectory(root)
        guard entries.isEmpty || entries.contains(marker) else {
            throw EngineError.unsafePath("environments.\(name).root \(root) is not empty and holds no earlier test-recovery copy (\(marker)); empty it or choose another root")
        }
        for e in entries where e != marker { try POSIX.removeTree(root + "/" + e) }
        try POSIX.writeFileAtomically(root + "/" + marker, Array("snapshot \(snapshot.type)/\(snapshot.id), restored \(Timestamp.now().iso8601)\n".utf8), mode: 0o644)
    }

    /// Rank of a component in dependency order: configs, storage, models, then the mesh's
    /// retained state, then the rest.
    static func recoveryRank(_ name: String, kind: ComponentKind) -> Int {
        switch (name, kind) {
        case ("configs", _): return 0
        case ("storage", _), (_, .qdrant): return 1
        case ("models", _): return 2
        case (_, .files): return 3
        case (_, .mqtt): return 4
        default: return 5
        }
    }

    /// Disaster recovery (README.md, `recover`): `full` restores every component
    /// in dependency order in one in-place restore; `step-by-step` restores one component at a
    /// time (each between the hooks), health-checks after each and stops at the first failure;
    /// `minimal` restores only configs and storage. `validate` runs `health_check` at the end.
    public func recover(_ options: RecoverOptions, configuredOnly: Bool = false, progress: WorkProgress = WorkProgress(), cancellation: CancellationFlag = CancellationFlag()) async throws -> RecoverReport {
        try options.validate()
        let started = Date()
        let (repository, lock) = try open(.exclusive, purpose: "recover")
        defer { lock.release() }
        let record = try catalog.resolve(options.snapshot)
        let manifest = try catalog.readManifest(record)
        // What recovery puts back (files, retained messages, Qdrant), in dependency order.
        var names = manifest.components.filter { [.files, .mqtt, .qdrant].contains($0.value.kind) }
            .map { (rank: Self.recoveryRank($0.key, kind: $0.value.kind), name: $0.key) }
            .sorted { ($0.rank, $0.name) < ($1.rank, $1.name) }
            .map(\.name)
        if options.mode == "minimal" { names = names.filter { $0 == "configs" || $0 == "storage" } }
        guard !names.isEmpty else {
            throw EngineError.usage("snapshot \(record.id) has no component that \(options.mode) recovery restores")
        }
        let restorer = InPlaceRestorer(service: self)
        var report = RecoverReport(ok: true, snapshotID: record.id, mode: options.mode, preRestore: nil, steps: [], health: nil, seconds: 0)
        let healthCheck = config.hooks["health_check"] ?? ""
        if options.mode == "step-by-step" {
            report.preRestore = try await restorer.preRestoreSnapshot(record, targets: try restorer.targets(manifest, components: names, configuredOnly: configuredOnly), repository: repository, cancellation: cancellation)
            for name in names {
                var step = RecoverStep(component: name, action: manifest.components[name]?.kind == .mqtt ? "republished" : "swapped", ok: true)
                do {
                    let summary = try await restorer.restore(record, manifest: manifest, components: [name], noBackup: true, configuredOnly: configuredOnly, repository: repository, progress: progress, cancellation: cancellation)
                    report.notes += summary.notes
                    if !healthCheck.isEmpty {
                        try await Hooks.perform("health_check", healthCheck)
                        step.health = "ok"
                    }
                } catch {
                    step.ok = false
                    step.error = "\(error)"
                    report.steps.append(step)
                    report.ok = false
                    break
                }
                report.steps.append(step)
            }
        } else {
            let summary = try await restorer.restore(record, manifest: manifest, components: names, noBackup: false, configuredOnly: configuredOnly, repository: repository, progress: progress, cancellation: cancellation)
            report.preRestore = summary.preRestore
            report.notes = summary.notes
            report.steps = summary.components.map { RecoverStep(component: $0.component, action: $0.action, ok: true) }
        }
        if options.runHealthCheck && report.ok {
            if healthCheck.isEmpty {
                report.health = "no health_check hook configured"
            } else {
                do {
                    try await Hooks.perform("health_check", healthCheck)
                    report.health = "ok"
                } catch {
                    report.health = "\(error)"
                    report.ok = false
                }
            }
        }
        report.seconds = (Date().timeIntervalSince(started) * 1000).rounded() / 1000
        return report
    }
}
