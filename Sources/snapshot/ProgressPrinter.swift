#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotEngine

/// Shows a `Progress` on stderr: a redrawn bar on a terminal (after the first second, so
/// quick commands stay quiet) or, with `--json`, a JSON line at most twice a second.
/// Nothing is printed when stderr is not a terminal and `--json` is off.
final class ProgressPrinter: @unchecked Sendable {
    private let progress: WorkProgress
    private let json: Bool
    private let enabled: Bool
    private let lock = NSLock()
    private var running = false
    private var thread: Thread?
    private var drewBar = false
    private let started = Date()

    init(progress: WorkProgress, json: Bool, enabled: Bool) {
        self.progress = progress
        self.json = json
        self.enabled = enabled && (json || isatty(2) == 1)
    }

    func start() {
        guard enabled else { return }
        lock.lock()
        running = true
        lock.unlock()
        let t = Thread { [self] in
            var last = Date.distantPast
            while self.isRunning {
                usleep(100_000)
                let now = Date()
                if now.timeIntervalSince(started) < 1 { continue }
                if json {
                    if now.timeIntervalSince(last) >= 0.5 {
                        last = now
                        emitJSON()
                    }
                } else {
                    drawBar()
                }
            }
        }
        thread = t
        t.start()
    }

    private var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return running
    }

    func stop() {
        lock.lock()
        let was = running
        running = false
        lock.unlock()
        guard was else { return }
        while thread?.isFinished == false { usleep(10_000) }
        if drewBar && !json {
            drawBar()
            FileHandle.standardError.write(Data("\n".utf8))
        }
    }

    private func emitJSON() {
        let r = progress.reading()
        let elapsed = Date().timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(r.bytesDone) / elapsed : 0
        let line = "{\"phase\":\"\(r.phase)\",\"percent\":\(String(format: "%.1f", r.percent)),\"bytes_done\":\(r.bytesDone),\"bytes_total\":\(r.bytesTotal),\"files_done\":\(r.filesDone),\"files_total\":\(r.filesTotal),\"rate_bps\":\(Int(rate))}\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    private func drawBar() {
        drewBar = true
        let r = progress.reading()
        let width = 30
        let filled = Int(r.percent / 100 * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let elapsed = Date().timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(r.bytesDone) / elapsed : 0
        let percent = String(format: "%5.1f%%", r.percent)
        let text = "\r[\(bar)] \(percent)  \(formatBytes(UInt64(r.bytesDone))) / \(formatBytes(UInt64(r.bytesTotal)))  "
            + "\(r.filesDone)/\(r.filesTotal) files  \(formatBytes(UInt64(rate)))/s  \(r.phase)\u{1B}[K"
        FileHandle.standardError.write(Data(text.utf8))
    }
}
