/// The MQTT protocol level of a connection.
public enum MQTTProtocolVersion: Sendable {
    case v311
    case v5
}

/// A message the broker publishes for this client when it disappears without a clean
/// disconnect (the "last will").
public struct MQTTWill: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: Int = 1, retain: Bool = true) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// TLS files for `mqtts://` brokers (PEM paths; empty means unused).
public struct MQTTTLS: Sendable, Equatable {
    public var caFile: String
    public var certFile: String
    public var keyFile: String

    public init(caFile: String = "", certFile: String = "", keyFile: String = "") {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// How to reach and present ourselves to the broker.
public struct MQTTOptions: Sendable {
    public var host: String
    public var port: Int
    public var clientID: String
    public var protocolVersion: MQTTProtocolVersion
    public var keepAlive: Int
    public var username: String?
    public var password: String?
    public var tls: MQTTTLS?
    public var will: MQTTWill?
    /// MQTT 5 Session Expiry Interval in seconds; the session (and its QoS 1 backlog) survives
    /// a disconnect for that long. Ignored for 3.1.1 (use `cleanSession: false` there).
    public var sessionExpiry: UInt32
    public var cleanSession: Bool
    /// Back-off between reconnect attempts, doubling from `minimum` to `maximum` seconds.
    public var reconnectDelay: (minimum: Double, maximum: Double)

    public init(
        host: String = "127.0.0.1", port: Int = 1883, clientID: String, protocolVersion: MQTTProtocolVersion = .v5,
        keepAlive: Int = 30, username: String? = nil, password: String? = nil, tls: MQTTTLS? = nil, will: MQTTWill? = nil,
        sessionExpiry: UInt32 = 0, cleanSession: Bool = true, reconnectDelay: (minimum: Double, maximum: Double) = (0.2, 10)
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.keepAlive = keepAlive
        self.username = username
        self.password = password
        self.tls = tls
        self.will = will
        self.sessionExpiry = sessionExpiry
        self.cleanSession = cleanSession
        self.reconnectDelay = reconnectDelay
    }

    /// Parses `mqtt://host:port` or `mqtts://host:port` (default ports 1883 and 8883).
    /// Returns nil for anything else.
    public static func parseBroker(_ url: String) -> (host: String, port: Int, tls: Bool)? {
        let tls: Bool
        let rest: Substring
        if url.hasPrefix("mqtt://") {
            tls = false
            rest = url.dropFirst(7)
        } else if url.hasPrefix("mqtts://") {
            tls = true
            rest = url.dropFirst(8)
        } else {
            return nil
        }
        let hostPort = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        var host = String(hostPort)
        var port = tls ? 8883 : 1883
        if hostPort.hasPrefix("[") {  // [::1]:1883
            guard let close = hostPort.firstIndex(of: "]") else { return nil }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return nil }
                port = p
            } else if !after.isEmpty {
                return nil
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else { return nil }
            port = p
        }
        guard !host.isEmpty else { return nil }
        return (host, port, tls)
    }
}

/// One received message, copied out of libmosquitto's buffers.
public struct MQTTMessage: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int
    public var retain: Bool
    /// MQTT 5 Response Topic and Correlation Data, when the publisher set them.
    public var responseTopic: String?
    public var correlationData: [UInt8]?
    public var userProperties: [MQTTUserProperty]

    public init(topic: String, payload: [UInt8], qos: Int = 0, retain: Bool = false, responseTopic: String? = nil, correlationData: [UInt8]? = nil, userProperties: [MQTTUserProperty] = []) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.userProperties = userProperties
    }

    public var payloadString: String { String(decoding: payload, as: UTF8.self) }
}

public struct MQTTUserProperty: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Connection state changes.
public enum MQTTEvent: Sendable, Equatable {
    /// CONNACK accepted; subscriptions have been renewed.
    case connected
    /// The connection was lost or refused; `reason` is libmosquitto's text.
    case disconnected(code: Int32, reason: String)
}

/// Errors from the MQTT client.
public enum MQTTError: Error, CustomStringConvertible, Sendable {
    case library(operation: String, code: Int32, reason: String)
    case timeout(String)
    case stopped

    public var description: String {
        switch self {
        // libmosquitto's own code adds nothing a user can act on to its text.
        case .library(let op, _, let reason): return "mqtt \(op): \(reason)"
        case .timeout(let what): return "mqtt: timed out \(what)"
        case .stopped: return "mqtt: client stopped"
        }
    }
}
