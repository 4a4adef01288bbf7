#if canImport(Glibc)
import Glibc
#endif
import CMosquitto
import Foundation
import Synchronization

/// libmosquitto's global initialisation, done once.
private let libraryInitialised: Bool = {
    mosquitto_lib_init()
    return true
}()

/// An MQTT 3.1.1/5 client over libmosquitto with an async API.
///
/// The client runs its own network thread (not `mosquitto_loop_start`, whose thread exits
/// for good on some errors): it connects, reconnects with exponential back-off for as long
/// as the client runs, and renews every subscription after each connect. Incoming messages
/// arrive on `messages`, connection changes on `events`. QoS 1 publishes made while
/// disconnected are queued by libmosquitto and sent after the reconnect; `publish` returns
/// when the broker has acknowledged them.
///
/// Thread-safety: every method may be called from any thread or task. libmosquitto calls
/// back on the network thread; the callbacks only copy data out and never call back into
/// the loop (libmosquitto runs them with its own locks held: blocking there, or calling into the same client, can deadlock).
public final class MQTTClient: @unchecked Sendable {
    public let options: MQTTOptions
    public let messages: AsyncStream<MQTTMessage>
    public let events: AsyncStream<MQTTEvent>

    private let handle: OpaquePointer
    private let messageContinuation: AsyncStream<MQTTMessage>.Continuation
    private let eventContinuation: AsyncStream<MQTTEvent>.Continuation

    /// What is known of one outgoing message id. libmosquitto may acknowledge a message
    /// (on the network thread) before `mosquitto_publish_v5` has returned its id to the
    /// publisher, so whichever side comes second finds the other's mark and removes the
    /// slot: no id outlives its message, and an id reused after wrapping starts clean.
    private enum AckSlot {
        /// The broker acknowledged it; its publisher has not looked yet.
        case arrived
        /// A publisher waits for it (`token` tells one wait from a later one on a reused id).
        case waiting(token: UInt64, CheckedContinuation<Void, any Error>)
        /// Nobody waits for it: the acknowledgement is only to be forgotten. A QoS 0 message
        /// still unsent when the connection drops is discarded by libmosquitto and never
        /// acknowledged: such slots go at the disconnect, before their id can be reused.
        case unawaited(qos0: Bool = false)
    }

    private struct State {
        var running = false
        var connected = false
        /// The broker refused the last CONNECT and that was reported: the closed socket that
        /// follows is the same failure, not another one.
        var refused = false
        var subscriptions: [String: Int] = [:]
        var acks: [Int32: AckSlot] = [:]
        var nextToken: UInt64 = 0
        var connectWaiters: [UUID: CheckedContinuation<Void, any Error>] = [:]
        var loopDone: DispatchSemaphore?
    }
    private let state = Mutex(State())

    /// Creates the client; nothing is sent until `start()`.
    public init(options: MQTTOptions) throws {
        _ = libraryInitialised
        self.options = options
        (messages, messageContinuation) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .bufferingNewest(10_000))
        (events, eventContinuation) = AsyncStream.makeStream(of: MQTTEvent.self, bufferingPolicy: .bufferingNewest(100))
        guard let h = mosquitto_new(options.clientID, options.cleanSession, nil) else {
            throw MQTTError.library(operation: "new", code: -1, reason: "cannot create a client (client id \"\(options.clientID)\")")
        }
        handle = h
        mosquitto_threaded_set(h, true)
        // Commands and their answers are small messages: Nagle's algorithm would hold each
        // one back for the peer's delayed ACK (tens of milliseconds per hop).
        mosquitto_int_option(h, MOSQ_OPT_TCP_NODELAY, 1)
        if options.protocolVersion == .v5 {
            mosquitto_int_option(h, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5)
        }
        if let user = options.username, !user.isEmpty {
            try check(mosquitto_username_pw_set(h, user, options.password), "set credentials")
        }
        if let tls = options.tls {
            func opt(_ s: String) -> String? { s.isEmpty ? nil : s }
            try check(mosquitto_tls_set(h, opt(tls.caFile), opt(tls.caFile) == nil ? "/etc/ssl/certs" : nil, opt(tls.certFile), opt(tls.keyFile), nil), "set TLS files")
        }
        if let will = options.will {
            try will.payload.withUnsafeBytes { raw in
                try check(mosquitto_will_set_v5(h, will.topic, Int32(raw.count), raw.baseAddress, Int32(will.qos), will.retain, nil), "set last will")
            }
        }
        mosquitto_user_data_set(h, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_v5_callback_set(h) { _, obj, rc, _, _ in
            guard let obj else { return }
            Unmanaged<MQTTClient>.fromOpaque(obj).takeUnretainedValue().didConnect(rc)
        }
        mosquitto_disconnect_v5_callback_set(h) { _, obj, rc, _ in
            guard let obj else { return }
            Unmanaged<MQTTClient>.fromOpaque(obj).takeUnretainedValue().didDisconnect(rc)
        }
        mosquitto_message_v5_callback_set(h) { _, obj, message, props in
            guard let obj, let message else { return }
            Unmanaged<MQTTClient>.fromOpaque(obj).takeUnretainedValue().didReceive(message.pointee, props)
        }
        mosquitto_publish_v5_callback_set(h) { _, obj, mid, _, _ in
            guard let obj else { return }
            Unmanaged<MQTTClient>.fromOpaque(obj).takeUnretainedValue().didPublish(mid)
        }
    }

    deinit {
        mosquitto_destroy(handle)
        messageContinuation.finish()
        eventContinuation.finish()
    }

    private func check(_ rc: Int32, _ operation: String) throws {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError.library(operation: operation, code: rc, reason: Self.errorText(rc))
        }
    }

    static func errorText(_ rc: Int32) -> String {
        guard let p = mosquitto_strerror(rc) else { return "error \(rc)" }
        return String(cString: p)
    }

    // MARK: network thread

    /// Starts the network thread; it connects and keeps reconnecting until `stop()`.
    public func start() {
        let done = DispatchSemaphore(value: 0)
        let shouldStart = state.withLock { s -> Bool in
            guard !s.running else { return false }
            s.running = true
            s.loopDone = done
            return true
        }
        guard shouldStart else { return }
        let thread = Thread { [self] in
            runLoop()
            done.signal()
        }
        thread.name = "mqtt-network"
        thread.start()
    }

    private var isRunning: Bool { state.withLock { $0.running } }

    private func runLoop() {
        var delay = options.reconnectDelay.minimum
        var socketOpen = false
        while isRunning {
            if !socketOpen {
                var props: OpaquePointer? = nil
                if options.protocolVersion == .v5 && options.sessionExpiry > 0 {
                    mosquitto_property_add_int32(&props, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), options.sessionExpiry)
                }
                let rc = mosquitto_connect_bind_v5(handle, options.host, Int32(options.port), Int32(options.keepAlive), nil, props)
                mosquitto_property_free_all(&props)
                if rc != MOSQ_ERR_SUCCESS.rawValue {
                    eventContinuation.yield(.disconnected(code: rc, reason: Self.errorText(rc)))
                    failConnectWaiters(MQTTError.library(operation: "connect to \(options.host):\(options.port)", code: rc, reason: Self.errorText(rc)))
                    sleepWhileRunning(delay)
                    delay = min(delay * 2, options.reconnectDelay.maximum)
                    continue
                }
                socketOpen = true
            }
            let rc = mosquitto_loop(handle, 100, 1)
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                socketOpen = false
                let (wasConnected, refused) = state.withLock { s -> (Bool, Bool) in
                    defer {
                        Self.disconnected(&s)
                        s.refused = false
                    }
                    return (s.connected, s.refused)
                }
                if wasConnected || (rc != MOSQ_ERR_NO_CONN.rawValue && !refused) {
                    eventContinuation.yield(.disconnected(code: rc, reason: Self.errorText(rc)))
                }
                guard isRunning else { break }
                sleepWhileRunning(delay)
                delay = min(delay * 2, options.reconnectDelay.maximum)
            } else if state.withLock({ $0.connected }) {
                delay = options.reconnectDelay.minimum
            }
        }
    }

    private func sleepWhileRunning(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while isRunning && Date() < end { usleep(20_000) }
    }

    // MARK: callbacks (network thread)

    private func didConnect(_ rc: Int32) {
        guard rc == 0 else {
            // MQTT 5 CONNACK reason codes (0x86 bad user name or password, 0x87 not
            // authorized) have their own texts; 3.1.1 return codes (1-5) theirs.
            let text = options.protocolVersion == .v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc)
            let reason = text.map { String(cString: $0) } ?? "reason code \(rc)"
            state.withLock { $0.refused = true }
            eventContinuation.yield(.disconnected(code: rc, reason: "connection refused: \(reason)"))
            failConnectWaiters(MQTTError.library(operation: "connect", code: rc, reason: "connection refused: \(reason)"))
            return
        }
        let (subscriptions, waiters) = state.withLock { s -> ([String: Int], [CheckedContinuation<Void, any Error>]) in
            s.connected = true
            defer { s.connectWaiters = [:] }
            return (s.subscriptions, Array(s.connectWaiters.values))
        }
        for (filter, qos) in subscriptions {
            mosquitto_subscribe(handle, nil, filter, Int32(qos))
        }
        eventContinuation.yield(.connected)
        for w in waiters { w.resume() }
    }

    private func didDisconnect(_ rc: Int32) {
        state.withLock { Self.disconnected(&$0) }
    }

    /// The connection is gone, and with it every unsent QoS 0 message.
    private static func disconnected(_ s: inout State) {
        s.connected = false
        s.acks = s.acks.filter { if case .unawaited(qos0: true) = $0.value { return false } else { return true } }
    }

    private func didReceive(_ m: mosquitto_message, _ props: OpaquePointer?) {
        let topic = m.topic.map { String(cString: $0) } ?? ""
        let payload: [UInt8] = m.payloadlen > 0 && m.payload != nil
            ? Array(UnsafeRawBufferPointer(start: m.payload, count: Int(m.payloadlen))) : []
        var message = MQTTMessage(topic: topic, payload: payload, qos: Int(m.qos), retain: m.retain)
        if let props {
            var value: UnsafeMutablePointer<CChar>? = nil
            if mosquitto_property_read_string(props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &value, false) != nil, let value {
                message.responseTopic = String(cString: value)
                free(value)
            }
            var data: UnsafeMutableRawPointer? = nil
            var length: UInt16 = 0
            if mosquitto_property_read_binary(props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &data, &length, false) != nil {
                message.correlationData = data.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(length))) } ?? []
                free(data)
            }
            var name: UnsafeMutablePointer<CChar>? = nil
            var pairValue: UnsafeMutablePointer<CChar>? = nil
            var cursor = mosquitto_property_read_string_pair(props, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &pairValue, false)
            while cursor != nil {
                if let name, let pairValue {
                    message.userProperties.append(MQTTUserProperty(name: String(cString: name), value: String(cString: pairValue)))
                }
                free(name)
                free(pairValue)
                name = nil
                pairValue = nil
                cursor = mosquitto_property_read_string_pair(cursor, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &pairValue, true)
            }
        }
        messageContinuation.yield(message)
    }

    private func didPublish(_ mid: Int32) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            switch s.acks[mid] {
            case .waiting(_, let c)?:
                s.acks[mid] = nil
                return c
            case .unawaited?:
                s.acks[mid] = nil
            case .arrived?, nil:
                s.acks[mid] = .arrived
            }
            return nil
        }
        waiter?.resume()
    }

    /// Marks `mid` as not waited for, or forgets it when its acknowledgement already came.
    private func forget(_ mid: Int32, qos: Int) {
        state.withLock { s in
            if case .arrived? = s.acks[mid] { s.acks[mid] = nil } else { s.acks[mid] = .unawaited(qos0: qos == 0) }
        }
    }

    /// Ends the wait `token` on `mid` with `error`, if that wait is still going on; the
    /// acknowledgement, when it comes, is then forgotten.
    private func abandon(_ mid: Int32, token: UInt64, _ error: any Error) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            guard case .waiting(let t, let c)? = s.acks[mid], t == token else { return nil }
            s.acks[mid] = .unawaited()
            return c
        }
        waiter?.resume(throwing: error)
    }

    private func failConnectWaiters(_ error: any Error) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            defer { s.connectWaiters = [:] }
            return Array(s.connectWaiters.values)
        }
        for w in waiters { w.resume(throwing: error) }
    }

    // MARK: API

    /// Outgoing message ids whose acknowledgement is still awaited or not yet matched to
    /// its publisher: zero once everything sent has been acknowledged.
    public var pendingAcknowledgements: Int { state.withLock { $0.acks.count } }

    /// True while a CONNACK-accepted connection is up.
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// Waits until connected; throws on a refused or failed attempt, after `timeout`, or
    /// when the calling task is cancelled.
    public func waitUntilConnected(timeout: Double = 10) async throws {
        if isConnected { return }
        let id = UUID()
        let end: @Sendable (any Error) -> Void = { [self] error in
            let w = state.withLock { $0.connectWaiters.removeValue(forKey: id) }
            w?.resume(throwing: error)
        }
        let timer = Task {
            try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
            end(MQTTError.timeout("connecting to \(options.host):\(options.port)"))
        }
        defer { timer.cancel() }
        try await suspend(onCancel: { end(CancellationError()) }) { c in
            state.withLock { s -> Result<Void, any Error>? in
                if s.connected { return .success(()) }
                if Task.isCancelled { return .failure(CancellationError()) }
                s.connectWaiters[id] = c
                return nil
            }
        }
    }

    /// Suspends until the continuation is resumed: `park` either settles at once (returns
    /// the outcome) or stores the continuation for a callback to resume (returns nil).
    /// `onCancel` runs when the task is cancelled meanwhile and must end the wait.
    private func suspend(onCancel: @escaping @Sendable () -> Void, _ park: (CheckedContinuation<Void, any Error>) -> Result<Void, any Error>?) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { c in
                if let settled = park(c) { c.resume(with: settled) }
            }
        } onCancel: {
            onCancel()
        }
    }

    /// Subscribes now (when connected) and after every reconnect.
    public func subscribe(_ filter: String, qos: Int = 1) {
        let connected = state.withLock { s -> Bool in
            s.subscriptions[filter] = qos
            return s.connected
        }
        if connected { mosquitto_subscribe(handle, nil, filter, Int32(qos)) }
    }

    public func unsubscribe(_ filter: String) {
        state.withLock { _ = $0.subscriptions.removeValue(forKey: filter) }
        mosquitto_unsubscribe(handle, nil, filter)
    }

    /// Publishes a message. For QoS 1 and 2 it returns once the broker acknowledged it
    /// (possibly after a reconnect); QoS 0 returns once queued. The wait ends with
    /// `MQTTError.timeout` after `timeout` seconds (nil: no limit), with `CancellationError`
    /// when the calling task is cancelled, and with `MQTTError.stopped` on `stop()`; the
    /// message itself stays queued in libmosquitto either way.
    public func publish(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false, responseTopic: String? = nil, correlationData: [UInt8]? = nil, userProperties: [MQTTUserProperty] = [], timeout: Double? = nil) async throws {
        let mid = try send(topic, payload, qos: qos, retain: retain, responseTopic: responseTopic, correlationData: correlationData, userProperties: userProperties)
        guard qos > 0 else {
            forget(mid, qos: 0)
            return
        }
        let token = state.withLock { s -> UInt64 in
            s.nextToken += 1
            return s.nextToken
        }
        let timer = timeout.map { seconds in
            Task { [weak self] in
                try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                self?.abandon(mid, token: token, MQTTError.timeout("publishing to \(topic)"))
            }
        }
        defer { timer?.cancel() }
        try await suspend(onCancel: { self.abandon(mid, token: token, CancellationError()) }) { c in
            state.withLock { s -> Result<Void, any Error>? in
                if case .arrived? = s.acks[mid] {
                    s.acks[mid] = nil
                    return .success(())
                }
                if !s.running { s.acks[mid] = .unawaited(); return .failure(MQTTError.stopped) }
                if Task.isCancelled { s.acks[mid] = .unawaited(); return .failure(CancellationError()) }
                s.acks[mid] = .waiting(token: token, c)
                return nil
            }
        }
    }

    /// Queues a message without waiting for the acknowledgement; returns the message id.
    @discardableResult
    public func enqueue(_ topic: String, _ payload: [UInt8], qos: Int = 1, retain: Bool = false, responseTopic: String? = nil, correlationData: [UInt8]? = nil, userProperties: [MQTTUserProperty] = []) throws -> Int32 {
        let mid = try send(topic, payload, qos: qos, retain: retain, responseTopic: responseTopic, correlationData: correlationData, userProperties: userProperties)
        forget(mid, qos: qos)
        return mid
    }

    /// Hands a message to libmosquitto; the caller must `forget` or wait for the id.
    private func send(_ topic: String, _ payload: [UInt8], qos: Int, retain: Bool, responseTopic: String?, correlationData: [UInt8]?, userProperties: [MQTTUserProperty]) throws -> Int32 {
        var props: OpaquePointer? = nil
        defer { mosquitto_property_free_all(&props) }
        if options.protocolVersion == .v5 {
            if let responseTopic {
                mosquitto_property_add_string(&props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), responseTopic)
            }
            if let correlationData {
                correlationData.withUnsafeBytes { raw in
                    _ = mosquitto_property_add_binary(&props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), raw.baseAddress, UInt16(min(raw.count, 65535)))
                }
            }
            for p in userProperties {
                mosquitto_property_add_string_pair(&props, Int32(MQTT_PROP_USER_PROPERTY.rawValue), p.name, p.value)
            }
        }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes { raw in
            mosquitto_publish_v5(handle, &mid, topic, Int32(raw.count), raw.baseAddress, Int32(qos), retain, props)
        }
        // Not connected: libmosquitto keeps QoS>0 messages queued and sends them on reconnect.
        if rc != MOSQ_ERR_SUCCESS.rawValue && !(rc == MOSQ_ERR_NO_CONN.rawValue && qos > 0) {
            throw MQTTError.library(operation: "publish to \(topic)", code: rc, reason: Self.errorText(rc))
        }
        return mid
    }

    /// Stops the network thread. With `disconnect`, a clean DISCONNECT is sent first (which
    /// discards the last will: publish an explicit "offline" before calling this). Every
    /// wait on the client ends with `MQTTError.stopped`. Returns within about `timeout`
    /// seconds even when the thread is stuck in a blocking connect to a host that does not
    /// answer: the thread then ends by itself when that connect gives up (it holds the
    /// client until it does), and nothing more is sent.
    public func stop(disconnect: Bool = true, timeout: Double = 3) {
        let (done, pending) = state.withLock { s -> (DispatchSemaphore?, [CheckedContinuation<Void, any Error>]) in
            guard s.running else { return (nil, []) }
            s.running = false
            var waiters = Array(s.connectWaiters.values)
            for case .waiting(_, let c) in s.acks.values { waiters.append(c) }
            s.acks = [:]
            s.connectWaiters = [:]
            return (s.loopDone, waiters)
        }
        for p in pending { p.resume(throwing: MQTTError.stopped) }
        guard let done else { return }
        if disconnect { mosquitto_disconnect_v5(handle, 0, nil) }
        _ = done.wait(timeout: .now() + max(0, timeout))
        state.withLock { $0.connected = false }
    }
}
